"""A live progress bar on a terminal: atoms done out of all, what runs now, failures.

::

    with ProgressListener(engine):
        engine.run()

draws and redraws one line on standard error, e.g.::

    order [##########----------] 5/10  running: charge, ship  failed: 0

When the stream is not a terminal (a log file, a pipe, CI), the listener
stays quiet: it does not even register.  The line is drawn with ``rich``:
it is cut (with an ellipsis) to fit the terminal's width, however narrow, so
a redraw always overwrites the whole of it; colours are left out when
``NO_COLOR`` is set.
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
        """The progress line as it is drawn now, as plain text (before it is cut to the terminal's width)."""
        return self._text().plain

    def _text(self) -> Any:
        from rich.text import Text

        total = self._total
        done = len(self._done)
        filled = self.width * done // total if total else 0
        text = Text("%s [" % (self._engine.flow.name,))
        text.append("#" * filled, style="green")
        text.append("-" * (self.width - filled))
        text.append("] %d/%d" % (done, total))
        if self._running:
            names = list(self._running)
            shown = ", ".join(names[:_SHOWN_RUNNING])
            if len(names) > _SHOWN_RUNNING:
                shown += " +%d" % (len(names) - _SHOWN_RUNNING,)
            text.append("  running: " + shown)
        text.append("  ")
        text.append("failed: %d" % (len(self._failed),), style="red" if self._failed else "")
        if self._reverted:
            text.append("  reverted: %d" % (self._reverted,))
        if self._flow_state in _FLOW_ENDS:
            text.append("  " + self._flow_state)
        return text

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
        self._stream.write(_render(self._text(), shutil.get_terminal_size((100, 24)).columns, self.color))
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


def _render(text: Any, columns: int, color: bool) -> str:
    """Back to the line's start, clear it, and ``text`` cut to fit ``columns`` (one cell left for the cursor)."""
    import io

    from rich.console import Console
    from rich.control import Control
    from rich.segment import ControlType

    line = text.copy()
    line.truncate(max(1, columns - 1), overflow="ellipsis")
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        width=max(1, columns),
        highlight=False,
        emoji=False,
        markup=False,
    )
    console.print(line, end="", no_wrap=True, crop=True)
    home = Control(ControlType.CARRIAGE_RETURN, (ControlType.ERASE_IN_LINE, 2))
    return str(home) + buffer.getvalue()
