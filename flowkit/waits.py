"""Atoms that wait: a timer (:class:`Sleep`) and a signal from outside (:class:`WaitFor`).

A waiting atom holds no thread and no pool worker.  When it starts, the
engine works out its deadline once, from its clock, and writes it ahead to
the logbook with the atom's WAITING state; a run resumed after a crash, in
this process or another, waits only for what is left of it.  The engine
never calls ``execute`` of a waiting atom: it ends the atom itself, when the
deadline comes or the signal is there (see :mod:`flowkit.signals`).

When every atom that can run has ended and the rest wait, the flow is
WAITING: ``engine.run()`` blocks its caller's thread until the next deadline
or signal, ``engine.run(park=True)`` returns at once, and a conductor gives
the job back to its board, due when the flow is.

Both are tasks, so they sit in linear, unordered and graph flows like any
other, and a :class:`WaitFor` that times out fails like any task that
raised: retry controllers are asked and reverts run.  Reverting a wait
undoes nothing.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

from flowkit._names import check_name
from flowkit.atom import ProvidesSpec
from flowkit.task import Task

__all__ = ["Wait", "Sleep", "WaitFor", "WAIT_KEY", "WAKE_KEY"]

#: The key of ``AtomDetail.meta`` holding a started wait: ``{"until": deadline or None,
#: "signal": name or None, "started": clock seconds}``.
WAIT_KEY = "wait"
#: The key of ``FlowDetail.meta`` saying, while the flow is WAITING, what it waits for:
#: ``{"due": the earliest deadline (clock seconds) or None, "signals": [names]}``.
WAKE_KEY = "wake"


class Wait(Task):
    """Base of the waiting atoms: the engine ends them, ``execute`` is never called."""

    #: The signal this atom waits for (None: a timer only).
    signal: str | None = None

    def deadline(self, now: float) -> float | None:
        """The clock time this wait ends at (or times out at) if it starts at ``now``; None: no deadline."""
        raise NotImplementedError

    def execute(self) -> Any:
        raise TypeError(
            "%s %r is ended by the engine when its time or signal comes; it cannot be executed directly"
            % (type(self).__name__, self.name)
        )


def _duration(atom: str, what: str, seconds: object) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError("atom %r: %s must be a number of seconds, got %r" % (atom, what, seconds))
    value = float(seconds)
    if not math.isfinite(value) or value < 0:
        raise ValueError("atom %r: %s must be a finite number of seconds >= 0, got %r" % (atom, what, seconds))
    return value


class Sleep(Wait):
    """Wait ``seconds`` from when the atom starts, or until the aware datetime ``until``.

    Give exactly one.  ``until`` must carry its timezone (``datetime.timezone.utc``,
    or a ``zoneinfo.ZoneInfo``): a naive datetime is refused, since the
    process that resumes the flow may not share this one's local time.  An
    ``until`` already past when the atom starts ends it at once.  The result
    is None.
    """

    def __init__(
        self,
        name: str,
        *,
        seconds: float | None = None,
        until: datetime.datetime | None = None,
        provides: ProvidesSpec = None,
        priority: int = 0,
    ) -> None:
        super().__init__(name=name, provides=provides, priority=priority)
        if (seconds is None) == (until is None):
            raise ValueError(
                "atom %r: give Sleep either seconds= or until=, not %s"
                % (name, "both" if seconds is not None else "neither")
            )
        self.seconds = None if seconds is None else _duration(name, "seconds", seconds)
        self.until: float | None = None
        if until is not None:
            if not isinstance(until, datetime.datetime):
                raise TypeError("atom %r: until must be a datetime.datetime, got %r" % (name, until))
            if until.tzinfo is None or until.utcoffset() is None:
                raise ValueError(
                    "atom %r: until=%s is a naive datetime; give it a timezone (for example "
                    "until.replace(tzinfo=datetime.timezone.utc)): a resumed flow may run where local "
                    "time differs" % (name, until.isoformat())
                )
            self.until = until.timestamp()

    def deadline(self, now: float) -> float:
        if self.until is not None:
            return self.until
        assert self.seconds is not None
        return now + self.seconds

    def __repr__(self) -> str:
        if self.until is not None:
            return "Sleep(name=%r, until=%r)" % (self.name, self.until)
        return "Sleep(name=%r, seconds=%r)" % (self.name, self.seconds)


class WaitFor(Wait):
    """Wait for the signal ``signal`` (default: the atom's name) sent to this flow.

    The result is the signal's value (JSON data; stored under ``provides``).
    With ``timeout`` (seconds from when the atom starts), the atom fails with
    :class:`~flowkit.exceptions.WaitTimeout` if the signal has not come by
    then.  A signal sent before the flow reaches the atom is kept and ends
    it as soon as it starts.  Send one with :func:`flowkit.signals.send`,
    ``engine.signal()`` or ``flowkit signal UUID NAME --value JSON``.
    """

    def __init__(
        self,
        name: str,
        *,
        signal: str | None = None,
        timeout: float | None = None,
        provides: ProvidesSpec = None,
        priority: int = 0,
    ) -> None:
        super().__init__(name=name, provides=provides, priority=priority)
        self.signal = check_name(name if signal is None else signal, "signal name of atom %r" % (name,))
        self.timeout = None if timeout is None else _duration(name, "timeout", timeout)

    def deadline(self, now: float) -> float | None:
        return None if self.timeout is None else now + self.timeout

    def __repr__(self) -> str:
        return "WaitFor(name=%r, signal=%r, timeout=%r)" % (self.name, self.signal, self.timeout)
