"""The blocking conductor: one job at a time, run in the thread that called ``run()``."""

from __future__ import annotations

from typing import Any

from flowkit.conductors.base import Conductor
from flowkit.jobs.base import Claim, Job, JobBoard

__all__ = ["BlockingConductor"]


class BlockingConductor(Conductor):
    """Runs each claimed job to its end before claiming the next (TaskFlow's ``blocking``).

    ``max_simultaneous_jobs`` must be 1 (the default); start several
    conductors (processes) to run jobs side by side.
    """

    def __init__(self, name: str, board: JobBoard, **options: Any) -> None:
        jobs = options.setdefault("max_simultaneous_jobs", 1)
        if jobs != 1:
            raise ValueError(
                "a blocking conductor runs one job at a time (max_simultaneous_jobs=1), got %r; "
                "use the 'nonblocking' conductor for more" % (jobs,)
            )
        super().__init__(name, board, **options)

    def _dispatch(self, job: Job, claim: Claim) -> None:
        self._run_job(job, claim)
