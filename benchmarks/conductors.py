"""Job boards + conductors: flowkit's Redis board beside TaskFlow 6.5's Redis jobboard.

``python -m benchmarks.conductors`` measures, for each library, in the same
run on the same machine, with the same Redis server and the same kind of
logbook backend (PostgreSQL if reachable, else a SQLite file):

- **claims per second**: ``--jobs`` one-task jobs are posted first; then 4
  conductor processes (blocking conductors, serial engines), already
  started, connected and idle, are told to go; the clock runs from "go"
  until the board is empty.  Every job is claimed, run, and consumed, so
  this is the rate at which 4 conductors get through jobs whose work is
  nothing.
- **post-to-complete latency**: one idle conductor process; the parent
  posts a one-task job and polls the job's state every millisecond until it
  reads COMPLETE; ``--latency-runs`` times, median and 95th percentile.

Both libraries run with their default settings (TaskFlow's blocking
conductor looks for jobs every 0.5 s when the board is idle; flowkit's
blocks in ``board.wait()``, which Redis pub/sub wakes).  The report ends
with TaskFlow / flowkit ratios (higher is better for flowkit).  Not a test:
nothing asserts on timing.

Children are ``python -m benchmarks.conductors child ...``: one conductor
each, which prints ``ready`` once connected, waits for a go file, runs until
the board is empty, and exits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["main", "one_task_flow", "taskflow_one_task_flow", "Result"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS = os.environ.get("FLOWKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DEFAULT_POSTGRES = os.environ.get("FLOWKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CONDUCTORS = 4


# -- the flows (registered by name in the conductor processes) -------------------------


def one_task_flow() -> Any:
    """flowkit: one no-op task."""
    from flowkit.task import Task

    class Noop(Task):
        def execute(self) -> int:
            return 1

    return Noop("noop")


def taskflow_one_task_flow() -> Any:
    """TaskFlow: one no-op task."""
    from taskflow import task

    class Noop(task.Task):
        def execute(self) -> int:
            return 1

    return Noop("noop")


# -- the two libraries behind one interface ----------------------------------------------


class _Side:
    """Posting, counting and conducting for one library."""

    library = ""

    def __init__(self, redis_url: str, persistence_url: str, board_name: str) -> None:
        self.redis_url = redis_url
        self.persistence_url = persistence_url
        self.board_name = board_name

    def post(self) -> Any:
        raise NotImplementedError

    def pending(self) -> int:
        raise NotImplementedError

    def is_complete(self, job: Any) -> bool:
        raise NotImplementedError

    def conductor(self, name: str) -> tuple[Callable[[], None], Callable[[], None]]:
        """``(run, stop)`` of a blocking conductor on this board."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _Flowkit(_Side):
    library = "flowkit"

    def __init__(self, redis_url: str, persistence_url: str, board_name: str) -> None:
        super().__init__(redis_url, persistence_url, board_name)
        from flowkit.jobs.backends import fetch as fetch_board
        from flowkit.persistence.backends import fetch as fetch_backend

        self.persistence = fetch_backend(persistence_url)
        with self.persistence.get_connection() as conn:
            conn.upgrade()
        self.board = fetch_board(board_name, {"board": "redis", "url": redis_url}, persistence=self.persistence)
        self.board.connect()

    def post(self) -> Any:
        from flowkit.conductors import post_flow

        return post_flow(self.board, one_task_flow)

    def pending(self) -> int:
        return self.board.job_count

    def is_complete(self, job: Any) -> bool:
        from flowkit.jobs.base import JobState

        return bool(self.board.state_of(job) == JobState.COMPLETE)

    def conductor(self, name: str) -> tuple[Callable[[], None], Callable[[], None]]:
        from flowkit.conductors import fetch
        from flowkit.factories import FactoryRegistry

        # A conductor runs only the factories it is given: here, the one the jobs name.
        factories = FactoryRegistry(entry_points=False)
        factories.register(one_task_flow)
        conductor = fetch("blocking", name, self.board, persistence=self.persistence, factories=factories)
        return conductor.run, conductor.stop

    def close(self) -> None:
        self.board.close()
        self.persistence.close()


class _TaskFlow(_Side):
    library = "taskflow"

    def __init__(self, redis_url: str, persistence_url: str, board_name: str) -> None:
        super().__init__(redis_url, persistence_url, board_name)
        from urllib.parse import urlparse

        from taskflow.jobs import backends as job_backends
        from taskflow.persistence import backends as persistence_backends

        url = persistence_url
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]  # TaskFlow defaults to psycopg2
        self.persistence = persistence_backends.fetch({"connection": url})
        conn = self.persistence.get_connection()
        conn.upgrade()
        conn.close()
        parsed = urlparse(redis_url)
        conf = {
            "board": "redis",
            "host": parsed.hostname or "127.0.0.1",
            "port": parsed.port or 6379,
            "db": int((parsed.path or "/0").strip("/") or 0),
            "namespace": board_name.encode(),
        }
        self.board = job_backends.fetch(board_name, conf, persistence=self.persistence)
        self.board.connect()

    def post(self) -> Any:
        from taskflow import engines
        from taskflow.persistence import models

        book = models.LogBook("bench")
        flow_detail = models.FlowDetail("noop", str(uuid.uuid4()))
        book.add(flow_detail)
        conn = self.persistence.get_connection()
        conn.save_logbook(book)
        conn.close()
        engines.save_factory_details(flow_detail, taskflow_one_task_flow, (), {}, backend=self.persistence)
        return self.board.post("noop", book=book, details={"flow_uuid": flow_detail.uuid, "store": {}})

    def pending(self) -> int:
        return int(self.board.job_count)

    def is_complete(self, job: Any) -> bool:
        from taskflow import states

        return bool(job.state == states.COMPLETE)

    def conductor(self, name: str) -> tuple[Callable[[], None], Callable[[], None]]:
        from taskflow.conductors import backends

        conductor = backends.fetch("blocking", name, self.board, persistence=self.persistence, engine="serial")
        return conductor.run, conductor.stop

    def close(self) -> None:
        self.board.close()
        self.persistence.close()


_SIDES: dict[str, type[_Side]] = {"flowkit": _Flowkit, "taskflow": _TaskFlow}


# -- the child process -------------------------------------------------------------------


def _child(args: argparse.Namespace) -> int:
    side = _SIDES[args.library](args.redis, args.persistence, args.board_name)
    run, stop = side.conductor(args.name)
    print("ready", flush=True)
    go = Path(args.go)
    while not go.exists():
        time.sleep(0.001)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    stop_file = Path(args.stop)
    while not stop_file.exists():
        time.sleep(0.005)
    stop()
    worker.join(30)
    side.close()
    return 0


class _Children:
    def __init__(self, library: str, count: int, redis_url: str, persistence_url: str, board_name: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-conductors-"))
        self.go = self.tmp / "go"
        self.stop_file = self.tmp / "stop"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable, "-m", "benchmarks.conductors", "child",
                    "--library", library, "--name", "%s-%d" % (library, i),
                    "--redis", redis_url, "--persistence", persistence_url, "--board-name", board_name,
                    "--go", str(self.go), "--stop", str(self.stop_file),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
            for i in range(count)
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError("%s conductor did not start (exit %s)" % (library, proc.wait()))

    def start(self) -> None:
        self.go.touch()

    def finish(self) -> None:
        self.stop_file.touch()
        for proc in self.procs:
            proc.wait(60)


# -- measurements --------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One library's numbers."""

    library: str
    jobs: int
    claims_per_second: float
    latency_median_ms: float
    latency_p95_ms: float


def _wait(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(poll)


def _throughput(library: str, jobs: int, redis_url: str, persistence_url: str, timeout: float) -> float:
    board_name = "bench-%s-%s" % (library, uuid.uuid4().hex[:8])
    side = _SIDES[library](redis_url, persistence_url, board_name)
    try:
        for _ in range(jobs):
            side.post()
        children = _Children(library, CONDUCTORS, redis_url, persistence_url, board_name)
        try:
            started = time.perf_counter()
            children.start()
            _wait(lambda: side.pending() == 0, timeout, "%s conductors to finish %d jobs" % (library, jobs), 0.005)
            elapsed = time.perf_counter() - started
        finally:
            children.finish()
    finally:
        side.close()
    return jobs / elapsed


def _latency(library: str, runs: int, redis_url: str, persistence_url: str, timeout: float) -> list[float]:
    board_name = "bench-%s-%s" % (library, uuid.uuid4().hex[:8])
    side = _SIDES[library](redis_url, persistence_url, board_name)
    samples = []
    try:
        children = _Children(library, 1, redis_url, persistence_url, board_name)
        try:
            children.start()
            for i in range(runs + 1):
                started = time.perf_counter()
                job = side.post()
                _wait(lambda job=job: side.is_complete(job), timeout, "%s job to complete" % library)
                if i:  # the first one warms the conductor up
                    samples.append(time.perf_counter() - started)
        finally:
            children.finish()
    finally:
        side.close()
    return samples


def _persistence_url(requested: str | None) -> str:
    if requested:
        return requested
    try:
        import psycopg

        psycopg.connect(DEFAULT_POSTGRES, connect_timeout=3).close()
        return DEFAULT_POSTGRES
    except Exception:
        return "sqlite:///%s" % (Path(tempfile.mkdtemp(prefix="bench-conductors-")) / "logbook.db")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.conductors``: measure both libraries and print a table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conductors", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("child")
    for option in ("--library", "--name", "--redis", "--persistence", "--board-name", "--go", "--stop"):
        child.add_argument(option, required=True)
    parser.add_argument("--jobs", type=int, default=500, help="jobs raced over by 4 conductors (default 500)")
    parser.add_argument("--latency-runs", type=int, default=30, help="post-to-complete samples (default 30)")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis URL (default %(default)s)")
    parser.add_argument("--persistence", default=None, help="logbook URL (default: local PostgreSQL, else SQLite)")
    parser.add_argument("--no-taskflow", action="store_true", help="measure flowkit only")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on a measurement after this long")
    args = parser.parse_args(argv)
    if args.command == "child":
        return _child(args)

    persistence_url = _persistence_url(args.persistence)
    libraries = ["flowkit"]
    if not args.no_taskflow:
        try:
            import taskflow  # noqa: F401
        except ImportError:
            print("TaskFlow is not importable (pip install taskflow==6.5.0 redis): measuring flowkit alone",
                  file=sys.stderr)
        else:
            libraries.append("taskflow")
    print("redis %s, logbooks %s, %d CPUs, load %.2f" % (
        args.redis, persistence_url.split("@")[-1], os.cpu_count() or 0, os.getloadavg()[0]), file=sys.stderr)
    results = []
    for library in libraries:
        print("%s: %d jobs, %d conductors ..." % (library, args.jobs, CONDUCTORS), file=sys.stderr)
        rate = _throughput(library, args.jobs, args.redis, persistence_url, args.timeout)
        print("%s: latency, %d runs ..." % (library, args.latency_runs), file=sys.stderr)
        samples = _latency(library, args.latency_runs, args.redis, persistence_url, args.timeout)
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        results.append(Result(library, args.jobs, rate, statistics.median(samples) * 1e3, p95 * 1e3))

    print("| library | claims/s (4 conductors, %d jobs) | post-to-complete median | p95 |" % args.jobs)
    print("|---|---|---|---|")
    for r in results:
        print("| %s | %.1f | %.1f ms | %.1f ms |" % (r.library, r.claims_per_second, r.latency_median_ms,
                                                   r.latency_p95_ms))
    if len(results) == 2:
        fk, tf = results
        print()
        print("flowkit / TaskFlow: claims/s %.1fx, latency (median) %.1fx lower, p95 %.1fx lower" % (
            fk.claims_per_second / tf.claims_per_second,
            tf.latency_median_ms / fk.latency_median_ms,
            tf.latency_p95_ms / fk.latency_p95_ms,
        ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
