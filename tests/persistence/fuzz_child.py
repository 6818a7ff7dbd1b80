"""The processes ``test_crash_fuzz.py`` kills: a graph flow with a retry scope, run to a kill point.

The parent starts this module once per database as a *fork server*::

    python -m tests.persistence.fuzz_child

It imports flowkit, SQLAlchemy and the database drivers once, then reads one
JSON command per line on stdin and runs each in a fresh process forked for it
(so a few dozen kills cost a few dozen forks, not a few dozen interpreter
start-ups).  The fork server itself never opens a database connection or
starts a thread, so every forked run starts clean.  A command says which
database, which flow detail (none: load a new flow with ``load_from_factory``;
a uuid: resume it with ``load_from_detail``), which engine, and where to die:

- ``["after", k]``: ``os._exit`` right after the k-th durable write of this run
  returned (the k-th flush that committed something);
- ``["before", k]``: ``os._exit`` when the k-th flush with something to write
  starts, so nothing buffered since the (k-1)-th write is durable;
- ``["events", n]``: print a line per atom state change; the parent sends
  SIGKILL when it has read the n-th one, while this run carries on;
- ``null``: run to the end.

Each forked run prints, one line per ``os.write`` so the lines stay whole on
the shared pipe: ``pid P`` first, ``flow-detail UUID`` once the flow detail is
durable, ``e N`` per atom state change (``events`` only), ``locked`` when
another engine still holds the flow's lock (a killed PostgreSQL session takes
the server a moment to drop), ``finished STATE WRITES EVENTS`` at the end.
The fork server then prints ``exit P CODE`` (CODE as ``subprocess`` reports
it: ``-9`` for SIGKILL).

Every ``execute`` and ``revert`` appends ``execute|revert NAME LABEL`` to the
journal (one ``O_APPEND`` write, done before going on), where LABEL is the attempt of
the retry scope for the scope's atoms and ``-`` for the others, so the parent
can tell a re-run of the same attempt from the next attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import traceback
from typing import Any

from flowkit.engines import load_from_detail, load_from_factory
from flowkit.exceptions import FlowDetailLocked, WrappedFailure
from flowkit.factories import flow_factory
from flowkit.flow import Flow
from flowkit.patterns import graph_flow
from flowkit.persistence._sql.connection import SQLAlchemyConnection
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.retry import Times
from flowkit.task import Task

#: The exit status of a run that died at its ``after``/``before`` kill point.
CRASH_EXIT = 75

#: The attempt of the retry scope on which ``flaky`` stops failing.
GOOD_ATTEMPT = 3

#: The variants of the flow: factory arguments, and how the flow ends.
VARIANTS: dict[str, dict[str, Any]] = {
    # fails on attempts 1 and 2 (RETRY, the scope is reverted twice), then succeeds
    "retried": {"attempts": 3, "revert_all": False},
    # fails on both attempts, then the controller says REVERT_ALL: everything is reverted
    "reverted": {"attempts": 2, "revert_all": True},
}

RETRY_NAME = "attempts"

#: Each task and what it requires (results are provided under the task's own name).
DEPS: dict[str, tuple[str, ...]] = {
    "src": ("seed",),
    "b1": ("src",),
    "b2": ("src",),
    "b3": ("src",),
    "b4": ("src",),
    "c1": ("b1", "b2"),
    "c2": ("b3", "b4"),
    "join": ("c1", "c2"),
    # the retry scope: the controller provides "attempt"
    "s1": ("join", "attempt"),
    "s2": ("s1", "attempt"),
    "s3": ("s1", "attempt"),
    "flaky": ("s2", "s3", "attempt"),
    # after the scope
    "t1": ("flaky",),
    "t2": ("flaky", "b1"),
    "end": ("t1", "t2", "c2"),
}

#: The atoms inside the retry controller's scope (the controller excluded).
SCOPE = frozenset(["s1", "s2", "s3", "flaky"])


class FuzzFailure(Exception):
    """What ``flaky`` raises before the good attempt."""


# -- the journal ------------------------------------------------------------------------


def read_journal(path: str) -> list[tuple[str, str, str]]:
    """Every ``(action, atom, label)`` written so far."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [tuple(line.split()) for line in handle if line.strip()]  # type: ignore[misc]
    except FileNotFoundError:
        return []


def _journal(path: str, action: str, name: str, label: str) -> None:
    # One write in append mode: once write() returns the line is in the kernel,
    # so it survives the os._exit or SIGKILL that may follow at once.  No fsync:
    # the test kills processes, not the machine, and an fsync per line (~5 ms
    # here) would cost more than the whole flow.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("%s %s %s\n" % (action, name, label)).encode())
    finally:
        os.close(fd)


# -- the flow ---------------------------------------------------------------------------


class Work(Task):
    """Journal the execution; return a value that depends on the name, the attempt and every input."""

    def _label(self, values: dict[str, Any]) -> str:
        return str(values.get("attempt", "?")) if self.name in SCOPE else "-"

    def execute(self, journal: str, **inputs: Any) -> str:
        label = self._label(inputs)
        _journal(journal, "execute", self.name, label)
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
        return "%s@%s:%s" % (self.name, label, digest)

    def revert(self, journal: str, **kwargs: Any) -> None:
        _journal(journal, "revert", self.name, self._label(kwargs))


class Flaky(Work):
    """Fail until the retry controller's attempt reaches GOOD_ATTEMPT."""

    def execute(self, journal: str, **inputs: Any) -> str:
        result = super().execute(journal, **inputs)
        if inputs["attempt"] < GOOD_ATTEMPT:
            raise FuzzFailure("flaky fails on attempt %d" % (inputs["attempt"],))
        return result


def _task(name: str, journal: str) -> Task:
    cls = Flaky if name == "flaky" else Work
    return cls(name=name, provides=name, requires=list(DEPS[name]), inject={"journal": journal})


@flow_factory
def make_flow(journal: str, attempts: int, revert_all: bool) -> Flow:
    """The fuzzed flow: fan-out, fan-in, and a retry scope whose ``flaky`` fails at first.

    ``src`` fans out to ``b1..b4``, ``c1``/``c2`` join pairs of them, ``join``
    joins those; the scope (controller ``attempts``, a :class:`Times`) runs
    ``s1``, fans out to ``s2``/``s3`` and joins them in ``flaky``; ``t1``/``t2``
    follow the scope and ``end`` joins them with ``c2``.  Every task journals
    to ``journal``; the flow needs ``seed`` in the store.
    """
    scope = graph_flow.Flow(
        "scope", retry=Times(attempts, name=RETRY_NAME, provides="attempt", revert_all=revert_all)
    ).add(*[_task(name, journal) for name in DEPS if name in SCOPE])
    outer = [_task(name, journal) for name in DEPS if name not in SCOPE]
    return graph_flow.Flow("fuzz").add(*outer, scope)


# -- dying at a write ---------------------------------------------------------------------


class _Plan:
    """Where this run dies; counts durable writes and atom state changes."""

    def __init__(self, kill: list[Any] | None) -> None:
        self.kind: str | None = kill[0] if kill else None
        self.at = int(kill[1]) if kill else 0
        self.writes = 0
        self.events = 0
        self.armed = False  # counting starts once the flow detail is durable
        self.lock = threading.Lock()

    def flushing(self) -> None:
        if not self.armed:
            return
        with self.lock:
            if self.kind == "before" and self.writes + 1 == self.at:
                os._exit(CRASH_EXIT)

    def flushed(self) -> None:
        if not self.armed:
            return
        with self.lock:
            self.writes += 1
            if self.kind == "after" and self.writes == self.at:
                os._exit(CRASH_EXIT)

    def on_event(self, state: Any, details: dict[str, Any]) -> None:
        with self.lock:
            self.events += 1
            if self.kind == "events":
                _say("e %d" % (self.events,))


_plan = _Plan(None)


class _DyingConnection(SQLAlchemyConnection):
    """A connection whose flushes may be the last thing the process does."""

    def flush(self) -> None:
        if not self.pending:
            super().flush()
            return
        _plan.flushing()
        super().flush()
        _plan.flushed()


class DyingBackend(SQLAlchemyBackend):
    """The SQL backend, with connections that die at the planned write."""

    def get_connection(self) -> SQLAlchemyConnection:
        super().get_connection()  # refuses a closed backend
        return _DyingConnection(self)


# -- one run -------------------------------------------------------------------------------


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


_backends: dict[str, DyingBackend] = {}


def _backend(conf: dict[str, Any]) -> DyingBackend:
    """The backend for ``conf``, built once by the fork server (it connects only when used).

    The parent created the schema; the runs never migrate it.
    """
    key = json.dumps(conf, sort_keys=True)
    if key not in _backends:
        _backends[key] = DyingBackend(
            conf["connection"], table_prefix=conf.get("table_prefix", "flowkit_"), create_schema=False
        )
    return _backends[key]


def run(command: dict[str, Any]) -> int:
    """Run (or resume) the flow as ``command`` says; see the module docstring."""
    global _plan
    _say("pid %d" % (os.getpid(),))
    _plan = _Plan(command.get("kill"))
    backend = _backend(command["backend"])
    options = dict(command["engine"])  # load()'s keyword options: engine, executor, max_workers
    if command.get("flow_detail") is None:
        engine = load_from_factory(
            make_flow,
            factory_kwargs={"journal": command["journal"], **VARIANTS[command["variant"]]},
            store={"seed": "fuzz"},
            backend=backend,
            **options,
        )
    else:
        with backend.get_connection() as conn:
            detail = conn.get_flow_details(command["flow_detail"])
        engine = load_from_detail(detail, backend=backend, **options)
    engine.storage.connection.flush()
    _say("flow-detail %s" % (engine.flow_detail.uuid,))
    _plan.armed = True
    engine.atom_notifier.register("*", _plan.on_event)
    try:
        engine.run()
    except FlowDetailLocked:
        _say("locked")
        backend.close()
        return 0
    except (FuzzFailure, WrappedFailure):
        pass  # the "reverted" variant re-raises flaky's failure, as an uninterrupted run does
    state = engine.storage.get_flow_state()
    _say("finished %s %d %d" % (state, _plan.writes, _plan.events))
    backend.close()
    return 0


def serve() -> None:
    """Fork a run per command read from stdin; report each run's exit status."""
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        command = json.loads(line)
        _backend(command["backend"])  # before the fork: each run inherits it, unconnected
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run(command)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        _say("exit %d %d" % (pid, os.waitstatus_to_exitcode(status)))


if __name__ == "__main__":
    # Serve from the importable copy of this module, not ``__main__``: the
    # factory must be recorded as tests.persistence.fuzz_child:make_flow.
    from tests.persistence import fuzz_child

    fuzz_child.serve()
