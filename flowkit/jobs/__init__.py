"""Job boards: flows posted as jobs, claimed under leases by conductors.

:mod:`flowkit.jobs.base` states the contract (:class:`~flowkit.jobs.base.JobBoard`,
:class:`~flowkit.jobs.base.Job`, :class:`~flowkit.jobs.base.Claim`);
``flowkit.jobs.backends.fetch(name, {"board": "sql"|"redis"|"memory"})`` builds a board.
The SQL and Redis boards import SQLAlchemy / redis-py only when fetched.
"""

from flowkit.jobs.base import (
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_DETAILS_BYTES,
    CancelRequest,
    Claim,
    FailureRecord,
    FencedBackend,
    Job,
    JobBoard,
    JobPriority,
    JobState,
    JobStatus,
)

__all__ = [
    # the contract
    "JobBoard",
    "Job",
    "Claim",
    "CancelRequest",
    "FailureRecord",
    "JobStatus",
    "JobState",
    "JobPriority",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_MAX_DETAILS_BYTES",
    # fencing
    "FencedBackend",
]
