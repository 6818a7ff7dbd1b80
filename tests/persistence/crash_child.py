"""The process that crashes: run a flow against a database and die at a chosen point.

``test_crash_resume.py`` runs this module in a child process::

    python -m tests.persistence.crash_child --backend CONF_JSON --journal PATH \\
        --scenario linear --crash during:b [--engine-options JSON]

(``CONF_JSON`` is what ``flowkit.persistence.backends.fetch`` takes, e.g.
``{"connection": "sqlite:///crash.db"}``.)

It loads the scenario's flow with ``load_from_factory`` (the parent imports this module,
which registers ``make_flow``, so it can rebuild the flow with ``load_from_detail``),
prints ``flow-detail <uuid>``, and runs it. The crash is deterministic: the task itself
(or an atom-state callback in the engine) calls ``os._exit(CRASH_EXIT)`` when it reaches
the chosen point, or, for ``sigkill``, prints ``ready`` and blocks until the parent kills
it. A child that reaches the end of the flow exits 0, which the parent treats as "the
crash point was never reached".

Crash points (``WHEN:ATOM`` or ``WHEN:ATOM@N`` for the N-th time in this process):

- ``running``: when the engine reports the atom RUNNING (its record may not be flushed yet)
- ``start``: first thing in ``execute``, before the journal line
- ``during``: in ``execute``, after the journal line
- ``sigkill``: in ``execute``, after the journal line; the parent sends SIGKILL
- ``success``: when the engine reports the atom SUCCESS (result saved, maybe not flushed)
- ``revert``: in ``revert``, after the journal line
- ``reverted``: when the engine reports the atom REVERTED

Every ``execute`` and ``revert`` appends ``execute NAME`` / ``revert NAME`` to the journal
file (one append-mode write, before going on), in the child and, after the resume, in the
parent, so the parent can count what ran before and after the crash.

In the distributed mode the tasks run on Dask workers, not in the child, so a crash point
inside a task (``start``, ``during``, ``sigkill``, ``revert``) cannot kill the child by
exiting.  There the child *arms* the crash instead: it writes ``JOURNAL.crash`` (the
crash point and its own pid), and the task that reaches that point on a worker claims the
file (an atomic rename, so it fires once), SIGKILLs the child, waits until the child is
gone and stops without journaling anything more.  The N-th occurrence is counted from
the journal, since a worker process outlives the flow.  The in-engine points
(``running``, ``success``, ``reverted``) fire in the child as in every other mode.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import threading
from typing import Any

from flowkit import states
from flowkit.engines import load_from_factory
from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow, unordered_flow
from flowkit.persistence.backends import fetch
from flowkit.retry import Times
from flowkit.task import Task
from tests.support import wait_until

#: The exit status of a child that crashed where it was told to.
CRASH_EXIT = 73

#: Crash points inside execute()/revert(): on a Dask worker these are armed, not hit in-process.
IN_TASK_CRASHES = ("start", "during", "sigkill", "revert")

SCENARIOS = ("linear", "unordered", "revert", "retry")

# Set only by main(), i.e. only in the child: the parent imports this module to
# rebuild the flow and must never crash.
_crash: tuple[str, str, int] | None = None
_seen: collections.Counter[tuple[str, str]] = collections.Counter()
_seen_lock = threading.Lock()


class CrashTestError(Exception):
    """What the scenarios' failing tasks raise."""


# -- the journal and the crash points ----------------------------------------------------


def read_journal(path: str) -> list[tuple[str, str]]:
    """Every ``(action, atom)`` line written so far."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [tuple(line.split()) for line in handle if line.strip()]  # type: ignore[misc]
    except FileNotFoundError:
        return []


def _write_journal(path: str, action: str, name: str) -> None:
    # One write per line in append mode: once write() returns the line is in the
    # kernel, so it survives the os._exit / SIGKILL that may follow immediately.  No
    # fsync: the tests kill processes, not the machine (as in fuzz_child).
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("%s %s\n" % (action, name)).encode())
    finally:
        os.close(fd)


def _hit(when: str, name: str) -> bool:
    """Whether the configured crash point is ``when`` for ``name`` (counting occurrences)."""
    if _crash is None:
        return False
    crash_when, crash_atom, nth = _crash
    if crash_atom != name or crash_when != when:
        return False
    with _seen_lock:
        _seen[(when, name)] += 1
        return _seen[(when, name)] == nth


def _die(when: str, name: str) -> None:
    if when == "sigkill":
        # Tell the parent where we are, then wait for the SIGKILL.
        sys.stdout.write("ready %s\n" % (name,))
        sys.stdout.flush()
        sys.stdin.read()
    os._exit(CRASH_EXIT)


class EngineKilled(Exception):
    """Raised on a worker by the task that killed the engine process, so it journals nothing more."""


def _spec_path(journal: str) -> str:
    return journal + ".crash"


def arm_remote_crash(journal: str, crash: str) -> None:
    """Arm ``crash`` (an in-task point) for whichever worker runs the task: see the module docs."""
    when, atom, nth = parse_crash(crash)
    with open(_spec_path(journal), "w", encoding="utf-8") as handle:
        handle.write("%s %s %d %d\n" % (when, atom, nth, os.getpid()))


def _armed(journal: str) -> tuple[str, str, int, int] | None:
    try:
        with open(_spec_path(journal), encoding="utf-8") as handle:
            when, atom, nth, pid = handle.read().split()
    except FileNotFoundError:
        return None
    return when, atom, int(nth), int(pid)


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its parent counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _remote_hit(journal: str, when: str, action: str, name: str, done: int) -> None:
    """Kill the engine process if the armed crash point is ``when`` for the ``done``-th ``action`` of ``name``."""
    spec = _armed(journal)
    if spec is None or spec[:2] != (when, name):
        return
    if read_journal(journal).count((action, name)) + done != spec[2]:
        return
    try:
        os.rename(_spec_path(journal), _spec_path(journal) + ".fired")  # only one task fires
    except FileNotFoundError:
        return
    pid = spec[3]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _gone(pid), "the engine process %d to die of SIGKILL" % pid, timeout=30.0)
    raise EngineKilled("killed the engine process %d at %s:%s" % (pid, when, name))


def _journal_remote(path: str, action: str, name: str) -> None:
    if action == "execute":
        _remote_hit(path, "start", action, name, 1)  # before the journal line: this is occurrence count + 1
    _write_journal(path, action, name)
    for when in ("during", "sigkill") if action == "execute" else ("revert",):
        _remote_hit(path, when, action, name, 0)


def _journal(path: str, action: str, name: str) -> None:
    if _crash is None:  # not the child: a worker, or the parent resuming
        _journal_remote(path, action, name)
        return
    if action == "execute" and _hit("start", name):
        _die("start", name)
    _write_journal(path, action, name)
    if action == "execute":
        for when in ("during", "sigkill"):
            if _hit(when, name):
                _die(when, name)
    elif _hit("revert", name):
        _die("revert", name)


def _on_atom_state(state: Any, details: dict[str, Any]) -> None:
    name = details["atom_name"]
    for when, wanted in (("running", states.RUNNING), ("success", states.SUCCESS), ("reverted", states.REVERTED)):
        if state == wanted and _hit(when, name):
            _die(when, name)


# -- tasks ----------------------------------------------------------------------------


class Step(Task):
    """Return the trail it is given plus its own name; journal execute and revert."""

    def execute(self, journal: str, trail: list[str]) -> list[str]:
        _journal(journal, "execute", self.name)
        return [*trail, self.name]

    def revert(self, journal: str, **kwargs: Any) -> None:
        _journal(journal, "revert", self.name)


class Boom(Task):
    """Always fail."""

    def execute(self, journal: str) -> None:
        _journal(journal, "execute", self.name)
        raise CrashTestError("%s failed" % (self.name,))

    def revert(self, journal: str, **kwargs: Any) -> None:
        _journal(journal, "revert", self.name)


class FailsFirstTime(Task):
    """Fail the first time it ever runs (by the journal), succeed after that."""

    def execute(self, journal: str, trail: list[str]) -> list[str]:
        before = read_journal(journal).count(("execute", self.name))
        _journal(journal, "execute", self.name)
        if before == 0:
            raise CrashTestError("%s fails the first time" % (self.name,))
        return [*trail, self.name]

    def revert(self, journal: str, **kwargs: Any) -> None:
        _journal(journal, "revert", self.name)


def _step(cls: type[Task], name: str, journal: str, trail: str | None) -> Task:
    rebind = {"trail": trail} if trail is not None else None
    return cls(name=name, provides="after_" + name, rebind=rebind, inject={"journal": journal})


@flow_factory
def make_flow(scenario: str, journal: str) -> Any:
    """The flow of ``scenario`` (see SCENARIOS); every task journals to ``journal``.

    All of them need the injected ``start`` (an empty list).
    """
    if scenario == "linear":
        return linear_flow.Flow("linear").add(
            _step(Step, "a", journal, "start"),
            _step(Step, "b", journal, "after_a"),
            _step(Step, "c", journal, "after_b"),
            _step(Step, "d", journal, "after_c"),
        )
    if scenario == "unordered":
        return linear_flow.Flow("unordered").add(
            _step(Step, "a", journal, "start"),
            unordered_flow.Flow("fan").add(
                _step(Step, "p1", journal, "after_a"),
                _step(Step, "p2", journal, "after_a"),
                _step(Step, "p3", journal, "after_a"),
            ),
            _step(Step, "d", journal, "after_a"),
        )
    if scenario == "revert":
        return linear_flow.Flow("revert").add(
            _step(Step, "a", journal, "start"),
            _step(Step, "b", journal, "after_a"),
            _step(Step, "c", journal, "after_b"),
            Boom(name="boom", inject={"journal": journal}),
        )
    if scenario == "retry":
        return linear_flow.Flow("retry").add(
            _step(Step, "a", journal, "start"),
            linear_flow.Flow("attempts", retry=Times(3, name="attempts-retry")).add(
                _step(Step, "b", journal, "after_a"),
                _step(FailsFirstTime, "flaky", journal, "after_b"),
            ),
            _step(Step, "c", journal, "after_flaky"),
        )
    raise ValueError("unknown scenario %r (known: %s)" % (scenario, ", ".join(SCENARIOS)))


# -- the child's main --------------------------------------------------------------------


def parse_crash(text: str) -> tuple[str, str, int]:
    """``"during:b@2"`` -> ``("during", "b", 2)``."""
    when, _, rest = text.partition(":")
    atom, _, nth = rest.partition("@")
    return when, atom, int(nth or 1)


def main(argv: list[str] | None = None) -> int:
    """Run the scenario until the crash point; see the module docstring."""
    global _crash
    parser = argparse.ArgumentParser(prog="crash_child")
    parser.add_argument("--backend", required=True, help="backend conf as JSON")
    parser.add_argument("--journal", required=True)
    parser.add_argument("--scenario", required=True, choices=SCENARIOS)
    parser.add_argument("--crash", required=True)
    parser.add_argument("--engine-options", default='{"engine": "serial"}')
    args = parser.parse_args(argv)
    _crash = parse_crash(args.crash)
    options = json.loads(args.engine_options)
    if options.get("engine") == "distributed" and _crash[0] in IN_TASK_CRASHES:
        arm_remote_crash(args.journal, args.crash)
    backend = fetch(json.loads(args.backend))
    engine = load_from_factory(
        make_flow,
        factory_kwargs={"scenario": args.scenario, "journal": args.journal},
        store={"start": []},
        backend=backend,
        **options,
    )
    sys.stdout.write("flow-detail %s\n" % (engine.flow_detail.uuid,))
    sys.stdout.flush()
    engine.atom_notifier.register("*", _on_atom_state)
    try:
        engine.run()
    except Exception as error:  # the scenario's own failure; the parent sees exit 0 anyway
        sys.stdout.write("flow raised %s\n" % (type(error).__name__,))
    sys.stdout.write("finished %s\n" % (engine.storage.get_flow_state(),))
    backend.close()
    return 0


if __name__ == "__main__":
    # Run the importable copy of this module, not ``__main__``: the parent
    # rebuilds the flow from it and checks failures by its exception types.
    from tests.persistence import crash_child

    sys.exit(crash_child.main())
