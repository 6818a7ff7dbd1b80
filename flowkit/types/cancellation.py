"""The token a running task reads to see that its run is being stopped.

``self.context.cancelled`` (see :class:`flowkit.task.TaskContext`) is a
:class:`CancelToken`.  The engine sets it when the flow is cancelled
(``engine.cancel()``, ``flowkit cancel UUID``), suspended
(``engine.suspend()``), or when a conductor stops without draining
(``stop(drain=False)``).  A long task polls it and stops early::

    def execute(self):
        for chunk in work:
            if self.context.cancelled.wait(0.05):
                raise flowkit.exceptions.Cancelled("stopped at chunk %d" % chunk)
            do(chunk)

Raising :class:`~flowkit.exceptions.Cancelled` once the token is set makes
the attempt an interrupted one: the atom goes back to PENDING (run again on
resume) instead of FAILURE, and is not reverted.

Where the task runs decides how the engine reaches it.  In the engine's own
process (serial, threads) the token is a :class:`threading.Event`.  A token
shipped to another process or Dask worker carries the executor's *flag*
instead (an object with ``set()``, ``is_set()`` and ``close()``, made by
:meth:`flowkit.engines.executors.AtomExecutor.cancel_flag`): a file for a
process pool, a ``distributed.Event`` for Dask; the worker-side token reads
it whenever the task asks, and ``wait()`` looks every :data:`FLAG_POLL`
seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

__all__ = ["CancelToken", "CancelFlag", "FLAG_POLL"]

#: Seconds between two looks at a flag set in another process, by
#: :meth:`CancelToken.wait` on a worker.
FLAG_POLL = 0.05


class CancelFlag(Protocol):
    """A stop flag that another process can read: what a token carries to a worker."""

    def set(self) -> None:
        """Raise the flag (the engine's side)."""

    def is_set(self) -> bool:
        """Whether the flag is raised (any side; cheap enough to call every few milliseconds)."""

    def close(self) -> None:
        """Release what the flag holds (the engine's side, after the run)."""


class CancelToken:
    """Set once the run it belongs to is being stopped; read it with :meth:`is_set` or :meth:`wait`.

    Only the engine sets it.  A token never goes back to unset: a new run
    gets a new token.
    """

    __slots__ = ("_event", "_flag", "_watch")

    def __init__(self, flag: CancelFlag | None = None) -> None:
        self._event = threading.Event()
        #: The flag the engine raises too, for tasks in other processes.
        self._flag = flag
        #: The flag this (worker-side) token reads; None in the engine's process.
        self._watch: CancelFlag | None = None

    def is_set(self) -> bool:
        """Whether the run is being stopped."""
        if self._event.is_set():
            return True
        watch = self._watch
        if watch is not None and watch.is_set():
            self._event.set()
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the token is set or ``timeout`` seconds passed; return :meth:`is_set`."""
        watch = self._watch
        if watch is None:
            return self._event.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            step = FLAG_POLL
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                step = min(step, left)
            self._event.wait(step)
        return True

    def set(self) -> None:
        """Set the token, and the flag tasks in other processes read (the engine calls it)."""
        if self._event.is_set():
            return
        self._event.set()
        if self._flag is not None:
            self._flag.set()

    def __reduce__(self) -> tuple[Any, ...]:
        # What crosses to a worker is the flag, never the event (which holds a
        # lock); a copy of a worker-side token reads the same flag.
        flag = self._flag if self._flag is not None else self._watch
        return (_worker_token, (flag, self._event.is_set()))

    def __repr__(self) -> str:
        return "<CancelToken %s>" % ("set" if self._event.is_set() else "unset")


def _worker_token(flag: CancelFlag | None, already: bool) -> CancelToken:
    """The token as a worker sees it: it reads ``flag`` (set already if the engine's was)."""
    token = CancelToken()
    token._watch = flag
    if already:
        token._event.set()
    return token
