"""Logbook cost: flowkit's SQL backends beside TaskFlow's, in the same run.

Run from the repository root::

    python -m benchmarks.persistence            # SQLite (both libraries), resume, PostgreSQL if reachable
    python -m benchmarks.persistence --quick    # smaller flows, fewer repeats
    python -m benchmarks.persistence --commit-paths   # only: the two SQL commit paths side by side

What it measures, for a linear flow of no-op tasks:

- run cost per task with the logbook in an SQLite file: flowkit with the
  default durability (WAL, synchronous=NORMAL: survives a process crash) and
  with ``durability="full"`` (fsync on every commit: survives power loss),
  and TaskFlow 6.5.0's SQLAlchemy backend on SQLite;
- the raw cost of one SQLite commit in each mode, as the yardstick;
- resuming a 1,000-task flow that has 500 tasks done: load the flow detail
  in a new engine and run the rest;
- flowkit on PostgreSQL over loopback (``FLOWKIT_TEST_POSTGRES_URL``), when
  a server answers.

``--commit-paths`` measures instead what one durable per-step write costs
through each of the SQL store's two commit paths (the statements run on the
driver's cursor, or through SQLAlchemy Core), on SQLite, PostgreSQL
(``FLOWKIT_TEST_POSTGRES_URL``) and MySQL (``FLOWKIT_TEST_MYSQL_URL``) when
they answer: the numbers behind keeping both (see ``SQLStore._write_group``).

Numbers are reported, never asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.targets import Library, LibraryUnavailable, import_library

__all__ = ["main"]


def _noop_flow(lib: Library, n: int, name: str = "chain") -> Any:
    class Noop(lib.task.Task):  # type: ignore[misc, name-defined]
        def execute(self) -> None:
            return None

    return lib.linear_flow.Flow(name).add(*[Noop("t%d" % i) for i in range(n)])


def _flowkit_backend(url: str, durability: str = "normal") -> Any:
    from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend

    return SQLAlchemyBackend(url, durability=durability, table_prefix="bench_")


def _taskflow_backend(url: str) -> Any:
    import contextlib

    from taskflow.persistence import backends

    backend = backends.fetch({"connection": url})
    with contextlib.closing(backend.get_connection()) as conn:
        conn.upgrade()
    return backend


def _load(lib: Library, flow: Any, backend: Any) -> tuple[Any, Any, Any]:
    """An engine writing to ``backend``, with a fresh logbook and flow detail."""
    models = __import__(lib.name + ".persistence.models", fromlist=["models"])
    book = models.LogBook("bench")
    detail = models.FlowDetail(flow.name, uuid=str(uuid.uuid4()))
    book.add(detail)
    if lib.name == "taskflow":
        import contextlib

        with contextlib.closing(backend.get_connection()) as conn:
            conn.save_logbook(book)
    engine = lib.engines.load(flow, backend=backend, book=book, flow_detail=detail)
    return engine, book, detail


def _per_task_run(lib: Library, backend_factory: Callable[[], Any], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        backend = backend_factory()
        try:
            engine, _, _ = _load(lib, _noop_flow(lib, n), backend)
            engine.compile()
            engine.prepare()
            started = time.perf_counter()
            engine.run()
            best = min(best, time.perf_counter() - started)
        finally:
            backend.close()
    return best / n * 1e6


def _resume_seconds(lib: Library, backend_factory: Callable[[], Any], n: int) -> float:
    """Seconds to load a flow detail with ``n // 2`` tasks done into a new engine and finish it."""
    backend = backend_factory()
    try:
        flow = _noop_flow(lib, n)
        engine, book, detail = _load(lib, flow, backend)
        half = "t%d" % (n // 2 - 1)

        def suspend_at_half(state: Any, details: dict[str, Any]) -> None:
            if str(state) == "SUCCESS" and details.get("task_name", details.get("atom_name")) == half:
                engine.suspend()

        engine.atom_notifier.register("*", suspend_at_half)
        engine.run()
        started = time.perf_counter()
        again = lib.engines.load(_noop_flow(lib, n), backend=backend, book=book, flow_detail=detail)
        again.run()
        return time.perf_counter() - started
    finally:
        backend.close()


def _raw_sqlite_commit_us(path: str, synchronous: str, count: int = 300) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=%s" % synchronous)
        db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
        started = time.perf_counter()
        for i in range(count):
            db.execute("BEGIN")
            db.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i % 10, "x"))
            db.execute("COMMIT")
        return (time.perf_counter() - started) / count * 1e6
    finally:
        db.close()


def _commit_us(url: str, core: bool, count: int) -> float:
    """Microseconds per flush of one changed atom detail (one durable commit), through one commit path."""
    from flowkit.persistence.models import FlowDetail, LogBook, TaskDetail

    backend = _flowkit_backend(url)
    if core:
        # What a dialect without a native upsert gets: the SQLAlchemy Core path.
        backend._hot_sql = None
    try:
        with backend.get_connection() as conn:
            book, detail, atom = LogBook("bench"), FlowDetail("f"), TaskDetail("a")
            detail.add(atom)
            book.add(detail)
            conn.save_logbook(book)
            started = time.perf_counter()
            for i in range(count):
                atom.results = i
                conn.update_atom_details(atom)
                conn.flush()
            return (time.perf_counter() - started) / count * 1e6
    finally:
        backend.close()


def _commit_paths(tmp: str, quick: bool) -> None:
    """Print the cost of a durable per-step write through each commit path (best of interleaved rounds)."""
    urls: list[tuple[str, Callable[[], str]]] = [
        ("SQLite file", lambda: "sqlite:///%s/cp-%s.db" % (tmp, uuid.uuid4().hex))
    ]
    pg = _postgres_url()
    if pg is not None:
        urls.append(("PostgreSQL (loopback)", lambda: pg))
    my = _server_url("FLOWKIT_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
    if my is not None:
        urls.append(("MySQL (loopback)", lambda: my))
    count, rounds = (100, 3) if quick else (300, 7)
    print("%-24s %16s %16s %10s" % ("database", "driver cursor us", "Core us", "Core/raw"))
    for what, url in urls:
        best = {False: float("inf"), True: float("inf")}
        for _ in range(rounds):
            for core in (False, True):
                best[core] = min(best[core], _commit_us(url(), core, count))
        print("%-24s %16.1f %16.1f %10.2f" % (what, best[False], best[True], best[True] / best[False]))


def _server_url(env: str, default: str) -> str | None:
    url = os.environ.get(env, default)
    try:
        import sqlalchemy as sa

        from flowkit.persistence.backends.impl_sqlalchemy import normalize_url

        engine = sa.create_engine(normalize_url(url), connect_args={"connect_timeout": 2})
        try:
            with engine.connect():
                return url
        finally:
            engine.dispose()
    except Exception:
        return None


def _libpq_url(url: str) -> str:
    """``url`` as psycopg's own ``connect`` takes it (without SQLAlchemy's ``+psycopg`` driver name)."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def _postgres_url() -> str | None:
    url = os.environ.get("FLOWKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        with psycopg.connect(_libpq_url(url), connect_timeout=2):
            return url
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    """Run the persistence benchmarks and print a table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.persistence", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller flows and fewer repeats")
    parser.add_argument("--no-taskflow", action="store_true", help="measure flowkit only")
    parser.add_argument("--commit-paths", action="store_true", help="only compare the SQL store's two commit paths")
    args = parser.parse_args(argv)
    if args.commit_paths:
        with tempfile.TemporaryDirectory(prefix="flowkit-bench-") as tmp:
            _commit_paths(tmp, args.quick)
        return 0
    flowkit = import_library("flowkit")
    taskflow: Library | None = None
    if not args.no_taskflow:
        try:
            taskflow = import_library("taskflow")
        except LibraryUnavailable as error:
            print("TaskFlow not measured: %s (pip install -e '.[bench]')" % error)
    sizes = (10, 100) if args.quick else (10, 1000)
    taskflow_sizes = (10,) if args.quick else (10, 200)
    repeats = 2 if args.quick else 3
    resume_n = 200 if args.quick else 1000
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="flowkit-bench-") as tmp:

        def sqlite_url(tag: str) -> Callable[[], str]:
            def fresh() -> str:
                return "sqlite:///%s/%s-%s.db" % (tmp, tag, uuid.uuid4().hex)

            return fresh

        fk_normal = sqlite_url("fk")
        tf_file = sqlite_url("tf")
        normal_commit = _raw_sqlite_commit_us(os.path.join(tmp, "raw-normal.db"), "NORMAL")
        full_commit = _raw_sqlite_commit_us(os.path.join(tmp, "raw-full.db"), "FULL")
        rows.append(("raw SQLite commit (WAL, synchronous=NORMAL)", "1 commit", normal_commit))
        rows.append(("raw SQLite commit (WAL, synchronous=FULL)", "1 commit", full_commit))
        for n in sizes:
            us = _per_task_run(flowkit, lambda: _flowkit_backend(fk_normal()), n, repeats)
            rows.append(("flowkit SQLite, default durability", "%d tasks" % n, us))
            us = _per_task_run(flowkit, lambda: _flowkit_backend(fk_normal(), "full"), n, repeats)
            rows.append(('flowkit SQLite, durability="full"', "%d tasks" % n, us))
        if taskflow is not None:
            for n in taskflow_sizes:
                us = _per_task_run(taskflow, lambda: _taskflow_backend(tf_file()), n, 1)
                rows.append(("TaskFlow 6.5 SQLite", "%d tasks" % n, us))
        resume = _resume_seconds(flowkit, lambda: _flowkit_backend(fk_normal()), resume_n)
        rows.append(("flowkit resume, %d tasks with half done (s)" % resume_n, "whole resume", resume * 1e6))
        if taskflow is not None:
            tf_resume_n = 200 if args.quick else 1000
            resume = _resume_seconds(taskflow, lambda: _taskflow_backend(tf_file()), tf_resume_n)
            rows.append(("TaskFlow resume, %d tasks with half done (s)" % tf_resume_n, "whole resume", resume * 1e6))
        pg = _postgres_url()
        if pg is not None:
            us = _per_task_run(flowkit, lambda: _flowkit_backend(pg), 100, 1)
            rows.append(("flowkit PostgreSQL (loopback)", "100 tasks", us))
        else:
            print("PostgreSQL not reachable: not measured")
    print("%-48s %-14s %14s" % ("measurement", "flow", "us per task"))
    for what, flow, us in rows:
        if "resume" in what:
            print("%-48s %-14s %13.3fs" % (what, flow, us / 1e6))
        else:
            print("%-48s %-14s %14.1f" % (what, flow, us))
    _print_ratios(rows)
    return 0


def _print_ratios(rows: list[tuple[str, str, float]]) -> None:
    """TaskFlow's cost over flowkit's for the same measurement and flow size."""
    flowkit_rows = {(what.replace("flowkit", "").split(",")[0].strip(), flow): us for what, flow, us in rows
                    if what.startswith("flowkit") and "full" not in what}
    for what, flow, us in rows:
        if not what.startswith("TaskFlow"):
            continue
        kind = "resume" if "resume" in what else "SQLite"
        for (fk_kind, fk_flow), fk_us in flowkit_rows.items():
            if fk_kind.startswith(kind) and (fk_flow == flow or kind == "resume"):
                print("ratio TaskFlow/flowkit, %s %s: %.0fx" % (kind, flow, us / fk_us))
                break


if __name__ == "__main__":
    raise SystemExit(main())
