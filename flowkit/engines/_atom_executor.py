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
    many atoms the engine should have submitted at once (more would only
    queue, and a queued atom has already been recorded RUNNING).
    """

    local: bool = True
    max_in_flight: int = 1
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

    def check_atom(self, atom: Any) -> None:
        """Raise if ``atom`` cannot be run by this executor (checked at prepare)."""

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` and return a future of its return value."""
