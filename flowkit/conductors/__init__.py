"""Conductors: processes that claim jobs from a job board and run their flows.

- ``base``: the :class:`~flowkit.conductors.base.Conductor` loop (claim, build the flow from its
  logbook, run it on a fenced backend, heartbeat the claim, consume/abandon)
  and the events it publishes.
- ``backends``: ``fetch("blocking" | "nonblocking", ...)`` and the two kinds.
- ``posting``: :func:`~flowkit.conductors.posting.post_flow`, the producer's side: a job whose flow a
  conductor can rebuild.
- ``cli``: the ``flowkit conductor`` and ``flowkit jobs`` commands.

The job boards themselves live in :mod:`flowkit.jobs`.
"""

from flowkit.conductors.backends import BlockingConductor, NonBlockingConductor, fetch
from flowkit.conductors.base import (
    EVENTS,
    JOB_ABANDONED,
    JOB_CANCELLED,
    JOB_CANCELLING,
    JOB_CLAIMED,
    JOB_CONSUMED,
    JOB_LOST,
    JOB_PARKED,
    JOB_TRASHED,
    RUNNING_END,
    RUNNING_START,
    Conductor,
)
from flowkit.conductors.posting import post_flow

__all__ = [
    # conductors
    "Conductor",
    "BlockingConductor",
    "NonBlockingConductor",
    "fetch",
    # producing jobs
    "post_flow",
    # events
    "EVENTS",
    "JOB_CLAIMED",
    "RUNNING_START",
    "RUNNING_END",
    "JOB_CONSUMED",
    "JOB_CANCELLING",
    "JOB_CANCELLED",
    "JOB_ABANDONED",
    "JOB_LOST",
    "JOB_TRASHED",
    "JOB_PARKED",
]
