"""The non-blocking conductor: up to ``max_simultaneous_jobs`` jobs at once, on a thread pool."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any

from flowkit.conductors.base import Conductor
from flowkit.jobs.base import Claim, Job, JobBoard

__all__ = ["NonBlockingConductor", "default_max_simultaneous_jobs"]


def default_max_simultaneous_jobs() -> int:
    """The pool size used when none is given: the number of CPUs."""
    return os.cpu_count() or 1


class NonBlockingConductor(Conductor):
    """Claims a job while others run, up to ``max_simultaneous_jobs`` (TaskFlow's ``nonblocking``).

    Jobs run on a thread pool of that size, started by ``run()`` and shut
    down before it returns.
    """

    def __init__(self, name: str, board: JobBoard, **options: Any) -> None:
        if options.get("max_simultaneous_jobs") is None:
            options["max_simultaneous_jobs"] = default_max_simultaneous_jobs()
        super().__init__(name, board, **options)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _start(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.max_simultaneous_jobs, thread_name_prefix="%s-job" % self.name
        )

    def _finish(self) -> None:
        if self._pool is not None:
            # Running jobs finish (or are suspended by stop(drain=False)) first.
            self._pool.shutdown(wait=True)
            self._pool = None

    def _dispatch(self, job: Job, claim: Claim) -> None:
        assert self._pool is not None
        self._pool.submit(self._run_job, job, claim)
