"""Flow factories the conductor tests post as jobs (registered in any process that imports this module).

Each task appends one line to a file named by the store (one ``O_APPEND`` write,
so lines from concurrent processes never interleave and survive a SIGKILL):
the files are the tests' record of what ran, how often, and where.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any

from flowkit.exceptions import Cancelled
from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow
from flowkit.policies import RetryPolicy
from flowkit.task import Task
from flowkit.waits import Sleep, WaitFor
from tests.support import wait_until

__all__ = [
    "one_line",
    "two_steps",
    "failing",
    "gated_steps",
    "napping",
    "approval",
    "backing_off",
    "patient",
    "append_line",
    "hung_revert",
]

#: In a conductor process started with this variable set, ``Hold`` blocks
#: until the release file exists (the first conductor in a crash test).
HOLD_ENV = "FLOWKIT_TEST_HOLD"


def append_line(path: str, text: str) -> None:
    """Append ``text`` as one line, which outlives this process however it ends."""
    # Once write() returns the line is in the kernel: every process reads it, even if this
    # one is SIGKILLed next.  No fsync: the tests kill processes, not the machine, and an
    # fsync per job (~4 ms each here) adds seconds to a thousand-job race.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + "\n").encode("utf-8"))
    finally:
        os.close(fd)


class Append(Task):
    """Appends ``"<tag> <job> <pid>"`` to ``log``."""

    def execute(self, log: str, job: str) -> str:
        append_line(log, "%s %s %d" % (self.name, job, os.getpid()))
        return self.name


class Hold(Task):
    """Announces itself in ``log``; where HOLD_ENV is set, waits for the ``release`` file."""

    def execute(self, log: str, job: str, release: str) -> str:
        append_line(log, "%s %s %d" % (self.name, job, os.getpid()))
        if os.environ.get(HOLD_ENV):
            wait_until(lambda: os.path.exists(release), "the release file %s" % release)
        return self.name


class Fail(Task):
    """Raises, so the flow reverts; its revert is recorded."""

    def execute(self, log: str, job: str) -> None:
        raise RuntimeError("job %s fails on purpose" % (job,))


class Undo(Task):
    """Records its execute and its revert."""

    def execute(self, log: str, job: str) -> None:
        append_line(log, "%s %s %d" % (self.name, job, os.getpid()))

    def revert(self, log: str, job: str, **kwargs: Any) -> None:
        append_line(log, "undo-%s %s %d" % (self.name, job, os.getpid()))


class Gate(Task):
    """Records its execute (then waits for the ``release`` file) and its revert."""

    def execute(self, log: str, job: str, release: str) -> None:
        append_line(log, "%s %s %d" % (self.name, job, os.getpid()))
        wait_until(lambda: os.path.exists(release), "the release file %s" % release)

    def revert(self, log: str, job: str, **kwargs: Any) -> None:
        append_line(log, "undo-%s %s %d" % (self.name, job, os.getpid()))


class Patient(Task):
    """Announces itself in ``log``, then works until its run is being stopped, and stops (raises Cancelled)."""

    def execute(self, log: str, job: str) -> None:
        append_line(log, "%s %s" % (self.name, job))
        while not self.context.cancelled.wait(0.05):  # type: ignore[union-attr]
            pass
        append_line(log, "%s-stopped %s" % (self.name, job))
        raise Cancelled("%s stopped" % (self.name,))


class SlowUndo(Task):
    """Records its execute and its revert; where HOLD_ENV is set, the revert beats once and hangs."""

    def execute(self, log: str, job: str, release: str) -> None:
        append_line(log, "%s %s %d" % (self.name, job, os.getpid()))

    def revert(self, log: str, job: str, release: str, **kwargs: Any) -> None:
        append_line(log, "undo-%s %s %d" % (self.name, job, os.getpid()))
        self.heartbeat({"undoing": job})
        if os.environ.get(HOLD_ENV):
            while not os.path.exists(release):  # hung: no more heartbeats
                time.sleep(0.01)


@flow_factory
def hung_revert() -> Any:
    """``reserve`` (a line), ``boom`` fails, ``reserve`` is reverted (a line; hangs where HOLD_ENV is set)."""
    return linear_flow.Flow("hung-revert").add(SlowUndo("reserve", heartbeat_timeout=1.0), Fail("boom"))


@flow_factory
def one_line() -> Any:
    """One task: the job's single line."""
    return Append("run")


@flow_factory
def two_steps() -> Any:
    """``first`` (a line), ``hold`` (a line, then maybe waits), ``last`` (a line)."""
    return linear_flow.Flow("two-steps").add(Append("first"), Hold("hold"), Append("last"))


@flow_factory
def failing() -> Any:
    """``undo`` runs, ``boom`` fails, ``undo`` is reverted: the flow ends REVERTED."""
    return linear_flow.Flow("failing").add(Undo("undo"), Fail("boom"))


@flow_factory
def gated_steps() -> Any:
    """``first`` (a line, then waits for the release file), ``second`` and ``third`` (a line each)."""
    return linear_flow.Flow("gated-steps").add(Gate("first"), Undo("second"), Undo("third"))


@flow_factory
def napping(until: float) -> Any:
    """``before`` (a line), a timer until ``until`` (epoch seconds), ``after`` (a line)."""
    when = datetime.datetime.fromtimestamp(until, tz=datetime.timezone.utc)
    return linear_flow.Flow("napping").add(Append("before"), Sleep("nap", until=when), Append("after"))


class FailFirst(Task):
    """Appends ``"<tag> <job> <attempt>"``; its first attempt (attempt 0) then raises."""

    def execute(self, log: str, job: str) -> str:
        attempt = int(self.context.idempotency_key.rsplit("-", 1)[1])
        append_line(log, "%s %s %d" % (self.name, job, attempt))
        if attempt == 0:
            raise RuntimeError("first attempt of %s fails" % (self.name,))
        return self.name


@flow_factory
def backing_off(delay: float) -> Any:
    """``before`` (a line), ``call`` (fails once, retried by its policy after ``delay`` seconds)."""
    policy = RetryPolicy(max_attempts=2, initial_delay=delay)
    return linear_flow.Flow("backing-off").add(Append("before"), FailFirst("call", retry_policy=policy))


class Charge(Task):
    """Records the amount it was given."""

    def execute(self, log: str, job: str, amount: Any) -> None:
        append_line(log, "charge-%s %s %d" % (amount, job, os.getpid()))


@flow_factory
def approval() -> Any:
    """``before`` (a line), a wait for the signal ``approved``, ``charge`` (a line with the signal's value)."""
    return linear_flow.Flow("approval").add(
        Append("before"), WaitFor("approve", signal="approved", provides="amount"), Charge("charge")
    )


@flow_factory
def patient() -> Any:
    """``first`` (a line), ``patient`` (a line, then works until stopped), ``last`` (a line)."""
    return linear_flow.Flow("patient").add(Append("first"), Patient("patient"), Append("last"))
