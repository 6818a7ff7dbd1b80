"""Watching the attempts of tasks made with ``heartbeat_timeout=``.

The scheduler gives each such attempt a :class:`~flowkit.types.heartbeat.Pulse`
(in its task context) and keeps a :class:`Watch` of it while it runs.  From
its loop it looks at every watch at least every
:data:`~flowkit.types.heartbeat.HEARTBEAT_POLL` seconds (a quarter of the
shortest timeout if that is less): a pulse that moved since the last look
restarts the attempt's timeout (on the engine's clock, so a virtual clock
decides in tests); one that did not move for longer than the timeout makes the
scheduler abandon the attempt.  New details are written to the atom detail
at most every :data:`~flowkit.types.heartbeat.SAVE_EVERY` seconds.

An abandoned attempt's future may still finish later: its
:class:`WatchedCompletion` then logs and drops the outcome.  A lock per watch
settles the race between the two: whichever of "finished" and "abandoned"
comes first wins.

A revert is watched too (its details are stored, and a conductor gives up the
job of a revert that stopped heartbeating, see :mod:`flowkit.conductors.base`)
but not failed: a revert that does not finish cannot be retried by a policy,
so the engine only reports it, once.

The serial engine runs a watched attempt on a thread of its own
(:class:`AttemptThread`), and nothing else while it runs, since an attempt
running inline in the engine's thread could not be abandoned.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from flowkit.types.heartbeat import HEARTBEAT_POLL, Pulse

__all__ = ["Watch", "WatchedCompletion", "AttemptThread", "IDLE_EXIT", "poll_interval"]

_log = logging.getLogger(__name__)


class Watch:
    """One running attempt with a heartbeat timeout, as the engine's loop keeps track of it."""

    __slots__ = (
        "index",
        "kind",
        "name",
        "timeout",
        "pulse",
        "future",
        "lock",
        "done",
        "abandoned",
        "beats",
        "version",
        "details",
        "since",
        "saved_version",
        "saved_at",
        "reported",
    )

    def __init__(self, index: int, kind: int, name: str, timeout: float, pulse: Pulse, now: float) -> None:
        self.index = index
        #: EXEC or REVERT (see :mod:`flowkit.engines._state`).
        self.kind = kind
        self.name = name
        self.timeout = timeout
        self.pulse = pulse
        self.future: concurrent.futures.Future[Any] | None = None
        self.lock = threading.Lock()
        self.done = False
        self.abandoned = False
        self.beats = 0
        self.version = 0
        self.details: Any = None
        #: When (engine clock) the pulse was last seen to move, or the attempt started.
        self.since = now
        self.saved_version = 0
        self.saved_at = -1.0e18  # monotonic; the first details are written at once
        #: A revert found overdue (and logged): it is not failed, only reported.
        self.reported = False

    def look(self, now: float) -> None:
        """Read the pulse; note when it moved and what details it brought."""
        beats, version, details = self.pulse.look()
        if beats != self.beats:
            self.beats = beats
            self.since = now
            self.reported = False
        if version != self.version:
            self.version = version
            self.details = details

    def overdue(self, now: float) -> bool:
        """Whether the pulse has not moved for longer than the timeout (and that is news)."""
        return not self.reported and now - self.since > self.timeout

    def abandon(self) -> bool:
        """Give up on the attempt; False if its outcome came first (it is then on the engine's queue)."""
        with self.lock:
            if self.done:
                return False
            self.abandoned = True
            return True


class WatchedCompletion:
    """Future callback of a watched attempt: hands its outcome to the engine's loop unless it was abandoned."""

    __slots__ = ("put", "index", "kind", "watch")

    def __init__(self, put: Callable[[Any], None], index: int, kind: int, watch: Watch) -> None:
        self.put = put
        self.index = index
        self.kind = kind
        self.watch = watch

    def __call__(self, future: Any) -> None:
        try:
            payload = future.result()
        except BaseException as error:
            payload = error
        watch = self.watch
        with watch.lock:
            if watch.abandoned:
                ok = getattr(payload, "ok", False)
                _log.warning(
                    "atom %r: an attempt abandoned for want of heartbeats finished after all (%s); its outcome "
                    "is ignored",
                    watch.name,
                    "it returned" if ok else "it failed",
                )
                return
            watch.done = True
        self.put((self.index, self.kind, payload))


class AttemptThread:
    """Where the serial engine runs its watched attempts: one thread, kept between attempts.

    Starting a thread per attempt costs more than a task that does little;
    handing the next attempt to a waiting thread costs a wake-up.  A thread
    whose attempt was abandoned is given up (it leaves once the attempt
    returns, if ever) and the next attempt gets a new one.  A daemon: an
    abandoned attempt that never returns must not keep the process alive;
    an idle one leaves after :data:`IDLE_EXIT` seconds, or at :meth:`close`.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[Any] | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` on the thread; a future of what it returns."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        work = self._queue
        if work is None:
            self._queue = work = queue.SimpleQueue()
            threading.Thread(
                target=_serve, args=(work,), name="flowkit-attempts-%s" % (self._name,), daemon=True
            ).start()
        work.put((future, fn, args))
        return future

    def abandon(self) -> None:
        """The attempt running now was abandoned: its thread is not used again."""
        work, self._queue = self._queue, None
        if work is not None:
            work.put(None)  # seen once (if ever) the abandoned attempt returns

    def close(self) -> None:
        """Let the thread go (the run is over)."""
        self.abandon()


#: Seconds an idle attempt thread waits for work before it leaves.
IDLE_EXIT = 5.0


def _serve(work: queue.SimpleQueue[Any]) -> None:
    while True:
        try:
            item = work.get(timeout=IDLE_EXIT)
        except queue.Empty:
            return
        if item is None:
            return
        future, fn, args = item
        if not future.set_running_or_notify_cancel():
            continue
        try:
            result = fn(*args)
        except BaseException as error:
            future.set_exception(error)
        else:
            future.set_result(result)


def poll_interval(watches: Any) -> float:
    """Real seconds between two looks at ``watches``: HEARTBEAT_POLL, or a quarter of the shortest timeout."""
    shortest = min((watch.timeout for watch in watches), default=HEARTBEAT_POLL * 4.0)
    return min(HEARTBEAT_POLL, shortest / 4.0)
