"""A live progress bar on a terminal: atoms done out of all, what runs now, failures.

::

    with ProgressListener(engine):
        engine.run()

draws and redraws one line on standard error, e.g.::

    order [##########----------] 5/10  running: charge, ship  failed: 0

When the stream is not a terminal (a log file, a pipe, CI), the listener
stays quiet: it does not even register.  Plain ANSI escape codes, no extra
dependency; colours are left out when ``NO_COLOR`` is set.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from flowkit import states
from flowkit.listeners.base import Listener

if TYPE_CHECKING:
    from flowkit.engines.engine import Engine

__all__ = ["ProgressListener"]

_CLEAR_LINE = "\r\x1b[2K"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_RESET = "\x1b[0m"

# Atom states that count as done for the bar.
_DONE = frozenset({states.SUCCESS, states.IGNORE})
_FLOW_ENDS = frozenset({states.SUCCESS, states.REVERTED, states.FAILURE, states.SUSPENDED})
_SHOWN_RUNNING = 3


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False


class ProgressListener(Listener):
    """Draws ``done/total`` atoms, the running atoms' names and the failures on one terminal line.

    ``stream`` defaults to standard error.  ``enabled=None`` (the default)
    draws only when the stream is a terminal; True or False forces it.
    ``color=None`` uses colours when drawing to a terminal and ``NO_COLOR``
    is unset.  Redraws happen at most every ``refresh_seconds`` (the last
    state of the flow is always drawn), so huge flows do not flood the
    terminal.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        color: bool | None = None,
        width: int = 24,
        refresh_seconds: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(engine)
        self._stream = stream if stream is not None else sys.stderr
        terminal = _is_terminal(self._stream)
        self.enabled = terminal if enabled is None else enabled
        self.color = (terminal and not os.environ.get("NO_COLOR")) if color is None else color
        self.width = max(1, width)
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._total = 0
        self._done: set[str] = set()
        self._running: dict[str, None] = {}  # insertion-ordered set
        self._failed: list[str] = []
        self._reverted = 0
        self._flow_state = str(states.PENDING)
        self._last_draw: float | None = None
        self._drawn = False

    # -- what it shows (also for callers that draw elsewhere) ---------------------------

    @property
    def total(self) -> int:
        """How many atoms the flow has (known once it starts)."""
        return self._total

    @property
    def done(self) -> int:
        """How many atoms finished (SUCCESS or IGNORE)."""
        return len(self._done)

    @property
    def running(self) -> list[str]:
        """The atoms running or reverting now, oldest first."""
        return list(self._running)

    @property
    def failed(self) -> list[str]:
        """The atoms that failed (execution or revert), in order."""
        return list(self._failed)

    def line(self) -> str:
        """The progress line as it is drawn now (without escape codes when ``color`` is off)."""
        total = self._total
        done = len(self._done)
        filled = self.width * done // total if total else 0
        bar = "#" * filled + "-" * (self.width - filled)
        if self.color:
            bar = _GREEN + "#" * filled + _RESET + "-" * (self.width - filled)
        parts = ["%s [%s] %d/%d" % (self._engine.flow.name, bar, done, total)]
        if self._running:
            names = list(self._running)
            shown = ", ".join(names[:_SHOWN_RUNNING])
            if len(names) > _SHOWN_RUNNING:
                shown += " +%d" % (len(names) - _SHOWN_RUNNING,)
            parts.append("running: " + shown)
        failed = "failed: %d" % (len(self._failed),)
        if self._failed and self.color:
            failed = _RED + failed + _RESET
        parts.append(failed)
        if self._reverted:
            parts.append("reverted: %d" % (self._reverted,))
        if self._flow_state in _FLOW_ENDS:
            parts.append(self._flow_state)
        return "  ".join(parts)

    # -- registration ------------------------------------------------------------------

    def register(self) -> None:
        """Start drawing (does nothing when not ``enabled``: quiet off a terminal)."""
        if self.enabled:
            super().register()

    # -- hooks ----------------------------------------------------------------------------

    def on_flow_event(self, state: Any, details: Mapping[str, Any]) -> None:
        with self._lock:
            if state == states.SUSPENDING:
                return
            if state == states.RUNNING and self._flow_state not in (states.RUNNING, states.REVERTING):
                self._start()
            self._flow_state = str(state)
            if state in _FLOW_ENDS:
                self._draw(force=True)
                self._stream.write("\n")
                self._stream.flush()
                self._drawn = False

    def _start(self) -> None:
        # A resumed flow starts with the atoms its logbook says are done.
        self._total = len(self._engine.compilation)
        self._done = {ad.name for ad in self._engine.storage.flow_detail if ad.state in _DONE}
        self._running.clear()
        self._failed.clear()
        self._reverted = 0

    def _atom_event(self, state: Any, details: Mapping[str, Any]) -> None:
        name = details["atom_name"]
        with self._lock:
            if state in (states.RUNNING, states.REVERTING):
                self._running[name] = None
            else:
                self._running.pop(name, None)
            if state in _DONE:
                self._done.add(name)
            elif state in (states.FAILURE, states.REVERT_FAILURE):
                self._failed.append(name)
            elif state in (states.REVERTED, states.PENDING):
                self._done.discard(name)
                if state == states.REVERTED:
                    self._reverted += 1
            self._draw(force=False)

    def on_task_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._atom_event(state, details)

    def on_retry_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._atom_event(state, details)

    def _draw(self, force: bool) -> None:
        now = self._clock()
        if not force and self._last_draw is not None and now - self._last_draw < self.refresh_seconds:
            return
        self._last_draw = now
        line = self.line()
        columns = shutil.get_terminal_size((100, 24)).columns
        if not self.color and len(line) >= columns:
            line = line[: columns - 4] + "..."
        self._stream.write(_CLEAR_LINE + line)
        self._stream.flush()
        self._drawn = True

    def deregister(self) -> None:
        """Stop drawing; ends the line if the flow did not reach a final state."""
        with self._lock:
            if self._drawn:
                self._stream.write("\n")
                self._stream.flush()
                self._drawn = False
        super().deregister()
