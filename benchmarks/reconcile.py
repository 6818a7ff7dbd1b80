"""Reconciliation throughput and latency: resources converged per second with 1 and 4 conductors.

``python -m benchmarks.reconcile [--url URL] [--resources N] [--conductors 1,4] [--latency-samples K]``

Each conductor is a ``flowkit reconcile`` process (a conductor with a driver
attached).  For each count it creates N resources of the kind ``bench_item``
(``new`` toward ``done``: one operation each, a one-task flow) in one
transaction, and times until all are converged: resources/s.  Then, with the
conductors idle, it sets the target of K converged resources one at a time
and reports the median time from ``set_target`` returning to the operation's
job being posted (the driver's poll) and to the resource being converged
again (claim, run, consume, settle).  No other library reconciles, so there is
no peer to compare with: these are flowkit's own figures, to compare between
runs, databases and conductor counts (the 4-conductor figure as a ratio of the
1-conductor one).  Not a timed test: nothing asserts on them.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flowkit import LinearFlow, Task
from flowkit.factories import flow_factory
from flowkit.reconcile import Reconciler, Resources, ResourceStatus, Rule, register

ROOT = Path(__file__).resolve().parent.parent
KIND = "bench_item"


class Make(Task):
    def execute(self, resource: dict[str, Any]) -> str:
        return str(resource["id"])


class Unmake(Task):
    def execute(self, resource: dict[str, Any]) -> str:
        return str(resource["id"])


@flow_factory("benchmarks.reconcile.make")
def make() -> LinearFlow:
    return LinearFlow("make").add(Make("make"))


@flow_factory("benchmarks.reconcile.unmake")
def unmake() -> LinearFlow:
    return LinearFlow("unmake").add(Unmake("unmake"))


RECONCILER = register(
    Reconciler(
        KIND,
        states=["new", "done"],
        rules=[
            Rule("make", "new", "done", flow="benchmarks.reconcile.make"),
            Rule("unmake", "done", "new", flow="benchmarks.reconcile.unmake"),
        ],
    )
)


def _start(url: str, board: str, count: int, log: Path) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    procs = []
    for n in range(count):
        command = [
            sys.executable, "-m", "flowkit.cli", "reconcile", "--kind", KIND, "--import", "benchmarks.reconcile",
            "--backend", url, "--board-name", board, "--name", "%s-c%d" % (board, n), "--poll", "0.05",
        ]  # fmt: skip
        with open(log, "a") as out:
            procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT))
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(60)


def _wait(predicate: Any, timeout: float, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the resources did not converge in %.0f s" % timeout)
        time.sleep(poll)


def run(url: str, resources: int, conductors: int, samples: int, log: Path) -> dict[str, float]:
    run_id = "b%s" % uuid.uuid4().hex[:8]
    with Resources(url) as store:
        store.backend.ensure_schema()
        procs = _start(url, run_id, conductors, log)
        try:
            time.sleep(1.0)  # let the processes import and open the database before the clock starts
            with store.begin() as conn:
                for n in range(resources):
                    store.create(KIND, "%s-%d" % (run_id, n), target="done", connection=conn)
            started = time.perf_counter()

            def converged() -> bool:
                counts = {r.status for r in store.list(kind=KIND) if r.id.startswith(run_id)}
                return counts == {ResourceStatus.CONVERGED}

            _wait(converged, 600, poll=0.05)
            elapsed = time.perf_counter() - started
            to_post, to_done = [], []
            for n in range(samples):
                resource_id = "%s-%d" % (run_id, n)
                target = "new" if store.get(KIND, resource_id).target == "done" else "done"
                store.set_target(KIND, resource_id, target)
                t0 = time.time()
                _wait(
                    lambda rid=resource_id: store.get(KIND, rid).job is not None or store.get(KIND, rid).converged,
                    60,
                    0.002,
                )
                posted = store.operations(KIND, resource_id)[-1].started_at
                _wait(lambda rid=resource_id: store.get(KIND, rid).converged, 60, 0.002)
                to_post.append(max(0.0, posted - t0))
                to_done.append(time.time() - t0)
        finally:
            _stop(procs)
    return {
        "per_second": resources / elapsed,
        "post_ms": statistics.median(to_post) * 1000,
        "converged_ms": statistics.median(to_done) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reconcile", description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", default=None, help="database URL (repeatable; default SQLite)")
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--conductors", default="1,4")
    parser.add_argument("--latency-samples", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        urls = args.url or ["sqlite:///%s" % os.path.join(tmp, "flowkit.db")]
        log = Path(tmp) / "conductors.log"
        print(
            "%-12s %10s %14s %18s %20s %8s"
            % ("database", "conductors", "resources/s", "set_target->post", "set_target->done", "ratio")
        )
        for url in urls:
            first = None
            for count in (int(c) for c in args.conductors.split(",")):
                got = run(url, args.resources, count, args.latency_samples, log)
                first = first or got["per_second"]
                print(
                    "%-12s %10d %14.1f %15.1f ms %17.1f ms %7.2fx"
                    % (url.split(":", 1)[0], count, got["per_second"], got["post_ms"], got["converged_ms"],
                       got["per_second"] / first)
                )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
