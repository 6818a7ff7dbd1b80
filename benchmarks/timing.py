"""Timing primitives: phase timings of one flow, repeats, and run-time estimates.

Method (documented in README.md):

* ``time.perf_counter`` around each phase; the flow is built outside the
  timed prepare phase and reported separately as "build".
* ``gc.collect()`` before every repetition so garbage from the previous one
  is not charged to this one. The collector stays *enabled* while timing by
  default, because a user's process pays for collections that a large flow
  triggers; ``gc_off=True`` disables it inside the timed phases to isolate
  the engine's own work.
* Each phase keeps its best (minimum) time over the repetitions: noise on an
  otherwise idle machine only ever adds time.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from benchmarks import shapes
from benchmarks.targets import Library, prepare_engine

__all__ = [
    "Estimator",
    "FlowTimes",
    "best_of",
    "gc_paused",
    "time_flow",
]


@contextlib.contextmanager
def gc_paused(paused: bool) -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block if ``paused``."""
    was_enabled = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused and was_enabled:
            gc.enable()


@dataclass(frozen=True)
class FlowTimes:
    """Best phase times (seconds) of one shape at one size on one engine."""

    n: int
    build_s: float
    prepare_s: float
    run_s: float
    repeats: int
    #: Wall time of the first repetition, build to end of run; the estimator
    #: extrapolates from it because that is what one more measurement costs.
    first_total_s: float

    def per_atom_us(self, phase: str) -> float:
        """Microseconds per atom for ``phase`` ("build", "prepare" or "run")."""
        seconds: float = getattr(self, f"{phase}_s")
        return seconds / self.n * 1e6


def _check_succeeded(engine: Any, shape: str, n: int) -> None:
    """Refuse to report a time for a run that did not finish the flow.

    An engine that returned early would otherwise look impressively fast.
    Engines without TaskFlow's ``storage.get_flow_state()`` are trusted.
    """
    get_state = getattr(getattr(engine, "storage", None), "get_flow_state", None)
    if get_state is None:
        return
    state = get_state()
    # Both libraries' states compare equal to their plain string names.
    if state != "SUCCESS":
        raise RuntimeError(f"{shape} flow of {n} atoms ended in state {state!r}, not SUCCESS")


def time_flow(
    lib: Library,
    shape: str,
    mode: str,
    n: int,
    *,
    repeats: int,
    repeat_budget_s: float,
    gc_off: bool = False,
) -> FlowTimes:
    """Time build, load+prepare and run of ``shape`` at size ``n``.

    Repeats up to ``repeats`` times but stops once ``repeat_budget_s`` has
    been spent (after at least one repetition), so small flows get several
    samples and huge ones get one.
    """
    builds: list[float] = []
    prepares: list[float] = []
    runs: list[float] = []
    first_total = 0.0
    started = time.perf_counter()
    while len(runs) < max(1, repeats):
        gc.collect()
        with gc_paused(gc_off):
            t0 = time.perf_counter()
            flow = shapes.build(lib, shape, n)
            t1 = time.perf_counter()
            engine = lib.load(flow, mode)
            prepare_engine(engine)
            t2 = time.perf_counter()
            engine.run()
            t3 = time.perf_counter()
        builds.append(t1 - t0)
        prepares.append(t2 - t1)
        runs.append(t3 - t2)
        if len(runs) == 1:
            first_total = t3 - t0
            _check_succeeded(engine, shape, n)
        # Drop references before the next gc.collect() so the old engine's
        # cycles are reclaimed outside the timed region.
        del flow, engine
        if time.perf_counter() - started >= repeat_budget_s:
            break
    return FlowTimes(
        n=n,
        build_s=min(builds),
        prepare_s=min(prepares),
        run_s=min(runs),
        repeats=len(runs),
        first_total_s=first_total,
    )


def best_of(fn: Callable[[], Any], *, repeats: int) -> float:
    """Best wall time in seconds of ``fn()`` over ``repeats`` calls."""
    best = math.inf
    for _ in range(max(1, repeats)):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class Estimator:
    """Extrapolates how long one measurement at a bigger ``n`` will take.

    It fits ``t = c * n**k`` through the last two measured sizes and clamps
    ``k`` to [1, 3]: a flow never gets cheaper than linear as it grows (a
    smaller measured exponent only means fixed costs still dominate), and
    clamping above keeps one noisy pair from predicting absurd times.
    """

    def __init__(self) -> None:
        self._points: list[tuple[int, float]] = []

    def record(self, n: int, seconds: float) -> None:
        """Record that one measurement at size ``n`` took ``seconds``."""
        self._points.append((n, max(seconds, 1e-9)))

    def estimate(self, n: int) -> float | None:
        """Estimated seconds at size ``n``, or None with nothing recorded."""
        if not self._points:
            return None
        n1, t1 = self._points[-1]
        exponent = 1.0
        if len(self._points) >= 2:
            n0, t0 = self._points[-2]
            if n1 != n0:
                exponent = math.log(t1 / t0) / math.log(n1 / n0)
        exponent = min(max(exponent, 1.0), 3.0)
        return t1 * math.pow(n / n1, exponent)
