"""The contract every executor fulfils: :class:`AtomExecutor`.

It lives on its own so that the executors built on it (this package's in
:mod:`flowkit.engines.executors`, the Dask one in
:mod:`flowkit.engines.distributed`) import it without importing each other;
:mod:`flowkit.engines.executors` is where users find it.
"""

from __future__ import annotations

import abc
import concurrent.futures
from collections.abc import Callable
from typing import Any

__all__ = ["AtomExecutor"]


class AtomExecutor(abc.ABC):
    """Runs atom functions somewhere and hands back futures.

    ``local`` says whether submitted functions run in this process on the very
    objects passed (so a task's progress reaches the engine live, through its
    :class:`~flowkit.task.TaskContext`); ``inline`` whether
    ``submit`` runs the function before it returns; ``max_in_flight`` how
    many atoms the engine should have submitted at once.
    """

    local: bool = True
    max_in_flight: int = 1
    #: How many atoms it runs at once when ``max_in_flight`` is more, or None
    #: (it starts each atom as it is submitted).  The engine then submits the
    #: atoms beyond its free workers to wait in its queue, in this process:
    #: each is recorded RUNNING (written ahead, as every atom is) but
    #: announced to listeners only once a worker starts it, and one the run
    #: no longer wants by then (it is stopping or reverting) is not started
    #: and goes back to the state it was in, unannounced.  Flows with
    #: heartbeat timeouts or retry policies get only this many at once, so no
    #: attempt's clock (or its recorded start) runs while it waits.
    workers: int | None = None
    #: True when ``submit`` runs the function before returning (serial).
    inline: bool = False

    def start(self) -> None:
        """Acquire resources (pools) before a run."""

    def stop(self) -> None:
        """Release resources after a run, without waiting for idle workers."""

    def cancel_flag(self) -> Any:
        """A new stop flag for one run, readable where this executor runs atoms; None when that is this process.

        The engine raises it when the run is being stopped, so that the
        :class:`~flowkit.types.cancellation.CancelToken` a task got in another
        process sees it (see :class:`~flowkit.types.cancellation.CancelFlag`),
        and closes it when the run ends.  Called after :meth:`~flowkit.engines.executors.AtomExecutor.start`.
        """
        return None

    def heartbeat_channel(self) -> Any:
        """A new channel for one attempt's heartbeats, from where this executor runs atoms; None: this process.

        See :class:`~flowkit.types.heartbeat.HeartbeatChannel`.  The engine
        closes it when the attempt is over.  Called after ``start()``.
        """
        return None

    def abandon(self, future: concurrent.futures.Future[Any]) -> None:
        """The engine gave up on the attempt behind ``future`` (its heartbeat stopped): stop it if this executor can.

        Its result, should it still come, is ignored.  The default does
        nothing: a thread cannot be stopped from outside, and is left to finish.
        """

    def check_atom(self, atom: Any) -> None:
        """Raise if ``atom`` cannot be run by this executor (checked at prepare)."""

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` now, in this thread, and return what it returns (raise what it raises).

        Only used when ``inline`` is True, in place of :meth:`submit`; the
        default goes through :meth:`submit`, an inline executor may call
        ``fn`` directly.
        """
        return self.submit(fn, *args).result()

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` and return a future of its return value."""
