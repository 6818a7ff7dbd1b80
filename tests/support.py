"""Tasks and observers shared by the behaviour tests.

Everything here is defined at module level so that it pickles: in process (and, later,
distributed) mode a task runs somewhere else, so a task must never be the thing a test
inspects. Tests look at what the engine reports instead: results in storage, atom and flow
states, notifier events, and the exception ``run()`` raises. Where a test needs to know what a
task *received*, the task returns it (``execute``) or returns a summary from ``revert`` (the
engine reports a revert's return value as the ``result`` of the REVERTED event, as TaskFlow
does).

All results are plain JSON values (str, int, list, dict): persisted results are data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from flowkit import states
from flowkit.exceptions import InvalidState
from flowkit.task import Task
from flowkit.types.failure import Failure


class BoomError(Exception):
    """A user exception type the engine must re-raise unchanged."""


class OtherBoomError(Exception):
    """A second user exception type, to tell failures apart."""


# --- tasks -----------------------------------------------------------------------------


class Const(Task):
    """Return the injected ``value`` (use ``inject={"value": ...}``)."""

    def execute(self, value: Any) -> Any:
        return value


class Name(Task):
    """Return the task's own name; needs nothing."""

    def execute(self) -> str:
        return self.name


class Add(Task):
    """Return ``x + y``."""

    def execute(self, x: Any, y: Any) -> Any:
        return x + y


class Double(Task):
    """Return ``2 * x``."""

    def execute(self, x: Any) -> Any:
        return 2 * x


class Fail(Task):
    """Raise ``BoomError(<task name>)``; revert reports what it was given."""

    def execute(self) -> None:
        raise BoomError(self.name)

    def revert(self, result: Any, flow_failures: dict[str, Failure], **kwargs: Any) -> Any:
        return revert_summary(result, flow_failures)


class FailOther(Task):
    """Raise ``OtherBoomError(<task name>)``."""

    def execute(self) -> None:
        raise OtherBoomError(self.name)


class Undoable(Task):
    """Return its name; revert reports what it was given."""

    def execute(self) -> str:
        return self.name

    def revert(self, result: Any, flow_failures: dict[str, Failure], **kwargs: Any) -> Any:
        return revert_summary(result, flow_failures)


class UndoableAdd(Task):
    """Return ``x + y``; revert reports the arguments and result it was given."""

    def execute(self, x: Any, y: Any) -> Any:
        return x + y

    def revert(self, x: Any, y: Any, result: Any, flow_failures: dict[str, Failure], **kwargs: Any) -> Any:
        summary = revert_summary(result, flow_failures)
        summary["args"] = [x, y]
        return summary


class BadRevert(Task):
    """Succeed, but fail when asked to revert."""

    def execute(self) -> str:
        return self.name

    def revert(self, **kwargs: Any) -> None:
        raise OtherBoomError("revert of " + self.name)


class FailUntil(Task):
    """Fail with BoomError until the retry controller's value reaches ``good``.

    Requires ``attempt`` (rebind it to whatever the controller provides) and the injected
    ``good``; returns the value it succeeded with.
    """

    def execute(self, attempt: Any, good: Any) -> Any:
        if attempt != good:
            raise BoomError("attempt %r is not %r" % (attempt, good))
        return attempt


class Progress(Task):
    """Report the injected progress values, in order."""

    def execute(self, steps: list[float]) -> str:
        for step in steps:
            self.update_progress(step)
        return self.name


def revert_summary(result: Any, flow_failures: dict[str, Failure]) -> dict[str, Any]:
    """What a revert was given, as JSON: its result (or failure) and the flow's failures."""
    summary: dict[str, Any] = {
        "flow_failures": {name: failure.exception_str for name, failure in flow_failures.items()},
        "flow_failure_types": {
            name: bool(failure.check(BoomError, OtherBoomError)) for name, failure in flow_failures.items()
        },
    }
    if isinstance(result, Failure):
        summary["failed"] = True
        summary["result"] = result.exception_str
    else:
        summary["failed"] = False
        summary["result"] = result
    return summary


# --- observers -------------------------------------------------------------------------


class Capture:
    """Record every atom state change an engine reports, engine-side.

    ``events`` is a list of ``(atom_name, state)``; ``results`` maps ``(atom_name, state)``
    to the last ``details["result"]`` reported with it; ``details`` keeps every details dict.
    Attach before running: ``capture = Capture(engine)``.
    """

    def __init__(self, engine: Any) -> None:
        self.events: list[tuple[str, str]] = []
        self.results: dict[tuple[str, str], Any] = {}
        self.details: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        engine.atom_notifier.register("*", self._on_event)

    def _on_event(self, state: Any, details: dict[str, Any]) -> None:
        name = details["atom_name"]
        with self._lock:
            self.events.append((name, state))
            self.details.append((state, dict(details)))
            if "result" in details:
                self.results[(name, state)] = details["result"]

    def states_of(self, name: str) -> list[str]:
        """Every state ``name`` went through, in order."""
        return [state for atom, state in self.events if atom == name]

    def names_in(self, state: str) -> list[str]:
        """The atoms that entered ``state``, in the order they did (repeats kept)."""
        return [atom for atom, s in self.events if s == state]

    def count(self, name: str, state: str) -> int:
        return Counter(self.events)[(name, state)]

    def executed(self, name: str) -> int:
        """How many times ``name`` was started (atoms go RUNNING once per execution)."""
        return self.count(name, states.RUNNING)

    def reverted_result(self, name: str) -> Any:
        return self.results[(name, states.REVERTED)]


class FlowCapture:
    """Record the flow state changes an engine's ``notifier`` reports."""

    def __init__(self, engine: Any) -> None:
        self.states: list[str] = []
        self.details: list[dict[str, Any]] = []
        engine.notifier.register("*", self._on_event)

    def _on_event(self, state: Any, details: dict[str, Any]) -> None:
        self.states.append(state)
        self.details.append(dict(details))


# --- waiting --------------------------------------------------------------------------

#: How long a test waits for something that should happen at once: reaching it means a hang.
WAIT_TIMEOUT = 60.0

T = TypeVar("T")

# What a test waits for usually comes within milliseconds, so the first looks are quick; a
# wait that lasts (a thousand jobs run by conductor processes) looks less and less often, so
# that polling does not take the CPU from the processes it waits for.
_FIRST_PAUSE = 0.002
_LAST_PAUSE = 0.05


def wait_until(
    predicate: Callable[[], T],
    what: str,
    *,
    timeout: float = WAIT_TIMEOUT,
    deadline: float | None = None,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns a true value, and return that value.

    For what another thread or process does and the test cannot be told of directly (a
    file, a row, a line in a log); where it can be told, wait on an event instead. Gives up
    after ``timeout`` seconds, or at ``deadline`` (a ``time.monotonic()`` value shared by
    several waits), with an AssertionError that names ``what`` did not happen, followed by
    ``detail()`` when given (the log the test was reading, say). An exception from
    ``predicate`` ends the wait at once: raise one when the thing can no longer happen.
    """
    start = time.monotonic()
    end = start + timeout if deadline is None else deadline
    pause = _FIRST_PAUSE
    while True:
        found = predicate()
        if found:
            return found
        now = time.monotonic()
        if now > end:
            message = "gave up after %.1f s waiting for %s" % (now - start, what)
            raise AssertionError(message if detail is None else message + ":\n" + detail())
        time.sleep(min(pause, max(0.0, end - now)))
        pause = min(2 * pause, _LAST_PAUSE)


def unavailable(message: str) -> NoReturn:
    """Skip the test for a missing service or tool, naming it; under ``CI=true`` fail instead."""
    # Imported here: conductor and crash child processes import this module (for wait_until),
    # and pytest would add a fifth of a second to each one's start.
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true: " + message)
    pytest.skip(message)


ROOT = Path(__file__).resolve().parent.parent


def run_flowkit(*args: str, cwd: Path | str) -> subprocess.CompletedProcess[str]:
    """Run the ``flowkit`` command with ``args`` in a fresh process that imports this checkout.

    The child knows only what it imports itself (pass ``--import MODULE`` for factories),
    and what the database holds.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, "-m", "flowkit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def stored_states() -> set[states.State]:
    """Every state an atom or a flow can be stored in: those the transition checks move between.

    Read from :mod:`flowkit.states` itself, so a state added there (with its
    transitions) shows up in every test that asks for this.
    """
    found: set[states.State] = set()
    for old in states.State:
        for new in states.State:
            if old == new:
                continue
            if states.check_atom_transition(old, new):
                found.update((old, new))
            try:
                if states.check_flow_transition(old, new):
                    found.update((old, new))
            except InvalidState:
                pass
    return found
