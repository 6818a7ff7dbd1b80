"""What metrics and tracing cost per atom: each on, both on, against both off, as ratios.

Run from the repository root::

    python -m benchmarks.observability                    # N=2000, serial and parallel
    python -m benchmarks.observability --baseline ../old  # also a flowkit checkout without the hooks

Each configuration runs in a fresh interpreter (metrics and tracing are
process-wide, and a fresh process keeps one configuration's garbage and
caches from the next); the configurations take turns, ``--repeats`` rounds,
and each keeps its best run.  A run is a linear flow of ``N`` tasks that
return a constant, so what is measured is the engine's per-atom cost plus
what observing it adds:

``off``        neither enabled (what every flowkit user runs by default)
``metrics``    :func:`flowkit.metrics.enable_metrics` into a fresh registry
``tracing``    :func:`flowkit.tracing.enable_tracing` with an SDK tracer
               provider and a batch span processor whose exporter drops the
               spans (export cost is the exporter's, not flowkit's)
``both``       both
``baseline``   with ``--baseline PATH``: ``off`` on the flowkit found at PATH
               (e.g. a ``git worktree`` of the commit before the hooks), the
               peer that shows what the hooks cost when nothing is enabled

It prints seconds per atom and each configuration's time / ``off`` time.
Not a test: nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["CONFIGS", "main", "measure"]

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("off", "metrics", "tracing", "both")


def _enable(config: str) -> None:
    if config in ("metrics", "both"):
        from prometheus_client import CollectorRegistry

        from flowkit.metrics import enable_metrics

        enable_metrics(CollectorRegistry())
    if config in ("tracing", "both"):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Dropping(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        from flowkit.tracing import enable_tracing

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropping()))
        enable_tracing(tracer_provider=provider)


def measure(config: str, n: int, mode: str) -> float:
    """Seconds per atom of one run of a linear flow of ``n`` tasks with ``config`` on (in this process)."""
    import gc

    import flowkit.engines
    from flowkit.patterns import linear_flow
    from flowkit.task import Task

    class Constant(Task):
        def execute(self) -> int:
            return 1

    _enable(config)
    options: dict[str, Any] = {"engine": mode}
    if mode == "parallel":
        options.update(executor="threads", max_workers=2)
    # One small run first: imports and first-use costs are not charged to the atoms.
    flowkit.engines.load(linear_flow.Flow("warm").add(*[Constant("w%d" % i) for i in range(10)]), **options).run()
    engine = flowkit.engines.load(linear_flow.Flow("f").add(*[Constant("t%d" % i) for i in range(n)]), **options)
    engine.prepare()
    gc.collect()
    started = time.perf_counter()
    engine.run()
    return (time.perf_counter() - started) / n


def _run_one(config: str, n: int, mode: str, flowkit_root: Path) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(flowkit_root), str(ROOT)])
    code = (
        "import json, sys; from benchmarks.observability import measure; "
        "print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), sys.argv[3])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, config, str(n), mode], env=env, capture_output=True, text=True, check=True
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.observability", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="tasks per flow (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; each configuration keeps its best")
    parser.add_argument("--modes", default="serial,parallel", help="engine modes (default %(default)s)")
    parser.add_argument("--baseline", type=Path, default=None, help="a flowkit checkout to run 'off' on too")
    args = parser.parse_args(argv)
    configs: list[tuple[str, str, Path]] = [(c, c, ROOT) for c in CONFIGS]
    if args.baseline is not None:
        configs.append(("baseline", "off", args.baseline.resolve()))
    print("per-atom cost, linear flow of %d tasks, best of %d (fresh process each)" % (args.n, args.repeats))
    for mode in args.modes.split(","):
        best: dict[str, float] = {}
        for _round in range(args.repeats):
            for label, config, root in configs:
                seconds = _run_one(config, args.n, mode, root)
                best[label] = min(seconds, best.get(label, seconds))
        print("\n%s engine" % mode)
        print("%-10s %12s %10s" % ("config", "us/atom", "x off"))
        for label, _config, _root in configs:
            print("%-10s %12.1f %10.2f" % (label, best[label] * 1e6, best[label] / best["off"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
