"""A listener that stops an engine whose job's claim was lost (TaskFlow's ``CheckingClaimListener``).

A worker that claimed a job and runs its flow with an engine attaches it::

    with CheckingClaimListener(engine, job, board, owner="worker-1"):
        engine.run()

On every flow and task state change it asks the board who owns the job;
when it is no longer ``owner`` (the lease expired and another worker took
it, the job was abandoned, finished or removed) it calls
``on_job_loss(engine, state, details)``, by default ``engine.suspend()``,
so the engine stops at the next atom boundary.  Conductors need none of
this: they fence every write with the claim (see :mod:`flowkit.jobs`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flowkit import exceptions as exc
from flowkit.listeners.base import ANY, Listener

if TYPE_CHECKING:
    from flowkit.engines.engine import Engine
    from flowkit.jobs.base import Job, JobBoard

__all__ = ["CheckingClaimListener"]

LOG = logging.getLogger(__name__)

OnJobLoss = Callable[[Any, Any, Mapping[str, Any]], None]


class CheckingClaimListener(Listener):
    """Checks, on each flow and task event, that ``owner`` still holds the claim on ``job``.

    ``on_job_loss(engine, state, details)`` runs when it does not (default:
    suspend the engine); a board that cannot answer counts as a loss.
    """

    def __init__(
        self,
        engine: Engine,
        job: Job,
        board: JobBoard,
        owner: str,
        on_job_loss: OnJobLoss | None = None,
        *,
        task_listen_for: Iterable[Any] = (ANY,),
        flow_listen_for: Iterable[Any] = (ANY,),
    ) -> None:
        super().__init__(engine, task_listen_for=task_listen_for, flow_listen_for=flow_listen_for, retry_listen_for=())
        if on_job_loss is not None and not callable(on_job_loss):
            raise ValueError("CheckingClaimListener: on_job_loss must be callable, got %r" % (on_job_loss,))
        self._job = job
        self._board = board
        self._owner = owner
        self._on_job_loss: OnJobLoss = on_job_loss if on_job_loss is not None else self._suspend_engine

    def _suspend_engine(self, engine: Any, state: Any, details: Mapping[str, Any]) -> None:
        try:
            engine.suspend()
        except exc.FlowkitError as error:
            LOG.warning(
                "could not suspend %r after job %r lost its claim by %r: %s", engine, self._job.name, self._owner, error
            )

    def _lost(self) -> bool:
        try:
            return self._board.find_owner(self._job) != self._owner
        except (exc.NotFound, exc.JobFailure, exc.StorageFailure):
            return True

    def _check(self, state: Any, details: Mapping[str, Any]) -> None:
        if self._lost():
            LOG.warning(
                "job %r is no longer claimed by %r (state %s): its engine stops", self._job.name, self._owner, state
            )
            self._on_job_loss(self._engine, state, details)

    def on_flow_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._check(state, details)

    def on_task_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._check(state, details)
