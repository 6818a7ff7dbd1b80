"""Reference costs that do not depend on either workflow library.

A chain of tasks on a parallel engine cannot go faster than handing each
step to a pool thread and waiting for it, so the bare round trip of
``concurrent.futures.ThreadPoolExecutor`` (``submit(fn).result()`` in a loop)
is the yardstick for the parallel engine's per-step cost. ``Executor.map``
over independent no-ops is the throughput floor of the same pool.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass

from benchmarks.timing import best_of

__all__ = ["PoolBaseline", "measure_pool_baseline"]


def _noop(_: object = None) -> None:
    """The work item: nothing, so only the pool's own cost is measured."""
    return None


@dataclass(frozen=True)
class PoolBaseline:
    """Per-item costs (microseconds) of a bare thread pool."""

    n: int
    max_workers: int
    round_trip_us: float
    map_us: float


def measure_pool_baseline(n: int, *, max_workers: int = 2, repeats: int = 5) -> PoolBaseline:
    """Measure ``submit().result()`` round trips and ``map`` over ``n`` no-ops."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as pool:
        # Start the worker threads before timing: the engine's pool start-up
        # is measured separately (pool shutdown benchmark), not per step.
        list(pool.map(_noop, range(max_workers * 4)))

        def round_trips() -> None:
            for _ in range(n):
                pool.submit(_noop).result()

        def mapped() -> None:
            for _ in pool.map(_noop, range(n)):
                pass

        round_trip_s = best_of(round_trips, repeats=repeats)
        map_s = best_of(mapped, repeats=repeats)
    return PoolBaseline(
        n=n,
        max_workers=max_workers,
        round_trip_us=round_trip_s / n * 1e6,
        map_us=map_s / n * 1e6,
    )
