"""Listeners that time atoms and flows and record the durations in the logbook.

:class:`DurationListener` measures how long each atom's execution (and
revert) took and stores the seconds in the atom detail's
``meta["duration"]`` (``meta["revert_duration"]`` for a revert), when it
started in ``meta["start_offset"]`` (seconds after the run started), and the
flow's run time in the flow detail's ``meta["duration"]``.  ``flowkit show``
reads them back and draws a timeline.  :class:`PrintingDurationListener` also
prints each one, in TaskFlow's words (``'a' task started.``, ``It took task 'a'
0.37 seconds to finish.``).

The durations are written through ``engine.storage`` from inside the
engine's own notifications, which run on the thread driving the flow, so
they share the engine's connection and its commits on every backend
(including the SQL ones).  A duration becomes durable at the engine's next
durability point, at the latest when ``run()`` returns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from flowkit import states
from flowkit.listeners.base import Listener

if TYPE_CHECKING:
    from flowkit.engines.engine import Engine

__all__ = ["DurationListener", "PrintingDurationListener", "DURATION_KEY", "REVERT_DURATION_KEY", "START_OFFSET_KEY"]

#: Meta key of an atom's (or flow's) execution time in seconds (TaskFlow's key; ``flowkit show`` reads it).
DURATION_KEY = "duration"
#: Meta key of an atom's revert time in seconds.
REVERT_DURATION_KEY = "revert_duration"
#: Meta key of when an atom's execution started, in seconds after its run started.
START_OFFSET_KEY = "start_offset"

_ATOM_STARTS = frozenset({states.RUNNING, states.REVERTING})
_EXECUTED = frozenset({states.SUCCESS, states.FAILURE})
_REVERTED = frozenset({states.REVERTED, states.REVERT_FAILURE})
_FLOW_ENDS = frozenset({states.SUCCESS, states.REVERTED, states.FAILURE, states.SUSPENDED})
_ATOM_EVENTS = _ATOM_STARTS | _EXECUTED | _REVERTED
_FLOW_EVENTS = frozenset({states.RUNNING, states.REVERTING}) | _FLOW_ENDS


class DurationListener(Listener):
    """Times every atom and the whole run, and records the seconds in the logbook.

    ``clock`` returns seconds (default :func:`time.perf_counter`); pass a fake
    one to get exact numbers in tests.  The latest durations are also kept in
    memory: :attr:`durations`, :attr:`revert_durations`, :attr:`flow_duration`.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(
            engine, task_listen_for=_ATOM_EVENTS, retry_listen_for=_ATOM_EVENTS, flow_listen_for=_FLOW_EVENTS
        )
        self._clock = clock
        self._started: dict[tuple[str, str], float] = {}
        self._flow_started: float | None = None
        self._durations: dict[str, float] = {}
        self._revert_durations: dict[str, float] = {}
        self._flow_duration: float | None = None

    @property
    def durations(self) -> dict[str, float]:
        """Atom name -> seconds its latest execution took (a copy)."""
        return dict(self._durations)

    @property
    def revert_durations(self) -> dict[str, float]:
        """Atom name -> seconds its latest revert took (a copy)."""
        return dict(self._revert_durations)

    @property
    def flow_duration(self) -> float | None:
        """Seconds the latest ``run()`` took, once it ended (None before)."""
        return self._flow_duration

    # -- what to do with a measurement (override to report it elsewhere) --------------

    def atom_timed(self, kind: str, name: str, state: str, seconds: float, reverting: bool) -> None:
        """Called after an atom's duration was recorded; ``kind`` is ``"task"`` or ``"retry"``."""

    def flow_timed(self, name: str, state: str, seconds: float) -> None:
        """Called after the flow's duration was recorded."""

    def atom_started(self, kind: str, name: str, reverting: bool) -> None:
        """Called when an atom starts executing (or reverting) and its clock starts."""

    def flow_started(self, name: str) -> None:
        """Called when the flow starts running and its clock starts."""

    # -- hooks ---------------------------------------------------------------------------

    def _atom_event(self, kind: str, state: Any, details: Mapping[str, Any]) -> None:
        uuid = details["atom_uuid"]
        if state in _ATOM_STARTS:
            self._started[(uuid, state)] = self._clock()
            self.atom_started(kind, details["atom_name"], state == states.REVERTING)
            return
        reverting = state in _REVERTED
        started = self._started.pop((uuid, states.REVERTING if reverting else states.RUNNING), None)
        if started is None:
            return  # started before this listener was registered (or in a process that died)
        seconds = max(0.0, self._clock() - started)
        name = details["atom_name"]
        (self._revert_durations if reverting else self._durations)[name] = seconds
        storage = self._engine.storage
        detail = storage.flow_detail.find(uuid)
        if detail is not None:
            detail.meta[REVERT_DURATION_KEY if reverting else DURATION_KEY] = seconds
            if not reverting and self._flow_started is not None:
                detail.meta[START_OFFSET_KEY] = max(0.0, started - self._flow_started)
            storage.save_atom(detail)
        self.atom_timed(kind, name, str(state), seconds, reverting)

    def on_task_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._atom_event("task", state, details)

    def on_retry_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._atom_event("retry", state, details)

    def on_flow_event(self, state: Any, details: Mapping[str, Any]) -> None:
        if state not in _FLOW_ENDS:
            if self._flow_started is None:
                self._flow_started = self._clock()
                self.flow_started(str(details["flow_name"]))
            return
        started, self._flow_started = self._flow_started, None
        if started is None:
            return
        seconds = max(0.0, self._clock() - started)
        self._flow_duration = seconds
        storage = self._engine.storage
        storage.flow_detail.meta[DURATION_KEY] = seconds
        storage.save_flow()
        self.flow_timed(str(details["flow_name"]), str(state), seconds)


class PrintingDurationListener(DurationListener):
    """A :class:`DurationListener` that also prints when each task and the flow start and how long they took.

    The lines are TaskFlow's: ``'a' task started.`` and ``It took task 'a' 0.37
    seconds to finish.`` (a revert is a start and a finish of its own; retry
    controllers are timed but not printed, as in TaskFlow).  They go to
    ``printer`` (a callable taking the line, TaskFlow's argument), else to
    ``stream``, else to standard output.
    """

    def __init__(
        self,
        engine: Engine,
        printer: Callable[[str], None] | None = None,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(engine, clock=clock)
        self._printer = printer
        self._stream = stream

    def _write(self, line: str) -> None:
        if self._printer is not None:
            self._printer(line)
            return
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def atom_started(self, kind: str, name: str, reverting: bool) -> None:
        if kind == "task":
            self._write("'%s' task started." % (name,))

    def atom_timed(self, kind: str, name: str, state: str, seconds: float, reverting: bool) -> None:
        if kind == "task":
            self._write("It took task '%s' %0.2f seconds to finish." % (name, seconds))

    def flow_started(self, name: str) -> None:
        self._write("'%s' flow started." % (name,))

    def flow_timed(self, name: str, state: str, seconds: float) -> None:
        self._write("It took flow '%s' %0.2f seconds to finish." % (name, seconds))
