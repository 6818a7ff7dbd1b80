"""Parked flows: wake-up latency, rows and threads, flowkit's SQL job board beside DBOS.

``python -m benchmarks.waits`` parks ``--flows`` flows (default 10,000;
``--quick``: 1,000), each "sleep until T_i, then stamp", and measures, for
flowkit and for DBOS, in the same run, on the same kind of database (a
SQLite file, then PostgreSQL; ``--databases`` picks):

- **flowkit**: each flow is ``[Sleep("nap", until=T_i) -> Stamp]`` posted as a
  job on the SQL job board (``flowkit.conductors.post_flow``), logbooks in the
  same database; 2 conductor processes (blocking conductors, serial engines,
  default settings) claim the jobs, run each flow until it is WAITING, park
  the job until ``T_i`` and hold nothing while it waits; when ``T_i`` comes a
  conductor claims the job again and resumes the flow.
- **DBOS**: each flow is a ``@DBOS.workflow()`` that calls
  ``DBOS.sleep(T_i - time.time())`` and then a ``@DBOS.step()`` stamp,
  started with ``DBOS.start_workflow`` by 2 DBOS processes (half the
  workflows each) on a system database of the same kind.

``Stamp`` (a task, or a step) first reads ``time.time()``, then appends it
to a file; the wake-up latency of a flow is that time minus its ``T_i``.
Deadlines are spread evenly over ``--window`` seconds (default 20), starting
once every flow can be parked: a warm-up round (``--warmup`` flows) measures
how fast this machine parks flows, and the first deadline is set that long
for the N flows, times 1.5, plus 3 s, after they start being posted.  The
report says if parking still ran past the first deadline.

Reported per library and database:

- wake-up latency p50, p99 and max (each flow must stamp exactly once; the
  count of flows that stamped twice or never is reported too);
- rows and bytes per parked flow: the rows of the library's tables counted
  just before the N flows are posted and again once all of them are parked,
  the difference divided by N.  "Row bytes" is the stored size of the rows
  (PostgreSQL ``pg_column_size`` of each row, SQLite's ``dbstat`` payload of
  the tables); "disk" is the growth of tables and indexes as allocated
  (``pg_total_relation_size``, SQLite ``dbstat`` pages);
- threads of each of the 2 processes while idle and while the N flows are
  parked (``/proc/PID/status``), and their resident memory growth per
  parked flow;
- flows woken per second, from the first deadline to the last stamp: when
  deadlines come faster than that, the latency is the backlog's;
- warning and error lines the processes logged (their stderr is kept in
  files, not shown), with the first of them.

A line at the end of each database gives flowkit / DBOS ratios (below 1:
flowkit is lower).  Not a test: nothing asserts on timing.  PostgreSQL runs
in fresh databases (``CREATE DATABASE``, dropped afterwards) on the server
of ``$FLOWKIT_TEST_POSTGRES_URL``; DBOS is measured only when importable
(``pip install dbos``).

Children are ``python -m benchmarks.waits child ...``: one conductor or one
DBOS process each, which prints ``ready`` once connected and runs until a
stop file appears.
"""

from __future__ import annotations

import argparse
import datetime
import json
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

from benchmarks.report import Table, fmt_bytes, render

__all__ = ["main", "sleep_then_stamp", "Result"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = os.environ.get("FLOWKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PROCESSES = 2
BOARD = "bench-waits"
POST_BATCH = 500


# -- what a flow does when it wakes -------------------------------------------------------


def _stamp(stamp_dir: str, index: int, until: float) -> float:
    """Read the time first, then record ``index until stamp`` in this process's stamp file."""
    now = time.time()
    with open(os.path.join(stamp_dir, "stamps-%d.txt" % os.getpid()), "a") as out:
        out.write("%d %r %r\n" % (index, until, now))
    return now


def sleep_then_stamp(index: int, until: float, stamp_dir: str) -> Any:
    """flowkit: ``[Sleep("nap", until=until) -> Stamp]`` (``until`` in epoch seconds)."""
    from flowkit.patterns.linear_flow import Flow
    from flowkit.task import Task
    from flowkit.waits import Sleep

    class Stamp(Task):
        def execute(self) -> float:
            return _stamp(stamp_dir, index, until)

    flow = Flow("wait-%d" % index)
    flow.add(Sleep("nap", until=datetime.datetime.fromtimestamp(until, datetime.timezone.utc)), Stamp("stamp"))
    return flow


# -- the databases --------------------------------------------------------------------------


class _Database:
    """A fresh database of one kind for one library, and the counts taken on it."""

    def __init__(self, kind: str, library: str, tmp: Path, postgres: str) -> None:
        import sqlalchemy as sa

        self.kind = kind
        self.library = library
        self.name = None
        if kind == "sqlite":
            path = tmp / ("%s.sqlite" % library)
            self.url = "sqlite:///%s" % path
            sa_url = self.url
        else:
            self.name = "bench_waits_%s_%s" % (library, uuid.uuid4().hex[:8])
            self._admin(postgres, "CREATE DATABASE %s" % self.name)
            base = sa.make_url(postgres)
            self.url = base.set(database=self.name).render_as_string(hide_password=False)
            sa_url = sa.make_url(self.url).set(drivername="postgresql+psycopg")
        self.postgres = postgres
        # DBOS keeps its tables in the "dbos" schema on PostgreSQL; flowkit's are the only ones in "public".
        self.schema = "dbos" if library == "dbos" else "public"
        self.engine = sa.create_engine(sa_url)

    @staticmethod
    def _admin(postgres: str, statement: str) -> None:
        import psycopg

        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def scalar(self, query: str) -> int | None:
        """The query's one number; None when it cannot be read just now."""
        import sqlalchemy as sa

        try:
            with self.engine.connect() as conn:
                return int(conn.execute(sa.text(query)).scalar() or 0)
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return None  # SQLite: a writer holds the lock a moment; PostgreSQL: the schema is not made yet

    def analyze(self) -> None:
        """Refresh the planner's statistics of the library's tables."""
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            for table in self.tables():
                conn.execute(
                    sa.text(
                        'ANALYZE "%s"' % table if self.kind == "sqlite" else 'ANALYZE "%s"."%s"' % (self.schema, table)
                    )
                )
            conn.commit()

    def tables(self) -> list[str]:
        import sqlalchemy as sa

        return [
            t
            for t in sa.inspect(self.engine).get_table_names(schema=None if self.kind == "sqlite" else self.schema)
            if not t.startswith("sqlite_")
        ]

    def usage(self) -> tuple[int, int, int]:
        """(rows, row bytes, disk bytes) of the library's tables now."""
        import sqlalchemy as sa

        rows = row_bytes = disk = 0
        with self.engine.connect() as conn:
            for table in self.tables():
                if self.kind == "sqlite":
                    rows += int(conn.execute(sa.text('SELECT count(*) FROM "%s"' % table)).scalar() or 0)
                    row_bytes += int(
                        conn.execute(
                            sa.text("SELECT coalesce(sum(payload), 0) FROM dbstat WHERE name = :t"), {"t": table}
                        ).scalar()
                        or 0
                    )
                else:
                    qualified = '"%s"."%s"' % (self.schema, table)
                    count, size = conn.execute(
                        sa.text("SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM %s t" % qualified)
                    ).one()
                    rows += int(count)
                    row_bytes += int(size)
                    disk += int(
                        conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {"t": qualified}).scalar() or 0
                    )
            if self.kind == "sqlite":
                # Every b-tree page in use: tables and indexes as allocated.
                disk = int(conn.execute(sa.text("SELECT coalesce(sum(pgsize), 0) FROM dbstat")).scalar() or 0)
        return rows, row_bytes, disk

    def parked(self) -> int | None:
        """How many flows are parked now (None: cannot be read just now)."""
        if self.library == "flowkit":
            return self.scalar("SELECT count(*) FROM flowkit_jobs WHERE parked = 1 AND state = 'UNCLAIMED'")
        table = "operation_outputs" if self.kind == "sqlite" else "dbos.operation_outputs"
        return self.scalar(
            "SELECT count(*) FROM %s o WHERE o.function_name = 'DBOS.sleep' AND NOT EXISTS "
            "(SELECT 1 FROM %s s WHERE s.workflow_uuid = o.workflow_uuid AND s.function_name <> 'DBOS.sleep')"
            % (table, table)
        )

    def close(self) -> None:
        self.engine.dispose()
        if self.name is not None:
            self._admin(self.postgres, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.name)


# -- the child processes ----------------------------------------------------------------------


def _flowkit_child(args: argparse.Namespace) -> int:
    from flowkit.conductors import fetch
    from flowkit.factories import FactoryRegistry
    from flowkit.jobs.backends import fetch as fetch_board
    from flowkit.persistence.backends import fetch as fetch_backend

    persistence = fetch_backend(args.db)
    board = fetch_board(BOARD, {"board": "sql"}, persistence=persistence)
    board.connect()
    # A conductor runs only the factories it is given: here, the one the jobs name.
    factories = FactoryRegistry(entry_points=False)
    factories.register(sleep_then_stamp)
    conductor = fetch("blocking", args.name, board, persistence=persistence, factories=factories)
    worker = threading.Thread(target=conductor.run, daemon=True)
    worker.start()
    print("ready", flush=True)
    _wait_for_file(Path(args.control) / "stop")
    conductor.stop()
    worker.join(60)
    board.close()
    persistence.close()
    return 0


def _dbos_child(args: argparse.Namespace) -> int:
    from dbos import DBOS

    DBOS(
        config={
            "name": "bench-waits",
            "system_database_url": args.db,
            "log_level": "WARNING",
            "executor_id": args.name,
            "application_version": "bench-waits",
        }
    )

    @DBOS.step()
    def stamp(index: int, until: float, stamp_dir: str) -> float:
        return _stamp(stamp_dir, index, until)

    @DBOS.workflow()
    def sleep_then_stamp(index: int, until: float, stamp_dir: str) -> float:
        DBOS.sleep(until - time.time())
        return float(stamp(index, until, stamp_dir))

    DBOS.launch()
    print("ready", flush=True)
    control = Path(args.control)
    parent = os.getppid()
    phase = 0
    while True:
        order = control / ("phase-%d.json" % phase)
        stop = control / "stop"
        while not order.exists() and not stop.exists() and os.getppid() == parent:
            time.sleep(0.002)
        if not order.exists():
            break
        plan = json.loads(order.read_text())
        for index in range(args.number, plan["count"], PROCESSES):
            until = plan["t0"] + plan["window"] * index / max(1, plan["count"] - 1)
            DBOS.start_workflow(sleep_then_stamp, index, until, plan["stamp_dir"])
        phase += 1
    DBOS.destroy(destroy_registry=True)
    return 0


def _wait_for_file(path: Path) -> None:
    parent = os.getppid()
    while not path.exists() and os.getppid() == parent:  # an orphan stops too
        time.sleep(0.01)


def _proc_status(pid: int) -> tuple[int, int]:
    """(threads, resident bytes) of process ``pid``."""
    threads = rss = 0
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return threads, rss


class _Children:
    def __init__(self, library: str, db_url: str, control: Path) -> None:
        self.control = control
        # What the processes log (DBOS's warnings, a conductor's errors) is counted for the report.
        self.logs = [control / ("%s-%d.log" % (library, i)) for i in range(PROCESSES)]
        self._log_files = [log.open("w") for log in self.logs]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.waits",
                    "child",
                    "--library",
                    library,
                    "--name",
                    "%s-%d" % (library, i),
                    "--number",
                    str(i),
                    "--db",
                    db_url,
                    "--control",
                    str(control),
                ],
                stdout=subprocess.PIPE,
                stderr=self._log_files[i],
                text=True,
                env=env,
                cwd=ROOT,
            )
            for i in range(PROCESSES)
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                self.finish()
                raise RuntimeError("a %s process did not start (exit %s)" % (library, proc.poll()))

    def logged(self) -> tuple[int, str]:
        """How many lines the processes logged as warnings or errors, and the first of them."""
        count, first = 0, ""
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if "WARNING" in line or "ERROR" in line or line.startswith("Traceback"):
                    count += 1
                    first = first or line.strip()
        return count, first

    def status(self) -> list[tuple[int, int]]:
        return [_proc_status(proc.pid) for proc in self.procs]

    def finish(self) -> None:
        (self.control / "stop").touch()
        for proc in self.procs:
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._log_files:
            log.close()


# -- one library on one database ----------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One library's numbers on one database."""

    database: str
    library: str
    flows: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rows: float  # per parked flow
    row_bytes: float
    disk_bytes: float
    threads_idle: tuple[int, ...]
    threads_parked: tuple[int, ...]
    rss_bytes: float  # resident growth of the processes per parked flow
    park_seconds: float  # from the first post or start until all were parked
    late_park_seconds: float  # how long parking ran past the first deadline (0: it did not)
    wakes_per_second: float  # flows woken per second, from the first deadline to the last stamp
    parked_at_once: int  # the most flows parked at one time (all of them unless parking ran late)
    missing: int
    duplicated: int
    logged: int  # warning and error lines the processes logged
    first_logged: str


class _Run:
    """Flows of one library on one fresh database, in rounds (``phase``)."""

    def __init__(self, kind: str, library: str, tmp: Path, postgres: str, timeout: float) -> None:
        self.library = library
        self.tmp = tmp / ("%s-%s" % (kind, library))
        self.tmp.mkdir()
        self.control = self.tmp / "control"
        self.control.mkdir()
        self.timeout = timeout
        self.db = _Database(kind, library, self.tmp, postgres)
        self.phase = 0
        self.board: Any = None
        self.persistence: Any = None
        if library == "flowkit":
            from flowkit.jobs.backends import fetch as fetch_board
            from flowkit.persistence.backends import fetch as fetch_backend

            self.persistence = fetch_backend(self.db.url)
            self.board = fetch_board(BOARD, {"board": "sql"}, persistence=self.persistence)
            self.board.connect()
        self.children = _Children(library, self.db.url, self.control)

    def start(self, count: int, t0: float, window: float) -> Path:
        """Post or start ``count`` flows due from ``t0`` over ``window`` s; returns their stamp directory."""
        stamp_dir = self.tmp / ("stamps-%d" % self.phase)
        stamp_dir.mkdir()
        if self.library == "flowkit":
            from flowkit.conductors import post_flow

            for first in range(0, count, POST_BATCH):
                with self.board.begin() as conn:
                    for index in range(first, min(count, first + POST_BATCH)):
                        until = t0 + window * index / max(1, count - 1)
                        post_flow(self.board, sleep_then_stamp, [index, until, str(stamp_dir)], connection=conn)
        else:
            plan = {"count": count, "t0": t0, "window": window, "stamp_dir": str(stamp_dir)}
            staged = self.control / ("phase-%d.tmp" % self.phase)
            staged.write_text(json.dumps(plan))
            staged.rename(self.control / ("phase-%d.json" % self.phase))
        self.phase += 1
        return stamp_dir

    def wait_parked(self, count: int, stamp_dir: Path) -> tuple[float, int]:
        """Block until each of ``count`` flows is parked or has already woken; the time then, and how many are parked.

        When parking is slower than the first deadlines, the first flows wake
        before the last are parked, and fewer than ``count`` are ever parked at once.
        """
        most = 0

        def done() -> bool:
            nonlocal most
            parked = self.db.parked()
            if parked is None:
                return False
            most = max(most, parked)
            return parked >= count or parked + len(_stamps(stamp_dir)) >= count

        self.wait_until(done, self.timeout, "%d %s flows to park" % (count, self.library), 0.05)
        return time.time(), most

    def wait_stamped(self, stamp_dir: Path, count: int, timeout: float) -> list[tuple[int, float, float]]:
        """Block until ``count`` stamps are written; all of them."""
        self.wait_until(
            lambda: len(_stamps(stamp_dir)) >= count, timeout, "%d %s flows to wake" % (count, self.library), 0.1
        )
        time.sleep(0.5)  # a flow stamping twice would show now
        return _stamps(stamp_dir)

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str, poll: float) -> None:
        def done() -> bool:
            for proc, log in zip(self.children.procs, self.children.logs):
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                    raise RuntimeError(
                        "a %s process exited (%s) while waiting for %s:\n%s"
                        % (self.library, proc.returncode, what, "\n".join(tail))
                    )
            return predicate()

        _wait(done, timeout, what, poll)

    def close(self) -> None:
        self.children.finish()
        if self.board is not None:
            self.board.close()
            self.persistence.close()
        self.db.close()


def _stamps(stamp_dir: Path) -> list[tuple[int, float, float]]:
    """``(index, until, stamp)`` of every stamp written so far."""
    found = []
    for path in stamp_dir.glob("stamps-*.txt"):
        text = path.read_text()
        for line in text[: text.rfind("\n") + 1].splitlines():  # a line being written is left for later
            index, until, stamp = line.split()
            found.append((int(index), float(until), float(stamp)))
    return found


def _wait(predicate: Callable[[], bool], timeout: float, what: str, poll: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(poll)


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def _measure(
    kind: str,
    library: str,
    flows: int,
    warmup: int,
    window: float,
    lead: float | None,
    analyze: bool,
    tmp: Path,
    postgres: str,
    timeout: float,
) -> Result:
    run = _Run(kind, library, tmp, postgres, timeout)
    try:
        # Warm-up: the processes' first flows, and how fast this machine parks them.
        started = time.time()
        stamp_dir = run.start(warmup, started + 3 + 0.02 * warmup, 1.0)
        park_rate = warmup / max(1e-3, run.wait_parked(warmup, stamp_dir)[0] - started)
        run.wait_stamped(stamp_dir, warmup, timeout)
        run.wait_until(lambda: run.db.parked() == 0, timeout, "the warm-up flows to end", 0.05)

        idle = run.children.status()
        before = run.db.usage()
        started = time.time()
        t0 = started + (1.5 * flows / park_rate + 3 if lead is None else lead)
        print(
            "  %s: %d flows, deadlines %.1f s to %.1f s from now ..."
            % (library, flows, t0 - started, t0 - started + window),
            file=sys.stderr,
        )
        stamp_dir = run.start(flows, t0, window)
        if analyze and library == "flowkit":
            run.db.analyze()
        all_parked, parked_at_once = run.wait_parked(flows, stamp_dir)
        parked = run.children.status()
        after = run.db.usage()
        stamps = run.wait_stamped(stamp_dir, flows, max(timeout, t0 + window - time.time() + timeout))
    finally:
        run.close()
    logged, first_logged = run.children.logged()

    seen: dict[int, int] = {}
    latencies = []
    for index, until, stamp in stamps:
        seen[index] = seen.get(index, 0) + 1
        if seen[index] == 1:
            latencies.append(stamp - until)
    latencies.sort()
    return Result(
        database=kind,
        library=library,
        flows=flows,
        p50_ms=statistics.median(latencies) * 1e3,
        p99_ms=_percentile(latencies, 0.99) * 1e3,
        max_ms=latencies[-1] * 1e3,
        rows=(after[0] - before[0]) / flows,
        row_bytes=(after[1] - before[1]) / flows,
        disk_bytes=(after[2] - before[2]) / flows,
        threads_idle=tuple(t for t, _ in idle),
        threads_parked=tuple(t for t, _ in parked),
        rss_bytes=(sum(r for _, r in parked) - sum(r for _, r in idle)) / flows,
        park_seconds=all_parked - started,
        late_park_seconds=max(0.0, all_parked - t0),
        wakes_per_second=flows / max(1e-3, max(stamp for _, _, stamp in stamps) - t0),
        parked_at_once=parked_at_once,
        missing=sum(1 for i in range(flows) if i not in seen),
        duplicated=sum(1 for n in seen.values() if n > 1),
        logged=logged,
        first_logged=first_logged,
    )


# -- the report -----------------------------------------------------------------------------------


def _table(results: Sequence[Result], title: str) -> Table:
    table = Table(
        title,
        [
            "database",
            "library",
            "flows",
            "wake-up p50",
            "p99",
            "max",
            "rows / flow",
            "row bytes / flow",
            "disk bytes / flow",
            "threads idle -> parked",
            "RSS / flow",
            "parked in",
            "woken / s",
        ],
    )
    for r in results:
        table.add(
            r.database,
            r.library,
            f"{r.flows:,}",
            "%.1f ms" % r.p50_ms,
            "%.1f ms" % r.p99_ms,
            "%.1f ms" % r.max_ms,
            "%.1f" % r.rows,
            "%.0f" % r.row_bytes,
            "%.0f" % r.disk_bytes,
            "%s -> %s" % ("+".join(map(str, r.threads_idle)), "+".join(map(str, r.threads_parked))),
            fmt_bytes(r.rss_bytes),
            "%.1f s" % r.park_seconds,
            "%.0f" % r.wakes_per_second,
        )
    for r in results:
        if r.missing or r.duplicated:
            table.notes.append(
                "%s on %s: %d flows never stamped, %d stamped more than once"
                % (r.library, r.database, r.missing, r.duplicated)
            )
        if r.logged:
            table.notes.append(
                "%s on %s: the processes logged %d warning or error lines, the first: %s"
                % (r.library, r.database, r.logged, r.first_logged[:200])
            )
        if r.late_park_seconds:
            table.notes.append(
                "%s on %s: parking ran %.1f s past the first deadline (those flows wake late); %s of %s flows "
                "were parked at once, the rows counted then"
                % (r.library, r.database, r.late_park_seconds, f"{r.parked_at_once:,}", f"{r.flows:,}")
            )
    by_key = {(r.database, r.library): r for r in results}
    for database in dict.fromkeys(r.database for r in results):
        fk, peer = by_key.get((database, "flowkit")), by_key.get((database, "dbos"))
        if fk is None or peer is None:
            continue
        table.notes.append(
            "%s, flowkit / DBOS: wake-up p50 %.2fx, p99 %.2fx; rows %.2fx, row bytes %.2fx, disk %.2fx; "
            "threads while parked %d / %d"
            % (
                database,
                fk.p50_ms / peer.p50_ms,
                fk.p99_ms / peer.p99_ms,
                fk.rows / peer.rows,
                fk.row_bytes / peer.row_bytes,
                fk.disk_bytes / peer.disk_bytes,
                sum(fk.threads_parked),
                sum(peer.threads_parked),
            )
        )
    return table


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.waits``: park flows with flowkit and DBOS, print a table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.waits", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("child")
    for option in ("--library", "--name", "--db", "--control"):
        child.add_argument(option, required=True)
    child.add_argument("--number", type=int, required=True)
    parser.add_argument("--flows", type=int, default=10_000, help="parked flows per library (default 10000)")
    parser.add_argument("--quick", action="store_true", help="1000 flows, a 10 s window")
    parser.add_argument("--window", type=float, default=None, help="seconds the deadlines spread over (default 20)")
    parser.add_argument("--warmup", type=int, default=200, help="flows of the warm-up round (default 200)")
    parser.add_argument(
        "--lead",
        type=float,
        default=None,
        help="seconds from the first post to the first deadline (default: estimated)",
    )
    parser.add_argument("--databases", default="sqlite,postgresql", help="sqlite, postgresql or both (default)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server (default %(default)s)")
    parser.add_argument("--no-dbos", action="store_true", help="measure flowkit only")
    parser.add_argument(
        "--analyze", action="store_true", help="ANALYZE flowkit's tables once the flows are posted (planner statistics)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a step after this long")
    parser.add_argument(
        "--output",
        default=None,
        help="also write the table to FILE: reStructuredText if it ends in .rst, else Markdown",
    )
    args = parser.parse_args(argv)
    if args.command == "child":
        return (_flowkit_child if args.library == "flowkit" else _dbos_child)(args)

    flows = 1000 if args.quick and args.flows == 10_000 else args.flows
    window = args.window if args.window is not None else (10.0 if args.quick else 20.0)
    libraries = ["flowkit"]
    if not args.no_dbos:
        try:
            import dbos  # noqa: F401
        except ImportError:
            print("DBOS is not importable (pip install dbos): measuring flowkit alone", file=sys.stderr)
        else:
            libraries.append("dbos")
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    unknown = set(kinds) - {"sqlite", "postgresql"}
    if unknown:
        parser.error("unknown database kind(s): %s" % ", ".join(sorted(unknown)))
    load = os.getloadavg()[0]
    print(
        "%d flows per library, deadlines over %.0f s, %d processes each, %d CPUs, load %.2f"
        % (flows, window, PROCESSES, os.cpu_count() or 0, load),
        file=sys.stderr,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-waits-") as tmp:
        for kind in kinds:
            for library in libraries:
                print("%s, %s ..." % (kind, library), file=sys.stderr)
                results.append(
                    _measure(
                        kind,
                        library,
                        flows,
                        min(args.warmup, flows),
                        window,
                        args.lead,
                        args.analyze,
                        Path(tmp),
                        args.postgres,
                        args.timeout,
                    )
                )
    table = _table(results, "Parked flows: %s flows per library, deadlines over %.0f s" % (f"{flows:,}", window))
    preamble = [
        "- date: %s UTC" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "- cpus: %d; load average at start: %.2f; repo commit: %s" % (os.cpu_count() or 0, load, _commit()),
        "- command: python -m benchmarks.waits %s" % " ".join(sys.argv[1:] if argv is None else argv),
    ]
    print(render([table], preamble=preamble), end="")
    if args.output:
        fmt = "rst" if args.output.endswith(".rst") else "markdown"
        Path(args.output).write_text(render([table], fmt=fmt, preamble=preamble))
    return 0


if __name__ == "__main__":
    # Run as the module benchmarks.waits, not __main__, so the factory the jobs record is importable by name.
    from benchmarks import waits

    sys.exit(waits.main())
