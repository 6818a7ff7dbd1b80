"""The processes of the wait crash tests: one runs a flow until it is killed, another resumes it.

``test_wait_crashes.py`` runs this module twice per test::

    python -m tests.engines.wait_crash_child start --backend CONF_JSON --workdir DIR \\
        --scenario timer [--engine-options JSON]
    python -m tests.engines.wait_crash_child resume --backend CONF_JSON --workdir DIR \\
        [--engine-options JSON]

(``CONF_JSON`` is what ``flowkit.persistence.backends.fetch`` takes.)

``start`` loads the scenario's flow with ``load_from_factory`` and runs it with a
blocking ``run()``, until the test SIGKILLs it (or a task of the flow ends the process).
``resume`` starts at the same time, connects to the database, reports ``ready`` and
reads one line from stdin, ``FLOW_DETAIL_UUID NOT_BEFORE``, sent once the first process
is dead; it loads that flow detail with ``load_from_detail``, sleeps until the epoch
time ``NOT_BEFORE`` (so the test decides when the resume begins) and runs the flow to
its end.

Both processes append what happens to ``DIR/events``, one line each (``flow-detail
UUID``, ``flow WAITING``, ``ready``, ``resuming EPOCH``, ``finished SUCCESS``, ...), and
write their pid to ``DIR/engine.pid`` before they run the flow, so that a task on a
Dask worker can kill the engine process.  Tasks count their executions with one file
per execution, made with ``O_EXCL`` (``DIR/runs/NAME.N``), so a count survives any
crash.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from flowkit.engines import load_from_detail, load_from_factory
from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.policies import RetryPolicy
from flowkit.retry import Times
from flowkit.task import Task
from flowkit.waits import Sleep, WaitFor
from tests.support import wait_until

#: What each scenario's flow is (see make_flow).
SCENARIOS = ("timer", "signal", "signal-early", "key", "backoff")

#: How long the timer of the "timer" scenario waits.
NAP_SECONDS = 2.0

#: The signal the "signal" scenarios wait for.
SIGNAL = "approval"

#: How long a task that waits for its engine process to be killed gives up after.
KILL_TIMEOUT = 60.0


class EngineKilled(Exception):
    """Raised on a Dask worker by the task that killed the engine process: it ends there."""


class FirstResumedAttemptFails(Exception):
    """What the "key" scenario's task raises once, so that its retry controller runs it again."""


# -- files the processes and tasks share -------------------------------------------------


def event(workdir: str, line: str) -> None:
    """Append ``line`` to ``workdir/events`` (one write: it survives a SIGKILL right after)."""
    fd = os.open(os.path.join(workdir, "events"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_events(workdir: str | Path) -> list[str]:
    """Every line written to ``workdir/events`` so far."""
    try:
        return Path(workdir, "events").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def count_execution(workdir: str, name: str) -> int:
    """Record one more execution of ``name``; return how many there were, this one included."""
    runs = os.path.join(workdir, "runs")
    os.makedirs(runs, exist_ok=True)
    n = 1
    while True:
        try:
            os.close(os.open(os.path.join(runs, "%s.%d" % (name, n)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return n
        except FileExistsError:
            n += 1


def executions(workdir: str | Path, name: str) -> int:
    """How many times ``name`` was executed, in every process."""
    runs = Path(workdir, "runs")
    return len(list(runs.glob("%s.*" % name))) if runs.exists() else 0


def _claim(workdir: str, marker: str) -> bool:
    """Create ``workdir/marker``; True if this call made it (only the first one does)."""
    try:
        os.close(os.open(os.path.join(workdir, marker), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True


def _engine_pid(workdir: str) -> int:
    return int(Path(workdir, "engine.pid").read_text(encoding="utf-8"))


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its parent counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _wait_for_the_kill(workdir: str) -> None:
    """Block until the engine process is dead: the test kills it (a task in it dies with it)."""
    pid = _engine_pid(workdir)
    wait_until(lambda: _gone(pid), "the engine process %d to be killed" % pid, timeout=KILL_TIMEOUT)


def _end_the_engine(workdir: str) -> None:
    """End the engine process at once: ``os._exit(1)`` in it; SIGKILL it from a Dask worker."""
    pid = _engine_pid(workdir)
    if pid == os.getpid():
        os._exit(1)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _gone(pid), "the engine process %d to die of SIGKILL" % pid, timeout=KILL_TIMEOUT)
    raise EngineKilled("killed the engine process %d" % pid)


# -- tasks ------------------------------------------------------------------------------


class Count(Task):
    """Count this execution; return the task's name."""

    def execute(self, workdir: str) -> str:
        count_execution(workdir, self.name)
        return self.name


class Started(Task):
    """Count this execution; return when it started (``time.time()``) and the ``got`` it was given."""

    def execute(self, workdir: str, got: Any) -> dict[str, Any]:
        started = time.time()
        count_execution(workdir, self.name)
        return {"started": started, "got": got}


class Gate(Task):
    """The first time: say so (``DIR/gate.ready``) and block until the engine process is killed."""

    def execute(self, workdir: str) -> None:
        count_execution(workdir, self.name)
        if _claim(workdir, "gate.ready"):
            _wait_for_the_kill(workdir)
            raise EngineKilled("the engine process was killed while %r held the flow" % (self.name,))


class Key(Task):
    """Write the idempotency key it sees to ``DIR/keys``; end the engine the first time, fail the second.

    The third execution (the retry controller's second attempt) returns its key.
    """

    def execute(self, workdir: str) -> str:
        key = self.context.idempotency_key
        fd = os.open(os.path.join(workdir, "keys"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (key + "\n").encode())
        finally:
            os.close(fd)
        count_execution(workdir, self.name)
        if _claim(workdir, "key.crashed"):
            _end_the_engine(workdir)
        if _claim(workdir, "key.failed"):
            raise FirstResumedAttemptFails("the resumed attempt of %r fails once" % (self.name,))
        return key


class FirstAttemptFails(Task):
    """Count this execution; fail the first one; later ones return when they started (``time.time()``)."""

    def execute(self, workdir: str) -> dict[str, Any]:
        started = time.time()
        if count_execution(workdir, self.name) == 1:
            raise FirstResumedAttemptFails("the first attempt of %r fails" % (self.name,))
        return {"started": started}


def read_keys(workdir: str | Path) -> list[str]:
    """The idempotency keys the "key" scenario's task saw, in order."""
    try:
        return Path(workdir, "keys").read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return []


@flow_factory
def make_flow(scenario: str, workdir: str) -> Any:
    """The flow of ``scenario`` (see SCENARIOS); every task counts its executions in ``workdir``."""
    inject = {"workdir": workdir}
    a = Count(name="a", inject=inject)
    if scenario == "timer":
        return linear_flow.Flow("timer").add(
            a, Sleep("nap", seconds=NAP_SECONDS), Started(name="b", provides="b", inject={**inject, "got": None})
        )
    if scenario == "signal":
        return linear_flow.Flow("signal").add(
            a,
            WaitFor(SIGNAL, timeout=None, provides="approval"),
            Started(name="b", provides="b", inject=inject, rebind={"got": "approval"}),
        )
    if scenario == "signal-early":
        return linear_flow.Flow("signal-early").add(
            a,
            Gate(name="gate", inject=inject),
            WaitFor(SIGNAL, timeout=None, provides="approval"),
            Started(name="b", provides="b", inject=inject, rebind={"got": "approval"}),
        )
    if scenario == "key":
        return linear_flow.Flow("key").add(
            a,
            linear_flow.Flow("attempts", retry=Times(3, name="again")).add(
                Key(name="charge", provides="key", inject=inject)
            ),
        )
    if scenario == "backoff":
        policy = RetryPolicy(max_attempts=2, initial_delay=NAP_SECONDS)
        return linear_flow.Flow("backoff").add(
            a,
            FirstAttemptFails(name="call", provides="call", inject=inject, retry_policy=policy),
        )
    raise ValueError("unknown scenario %r (known: %s)" % (scenario, ", ".join(SCENARIOS)))


# -- the processes ----------------------------------------------------------------------


def _report_flow_states(engine: Any, workdir: str) -> None:
    engine.notifier.register("*", lambda state, details: event(workdir, "flow %s" % (state,)))


def _run(engine: Any, workdir: str) -> None:
    Path(workdir, "engine.pid").write_text(str(os.getpid()), encoding="utf-8")
    try:
        engine.run()
    except Exception as error:  # reported to the test, which says what it expected
        event(workdir, "raised %s: %s" % (type(error).__name__, str(error).splitlines()[0] if str(error) else ""))
    event(workdir, "finished %s" % (engine.storage.get_flow_state(),))


def start(backend: Any, workdir: str, scenario: str, options: dict[str, Any]) -> None:
    engine = load_from_factory(
        make_flow, factory_kwargs={"scenario": scenario, "workdir": workdir}, backend=backend, **options
    )
    event(workdir, "flow-detail %s" % (engine.flow_detail.uuid,))
    _report_flow_states(engine, workdir)
    _run(engine, workdir)


def resume(backend: Any, workdir: str, options: dict[str, Any]) -> None:
    with backend.get_connection():
        pass  # connected (and the SQL schema checked) before saying ready
    event(workdir, "ready")
    uuid, not_before = sys.stdin.readline().split()
    with backend.get_connection() as conn:
        detail = conn.get_flow_details(uuid)
    engine = load_from_detail(detail, backend=backend, **options)
    _report_flow_states(engine, workdir)
    delay = float(not_before) - time.time()
    if delay > 0:
        time.sleep(delay)
    event(workdir, "resuming %r" % (time.time(),))
    _run(engine, workdir)


def main(argv: list[str] | None = None) -> int:
    """Start or resume a scenario's flow; see the module docstring."""
    parser = argparse.ArgumentParser(prog="wait_crash_child")
    parser.add_argument("command", choices=("start", "resume"))
    parser.add_argument("--backend", required=True, help="backend conf as JSON")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--scenario", choices=SCENARIOS)
    parser.add_argument("--engine-options", default='{"engine": "serial"}')
    args = parser.parse_args(argv)
    options = json.loads(args.engine_options)
    backend = fetch(json.loads(args.backend))
    try:
        if args.command == "start":
            if args.scenario is None:
                parser.error("start needs --scenario")
            start(backend, args.workdir, args.scenario, options)
        else:
            resume(backend, args.workdir, options)
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    # Run the importable copy of this module, not ``__main__``: the factory is
    # registered under this module's name, which the resuming process imports.
    from tests.engines import wait_crash_child

    sys.exit(wait_crash_child.main())
