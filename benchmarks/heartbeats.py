"""Heartbeats and retry policies: what they cost when nothing goes wrong.

``python -m benchmarks.heartbeats`` measures, in one run, each figure beside
its peer (the same work without the feature), and prints the ratios:

- **heartbeat cost per call**: a task with ``heartbeat_timeout=`` calls
  ``self.heartbeat()`` ``--calls`` times (default 200,000) inside its
  ``execute``, timed there with ``time.perf_counter``, against the same loop
  calling a method that does nothing; with and without details (a small
  dict), on a thread pool (``engine="parallel"``, threads) and on a process
  pool (where beats are sent to the engine at most every
  ``flowkit.types.heartbeat.SEND_EVERY`` seconds).  The difference of the two
  loops, divided by the calls, is the cost of one heartbeat.
- **an atom with a retry policy and no failures**: a linear flow of
  ``--atoms`` (default 2,000) tasks that return at once, run with a
  ``RetryPolicy`` on every task and without, in the serial and the parallel
  engine; best of ``--repeats`` runs each.  The same for
  ``heartbeat_timeout=`` on every task (each attempt watched, and, in the
  serial engine, run on a thread of its own).

Not a test: nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

from flowkit.task import Task

__all__ = ["main", "Beating", "Noop"]


class Beating(Task):
    """Times ``calls`` heartbeats and ``calls`` calls of a method that does nothing; returns both (seconds)."""

    def __init__(self, name: str, calls: int, details: bool, **options: Any) -> None:
        super().__init__(name=name, provides="timings", **options)
        self.calls = calls
        self.details = details

    def nothing(self, details: Any = None) -> None:
        return None

    def execute(self) -> list[float]:
        calls = range(self.calls)
        details = {"stage": "copying", "done": 12345} if self.details else None
        start = time.perf_counter()
        for _ in calls:
            self.nothing(details)
        baseline = time.perf_counter() - start
        start = time.perf_counter()
        for _ in calls:
            self.heartbeat(details)
        beating = time.perf_counter() - start
        return [baseline, beating]


class Noop(Task):
    """Returns at once."""

    def execute(self) -> None:
        return None


def _per_call(engine_options: dict[str, Any], calls: int, details: bool, repeats: int) -> tuple[float, float]:
    """(µs per call of the no-op method, µs per heartbeat), best of ``repeats``."""
    import flowkit.engines
    from flowkit.patterns import linear_flow

    best: tuple[float, float] | None = None
    for _ in range(repeats):
        flow = linear_flow.Flow("beat").add(Beating("beat", calls, details, heartbeat_timeout=60.0))
        engine = flowkit.engines.load(flow, **engine_options)
        engine.run()
        baseline, beating = engine.storage.fetch("timings")
        pair = (baseline / calls * 1e6, beating / calls * 1e6)
        if best is None or pair[1] < best[1]:
            best = pair
    assert best is not None
    return best


def _flow_seconds(
    engine_options: dict[str, Any], atoms: int, variants: dict[str, dict[str, Any]], repeats: int
) -> dict[str, float]:
    """Best wall time, per variant, of a linear flow of ``atoms`` no-op tasks made with the variant's options.

    The variants take turns, run after run (after one warm-up run each), so a
    change in the machine's load hits all of them.
    """
    import flowkit.engines
    from flowkit.patterns import linear_flow

    best = {name: float("inf") for name in variants}
    for run in range(repeats + 1):
        for name, options in variants.items():
            flow = linear_flow.Flow("chain").add(*(Noop("t%d" % i, **options) for i in range(atoms)))
            engine = flowkit.engines.load(flow, **engine_options)
            gc.collect()
            start = time.perf_counter()
            engine.run()
            if run:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


MODES: dict[str, dict[str, Any]] = {
    "serial": {"engine": "serial"},
    "parallel": {"engine": "parallel", "executor": "threads", "max_workers": 2},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heartbeats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000, help="heartbeats per measurement")
    parser.add_argument("--atoms", type=int, default=2000, help="tasks in the flow of the per-atom measurements")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement, best kept")
    parser.add_argument("--quick", action="store_true", help="20,000 calls, 500 atoms, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.atoms, args.repeats = 20_000, 500, 3

    from flowkit import RetryPolicy

    print("heartbeat cost per call (%d calls, best of %d)" % (args.calls, args.repeats))
    print("  %-28s %12s %12s %12s" % ("where", "no-op call", "heartbeat", "difference"))
    places = {
        "threads": MODES["parallel"],
        "processes": {"engine": "parallel", "executor": "processes", "max_workers": 1},
    }
    for place, options in places.items():
        for details in (False, True):
            baseline, beating = _per_call(options, args.calls, details, args.repeats)
            label = "%s, %s" % (place, "details" if details else "no details")
            print("  %-28s %10.3f us %10.3f us %10.3f us" % (label, baseline, beating, beating - baseline))

    print()
    print("a flow of %d tasks that succeed (best of %d): with the option / without" % (args.atoms, args.repeats))
    print("  %-10s %-30s %10s %10s %8s" % ("engine", "option", "without", "with", "ratio"))
    policy = RetryPolicy(max_attempts=3, initial_delay=1.0)
    variants = {
        "without": {},
        "retry_policy=RetryPolicy(...)": {"retry_policy": policy},
        "heartbeat_timeout=60": {"heartbeat_timeout": 60.0},
    }
    for mode, options in MODES.items():
        best = _flow_seconds(options, args.atoms, variants, args.repeats)
        without = best.pop("without")
        for label, seconds in best.items():
            print(
                "  %-10s %-30s %8.1f ms %8.1f ms %8.3f" % (mode, label, without * 1e3, seconds * 1e3, seconds / without)
            )


if __name__ == "__main__":
    main()
