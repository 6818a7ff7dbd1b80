"""A clock that moves only when a test moves it."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from typing import Any

from flowkit.clock import Clock

__all__ = ["VirtualClock"]


class VirtualClock(Clock):
    """Virtual time for tests: :meth:`advance` an hour and every waiter wakes at once.

    Pass it as ``clock=`` to an engine, a job board or a conductor.  Time
    starts at ``start`` (epoch seconds or an aware datetime; default: the real
    time when the clock is made, so deadlines look plausible in logs) and
    changes only through :meth:`advance` and :meth:`set`.  A waiter blocks on
    no real deadline (``timeout()`` is None until its deadline has come) and
    is woken by every jump, then looks at ``now()`` again.
    """

    def __init__(self, start: float | datetime.datetime | None = None) -> None:
        if start is None:
            import time

            start = time.time()
        self._now = _seconds(start)
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], Any]] = {}
        self._next_id = 0

    def now(self) -> float:
        return self._now

    def timeout(self, deadline: float | None) -> float | None:
        if deadline is not None and deadline <= self._now:
            return 0.0
        return None

    def on_change(self, callback: Callable[[], Any]) -> Callable[[], None]:
        with self._lock:
            ident = self._next_id
            self._next_id += 1
            self._callbacks[ident] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks.pop(ident, None)

        return unsubscribe

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (not backwards); wake every waiter; return the new time."""
        if not seconds >= 0:
            raise ValueError("a virtual clock only moves forward, got %r seconds" % (seconds,))
        return self.set(self._now + seconds)

    def set(self, when: float | datetime.datetime) -> float:
        """Move time forward to ``when``; wake every waiter; return the new time."""
        target = _seconds(when)
        if target < self._now:
            raise ValueError("a virtual clock only moves forward: %r is before %r" % (target, self._now))
        with self._lock:
            self._now = target
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            callback()
        return target

    @property
    def waiters(self) -> int:
        """How many callers are subscribed (blocked, or about to block, on this clock)."""
        with self._lock:
            return len(self._callbacks)

    def __repr__(self) -> str:
        return "VirtualClock(%r)" % (self._now,)


def _seconds(when: float | datetime.datetime) -> float:
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("a naive datetime has no timezone: give one (datetime.timezone.utc, say)")
        return when.timestamp()
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError("a time is epoch seconds or an aware datetime, got %r" % (when,))
    return float(when)
