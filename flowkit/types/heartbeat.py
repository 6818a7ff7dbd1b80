"""The pulse a running task beats: how ``self.heartbeat()`` reaches the engine.

A task made with ``heartbeat_timeout=`` gets a :class:`Pulse` in its
:class:`~flowkit.task.TaskContext`; ``Task.heartbeat(details)`` beats it.  A
beat is two attribute writes, so a task can beat in a tight loop: the engine
looks at the pulse on its own schedule (every :data:`HEARTBEAT_POLL` seconds
at most, or a quarter of the timeout if that is shorter) and fails an
attempt whose pulse did not move for longer than its timeout.

Where the task runs in another process or on a Dask worker, the pulse that
arrives there carries the executor's *channel* (an object with ``send()``,
``read()`` and ``close()``, made by
:meth:`flowkit.engines.executors.AtomExecutor.heartbeat_channel`): a small
file for a process pool, a ``distributed.Variable`` for Dask.  The worker-side
pulse sends what it has at most every :data:`SEND_EVERY` seconds (and once more
when the attempt ends), so the cost of a beat stays that of two attribute
writes there too; the engine reads the channel when it looks.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

__all__ = ["Pulse", "HeartbeatChannel", "HEARTBEAT_POLL", "SEND_EVERY", "SAVE_EVERY", "HEARTBEAT_KEY"]

#: The longest the engine goes without looking at a running attempt's pulse (seconds).
HEARTBEAT_POLL = 0.25

#: The shortest time between two writes of an attempt's heartbeat details to its atom detail (seconds).
SAVE_EVERY = 2.0

#: The key of ``AtomDetail.meta`` holding the last stored heartbeat: ``{"details": ..., "at": clock seconds}``.
HEARTBEAT_KEY = "heartbeat"

#: The shortest time between two sends of a pulse in another process (seconds).
SEND_EVERY = 0.05


class HeartbeatChannel(Protocol):
    """Carries a pulse's state from a worker in another process to the engine."""

    def send(self, state: str) -> None:
        """Publish ``state`` (a JSON text) for the engine (the worker's side)."""

    def read(self) -> str | None:
        """The last state sent (the engine's side), or None if none came yet."""

    def close(self) -> None:
        """Release what the channel holds (the engine's side, after the attempt)."""


class Pulse:
    """What one attempt of a task beats; the engine reads it with :meth:`look`.

    ``beats`` counts the beats, ``version`` the beats that brought details,
    ``details`` holds the last details given.
    """

    __slots__ = ("beats", "version", "details", "_channel", "_remote", "_sent", "_unsent")

    def __init__(self, channel: HeartbeatChannel | None = None) -> None:
        self.beats = 0
        self.version = 0
        self.details: Any = None
        #: The channel to another process (None: the task runs in the engine's process).
        self._channel = channel
        #: Whether this is the worker-side copy that sends (True) or the side that reads (False).
        self._remote = False
        self._sent = -1.0e18
        self._unsent = False

    def beat(self, details: Any = None) -> None:
        """One beat; ``details`` (JSON data), unless None, replaces the last details."""
        self.beats += 1
        if details is not None:
            self.details = details
            self.version += 1
        if self._remote:
            now = time.monotonic()
            if now - self._sent >= SEND_EVERY:
                self._send(now)
            else:
                self._unsent = True

    def flush(self) -> None:
        """Send what has not been sent yet (a worker-side pulse, when its attempt ends)."""
        if self._remote and self._unsent:
            self._send(time.monotonic())

    def _send(self, now: float) -> None:
        try:
            state = json.dumps([self.beats, self.version, self.details], allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as error:
            raise TypeError(
                "heartbeat details must be JSON data (dicts, lists, strings, numbers, booleans, None): %s" % (error,)
            ) from error
        assert self._channel is not None
        self._channel.send(state)
        self._sent = now
        self._unsent = False

    def look(self) -> tuple[int, int, Any]:
        """``(beats, version, details)`` as the engine can see them now."""
        channel = self._channel
        if channel is None:
            return self.beats, self.version, self.details
        state = channel.read()
        if state is None:
            return 0, 0, None
        try:
            beats, version, details = json.loads(state)
        except (TypeError, ValueError):
            return 0, 0, None  # a torn or foreign write: as if nothing came
        if not isinstance(beats, int) or not isinstance(version, int):
            return 0, 0, None
        return beats, version, details

    def close(self) -> None:
        """Release the channel (the engine's side, when the attempt is over)."""
        if self._channel is not None and not self._remote:
            self._channel.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # What crosses to a worker is the channel; the copy there sends on it.
        return (_worker_pulse, (self._channel, self.beats, self.version, self.details))

    def __repr__(self) -> str:
        return "<Pulse beats=%d>" % (self.beats,)


def _worker_pulse(channel: HeartbeatChannel | None, beats: int, version: int, details: Any) -> Pulse:
    """The pulse as a worker sees it: it sends on ``channel`` (if there is one)."""
    pulse = Pulse(channel)
    pulse.beats = beats
    pulse.version = version
    pulse.details = details
    pulse._remote = channel is not None
    return pulse
