"""Time as flowkit reads it: wall-clock seconds since the epoch, and how long to block.

Everything that waits (timer atoms, signal timeouts, delayed and parked jobs,
a conductor sleeping until the next job is due) asks a :class:`Clock` two
things: what time it is (:meth:`Clock.now`, also spelled ``clock()`` so a
clock is accepted wherever a plain ``time.time``-like callable is), and how
long to block before looking again (:meth:`Clock.timeout`).  Deadlines are
absolute clock seconds, so a deadline written to a logbook means the same
moment to the process that resumes it.

:data:`SYSTEM` is the real clock.  :class:`flowkit.testing.clock.VirtualClock`
jumps forward when a test says so; whoever blocks on a clock subscribes with
:meth:`Clock.on_change` and is woken when it jumps.  A clock never promises
that a wake-up is due: a woken waiter looks at ``now()`` again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Clock", "SYSTEM", "as_clock"]


def _nothing() -> None:
    return None


class Clock:
    """The real clock: ``time.time()``; a wait blocks for the real time left."""

    def now(self) -> float:
        """The current time in seconds since the epoch."""
        return time.time()

    def __call__(self) -> float:
        return self.now()

    def timeout(self, deadline: float | None) -> float | None:
        """Real seconds to block for before ``deadline`` may have come (None: no deadline, block until woken)."""
        if deadline is None:
            return None
        return max(0.0, deadline - self.now())

    def on_change(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` whenever this clock jumps; returns the function that unsubscribes.

        The real clock never jumps, so nothing is ever called.
        """
        return _nothing

    def __repr__(self) -> str:
        return "%s()" % type(self).__name__


class _CallableClock(Clock):
    """A plain ``() -> seconds`` callable used as a clock (what boards have always accepted)."""

    def __init__(self, function: Callable[[], float]) -> None:
        self._function = function

    def now(self) -> float:
        return float(self._function())

    def __repr__(self) -> str:
        return "clock(%r)" % (self._function,)


#: The real clock.
SYSTEM = Clock()


def as_clock(clock: Clock | Callable[[], float] | None) -> Clock:
    """``clock`` as a :class:`Clock`: None is :data:`SYSTEM`, ``time.time`` too, another callable is wrapped."""
    if clock is None or clock is time.time:
        return SYSTEM
    if isinstance(clock, Clock):
        return clock
    if callable(clock):
        return _CallableClock(clock)
    raise TypeError("clock must be a flowkit.clock.Clock or a callable returning seconds, got %r" % (clock,))
