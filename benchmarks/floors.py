"""flowkit beside the floor: what the machine does for the same work with no engine at all.

Each row of the "near the floor" table is measured in one run, flowkit and
its floor alternating (best of each), so a burst of load on a shared machine
affects both sides of the ratio:

- fan-out and linear *prepare* (µs per atom at several N): no floor, the
  target is a flat per-atom cost; below N = 10,000, 10,000 / N flows of N
  atoms are prepared one after another and timed together;
- serial *run* of the linear chain against a loop calling N functions found
  through a dict, storing each result in a dict;
- the parallel engine running an unordered flow of 1,000 no-op tasks against
  ``ThreadPoolExecutor.map`` over 1,000 no-ops (same number of threads);
- a durable SQLite step (flowkit's default durability) against one raw
  ``sqlite3`` commit of one upserted row in WAL mode with
  ``synchronous=NORMAL``;
- a durable PostgreSQL step against one raw autocommit upsert of one row
  with psycopg (when ``FLOWKIT_TEST_POSTGRES_URL`` answers);
- peak memory per atom of the linear chain at N (fresh interpreter, RSS)
  against the flow the program built (the tasks alone, no engine).

Notes under the table split some rows further: futurist's own pool beside
``ThreadPoolExecutor.map``; for each durable row, flowkit's own SQL for a
step (the statements its flush sends, over rows a flowkit run stored)
replayed through the raw driver with no engine, beside the floor; and what
the build, prepare and run each add to the memory row.

``python -m benchmarks`` prints it last; ``python -m benchmarks.floors
[--quick]`` prints only it.  Numbers are reported, never asserted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import math
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks import shapes
from benchmarks.memory import measure_memory
from benchmarks.persistence import _flowkit_backend, _libpq_url, _load, _noop_flow, _per_task_run, _postgres_url
from benchmarks.report import Table, fmt_bytes, fmt_ratio, fmt_us, render
from benchmarks.targets import Library, import_library, prepare_engine

__all__ = ["floor_table", "main"]


def _noop(_: object = None) -> int:
    return 1


def _alternate(first: Callable[[], float], second: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Best of ``repeats`` calls of each, alternating; each returns its own measurement."""
    best_first = best_second = math.inf
    for _ in range(repeats):
        gc.collect()
        best_first = min(best_first, first())
        gc.collect()
        best_second = min(best_second, second())
    return best_first, best_second


def _prepare_us(lib: Library, shape: str, n: int) -> float:
    # Below 10,000 atoms, enough flows of n atoms prepared one after another
    # to make 10,000 in all: one flow of 100 takes under a millisecond, and
    # right after the full collection that makes the runs comparable, most of
    # that is the CPU refilling the caches the collection walked over.
    flows = [shapes.build(lib, shape, n) for _ in range(max(1, _PREPARED_ATOMS // n))]
    gc.collect()
    started = time.perf_counter()
    for flow in flows:
        prepare_engine(lib.load(flow, "serial"))
    return (time.perf_counter() - started) / (n * len(flows)) * 1e6


#: Atoms prepared per measurement of a prepare row (see _prepare_us).
_PREPARED_ATOMS = 10_000


def _run_us(lib: Library, shape: str, n: int, mode: str) -> float:
    engine = lib.load(shapes.build(lib, shape, n), mode)
    prepare_engine(engine)
    gc.collect()
    started = time.perf_counter()
    engine.run()
    elapsed = time.perf_counter() - started
    if str(engine.storage.get_flow_state()) != "SUCCESS":
        raise RuntimeError("the %s flow of %d atoms did not succeed" % (shape, n))
    return elapsed / n * 1e6


def _dict_loop_us(n: int) -> float:
    functions = {"t%d" % i: _noop for i in range(n)}
    order = list(functions)
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for name in order:
        results[name] = functions[name]()
    return (time.perf_counter() - started) / n * 1e6


def _tpe_map_us(n: int, workers: int) -> float:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_noop, range(workers * 4)))  # threads started, as flowkit's pool is by its first atoms
        started = time.perf_counter()
        for _ in pool.map(_noop, range(n)):
            pass
        return (time.perf_counter() - started) / n * 1e6


def _futurist_submit_us(n: int, workers: int) -> float:
    import futurist

    with futurist.ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(_noop, i) for i in range(workers * 4)]:  # threads started
            future.result()
        started = time.perf_counter()
        for future in [pool.submit(_noop, i) for i in range(n)]:
            future.result()
        return (time.perf_counter() - started) / n * 1e6


def _raw_sqlite_us(path: str, count: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
        started = time.perf_counter()
        for i in range(count):
            db.execute("BEGIN")
            db.execute("INSERT INTO t VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", (i % 10, "x"))
            db.execute("COMMIT")
        return (time.perf_counter() - started) / count * 1e6
    finally:
        db.close()


def _raw_postgres_us(url: str, count: int) -> float:
    import psycopg

    table = "bench_floor_%s" % uuid.uuid4().hex[:8]
    with psycopg.connect(_libpq_url(url), autocommit=True) as db:
        db.execute("CREATE TABLE %s (k INTEGER PRIMARY KEY, v TEXT)" % table)
        try:
            statement = "INSERT INTO %s VALUES (%%s, %%s) ON CONFLICT (k) DO UPDATE SET v = excluded.v" % table
            started = time.perf_counter()
            for i in range(count):
                db.execute(statement, (i % 10, "x"))
            return (time.perf_counter() - started) / count * 1e6
        finally:
            db.execute("DROP TABLE %s" % table)


def _stored_steps(lib: Library, url: str, n: int) -> tuple[Any, str]:
    """Run a linear flow of ``n`` no-op tasks on ``url``; its backend (closed) and flow detail uuid.

    Its atom rows are then in the database as flowkit wrote them, for the
    replays below.
    """
    backend = _flowkit_backend(url)
    try:
        engine, _, detail = _load(lib, _noop_flow(lib, n), backend)
        engine.run()
    finally:
        backend.close()
    return backend, detail.uuid


def _step_rows(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """What each step of a linear run flushes: atom i's SUCCESS and atom i + 1's RUNNING."""
    steps = []
    for done, starting in zip(rows, rows[1:]):
        steps.append([dict(done, state="SUCCESS"), dict(starting, state="RUNNING", results=None, meta="{}")])
    return steps


def _own_sqlite_sql_us(lib: Library, path: str, n: int) -> float:
    """flowkit's own SQL for a durable SQLite step, replayed through raw ``sqlite3``: no engine.

    The statements a step's flush sends (BEGIN IMMEDIATE, the store's
    compiled upsert of its two atom rows, COMMIT) on a connection set up as
    flowkit sets up its own (WAL, ``synchronous=NORMAL``, foreign keys on),
    over the rows a flowkit run left in the file.
    """
    backend, flow_uuid = _stored_steps(lib, "sqlite:///" + path, n)
    sql, _order = backend._hot_sql["atoms"]
    params = backend._row_params["atoms"]
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        table = backend.tables.atoms.name
        stored = [
            dict(row)
            for row in db.execute("SELECT * FROM %s WHERE parent_uuid = ? ORDER BY position" % table, (flow_uuid,))
        ]
        steps = [[params(row) for row in step] for step in _step_rows(stored)]
        cursor = db.cursor()
        started = time.perf_counter()
        for rows in steps:
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(sql, rows)
            cursor.execute("COMMIT")
        return (time.perf_counter() - started) / len(steps) * 1e6
    finally:
        db.close()


def _own_postgres_sql_us(lib: Library, url: str, n: int) -> float:
    """flowkit's own SQL for a durable PostgreSQL step, replayed through raw psycopg: no engine.

    The one statement a step's flush sends (the store's upsert of its two
    atom rows, prepared on the session and run on libpq with text values,
    which the server commits by itself), over the rows a flowkit run left.
    """
    import psycopg

    from flowkit.persistence._sql._libpq import PreparedStatements

    backend, flow_uuid = _stored_steps(lib, url, n)
    _sql, name, prepared_sql, params = backend._multi_row_sql("atoms", 2)
    statements = PreparedStatements()
    with psycopg.connect(_libpq_url(url)) as db:
        columns = [c.name for c in backend.tables.atoms.columns]
        cursor = db.execute(
            "SELECT %s FROM %s WHERE parent_uuid = %%s ORDER BY position"
            % (", ".join(columns), backend.tables.atoms.name),
            (flow_uuid,),
        )
        stored = [dict(zip(columns, row)) for row in cursor.fetchall()]
        db.commit()
        steps = [[value for row in step for value in params(row)] for step in _step_rows(stored)]
        started = time.perf_counter()
        for values in steps:
            if not statements.execute(db, name, prepared_sql, values):
                raise RuntimeError("the replayed step could not run prepared on libpq")
        return (time.perf_counter() - started) / len(steps) * 1e6


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def floor_table(*, quick: bool = False, repeats: int = 3, memory: bool = True) -> Table:
    """Measure every row of the near-the-floor table (see the module docstring)."""
    lib = import_library("flowkit")
    for shape in ("linear", "graph-fanout"):
        lib.load(shapes.build(lib, shape, 10), "serial").run()  # warm-up
    table = Table(
        "flowkit near the floor (same run, best of %d, flowkit and floor alternating)" % repeats,
        ["measure", "N", "flowkit", "floor", "flowkit / floor", "target", "verdict"],
    )
    sizes = (100, 10_000) if quick else (100, 10_000, 100_000)
    for shape, label, limit in (
        ("graph-fanout", "fan-out prepare, µs/atom", 12.0),
        ("linear", "prepare, linear chain, µs/atom", 4.0),
    ):
        values = []
        for n in sizes:
            best = min(_prepare_us(lib, shape, n) for _ in range(repeats if n <= 10_000 else 1))
            values.append(best)
            table.add(label, f"{n:,}", fmt_us(best), "-", "-", f"≤ {limit:g} at every N", _verdict(best <= limit))
        spread = max(values) / min(values)
        table.notes.append(f"{label}: largest / smallest over N = {spread:.2f}x (about 1x when flat)")
    n = 1_000 if quick else 10_000
    run_us, loop_us = _alternate(lambda: _run_us(lib, "linear", n, "serial"), lambda: _dict_loop_us(n), repeats)
    table.add(
        "serial run, linear chain, µs/atom",
        f"{n:,}",
        fmt_us(run_us),
        fmt_us(loop_us),
        fmt_ratio(run_us, loop_us),
        "≤ 2.5 µs",
        _verdict(run_us <= 2.5),
    )
    n = 1_000
    fan_us, map_us = _alternate(lambda: _run_us(lib, "unordered", n, "parallel"), lambda: _tpe_map_us(n, 2), repeats)
    table.add(
        "thread fan-out, µs/task (2 threads)",
        f"{n:,}",
        fmt_us(fan_us),
        fmt_us(map_us),
        fmt_ratio(fan_us, map_us),
        "≤ 1.5x",
        _verdict(fan_us <= 1.5 * map_us),
    )
    pool_us, map_again_us = _alternate(lambda: _futurist_submit_us(n, 2), lambda: _tpe_map_us(n, 2), repeats)
    table.notes.append(
        "thread fan-out: futurist's own ThreadPoolExecutor (the pool flowkit uses), N submits and then "
        f"their results, no engine: {fmt_us(pool_us)} µs/task, {fmt_ratio(pool_us, map_again_us)} "
        "ThreadPoolExecutor.map"
    )
    with tempfile.TemporaryDirectory(prefix="flowkit-floor-") as tmp:
        n = 200 if quick else 1_000

        def sqlite_step() -> float:
            path = "sqlite:///%s/fk-%s.db" % (tmp, uuid.uuid4().hex)
            return _per_task_run(lib, lambda: _flowkit_backend(path), n, 1)

        def sqlite_floor() -> float:
            return _raw_sqlite_us(os.path.join(tmp, "raw-%s.db" % uuid.uuid4().hex), 300)

        step_us, commit_us = _alternate(sqlite_step, sqlite_floor, repeats)
        table.add(
            "durable SQLite step (default durability), µs",
            f"{n:,}",
            fmt_us(step_us),
            fmt_us(commit_us),
            fmt_ratio(step_us, commit_us),
            "≤ 3x",
            _verdict(step_us <= 3 * commit_us),
        )
        own_us, commit_again_us = _alternate(
            lambda: _own_sqlite_sql_us(lib, os.path.join(tmp, "own-%s.db" % uuid.uuid4().hex), n),
            sqlite_floor,
            repeats,
        )
        table.notes.append(
            "durable SQLite step: flowkit's own SQL for one step (BEGIN IMMEDIATE, the upsert of its two atom "
            f"rows, COMMIT) replayed through raw sqlite3, no engine: {fmt_us(own_us)} µs, "
            f"{fmt_ratio(own_us, commit_again_us)} the floor; the step is {fmt_ratio(step_us, own_us)} that"
        )
    pg = _postgres_url()
    if pg is None:
        table.notes.append("PostgreSQL not reachable (FLOWKIT_TEST_POSTGRES_URL): its row is not measured")
    else:
        n = 100 if quick else 300
        pg_step, pg_floor = _alternate(
            lambda: _per_task_run(lib, lambda: _flowkit_backend(pg), n, 1), lambda: _raw_postgres_us(pg, 300), repeats
        )
        table.add(
            "durable PostgreSQL step, µs",
            f"{n:,}",
            fmt_us(pg_step),
            fmt_us(pg_floor),
            fmt_ratio(pg_step, pg_floor),
            "≤ 1.5x",
            _verdict(pg_step <= 1.5 * pg_floor),
        )
        pg_own, pg_floor_again = _alternate(
            lambda: _own_postgres_sql_us(lib, pg, n), lambda: _raw_postgres_us(pg, 300), repeats
        )
        table.notes.append(
            "durable PostgreSQL step: flowkit's own SQL for one step (one prepared upsert of its two atom rows "
            f"on libpq) replayed through raw psycopg, no engine: {fmt_us(pg_own)} µs, "
            f"{fmt_ratio(pg_own, pg_floor_again)} the floor; the step is {fmt_ratio(pg_step, pg_own)} that"
        )
    if memory:
        n = 10_000 if quick else 100_000
        found = measure_memory("flowkit", "linear", n, method="rss")
        per_atom = found.after_run / n
        built = found.after_build / n
        table.add(
            "peak memory per atom, linear chain",
            f"{n:,}",
            fmt_bytes(per_atom),
            fmt_bytes(built),
            fmt_ratio(per_atom, built),
            "≤ 1,200 B",
            _verdict(per_atom <= 1200),
        )
        table.notes.append("memory floor: the flow the program built (its tasks), before any engine (RSS growth)")
        table.notes.append(
            "peak memory per atom: the build "
            f"{fmt_bytes(built)}, then prepare {fmt_bytes((found.after_prepare - found.after_build) / n)} "
            f"more, then run {fmt_bytes((found.after_run - found.after_prepare) / n)} more"
        )
    table.notes.append(
        "floors: serial run = a loop calling N functions through a dict; fan-out = ThreadPoolExecutor.map; "
        "SQLite = one raw commit of one upserted row (WAL, synchronous=NORMAL); PostgreSQL = one raw "
        "autocommit upsert (psycopg)"
    )
    return table


def main(argv: list[str] | None = None) -> int:
    """Print the near-the-floor table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floors", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller flows")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions per row (default 3)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory row")
    args = parser.parse_args(argv)
    load = "%.2f %.2f %.2f" % os.getloadavg()
    table = floor_table(quick=args.quick, repeats=args.repeats, memory=not args.no_memory)
    print(render([table], preamble=["- load average at start: %s (%d CPUs)" % (load, os.cpu_count() or 0)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
