"""CPU instructions per durable step, flowkit against a raw SQLite commit, counted by valgrind.

::

    python -m benchmarks.instructions [--steps N]

Times on a shared machine move with its load; instruction counts do not. Each
measurement runs a child Python under ``valgrind --tool=callgrind`` twice, once
doing the work and once doing everything but (loading the flow, opening the
database), and divides the difference by the number of steps:

- flowkit: a linear flow of N no-op tasks on an SQLite file (default
  durability), ``engine.run()`` against ``compile()`` + ``prepare()`` only;
- floor: N raw ``sqlite3`` commits of one upserted row (WAL,
  ``synchronous=NORMAL``), the same floor ``benchmarks.floors`` times.

The counts leave out waiting for the disk, which in WAL mode with
``synchronous=NORMAL`` a commit mostly does not do, so they measure the Python
and SQLite work of a step.  Needs ``valgrind`` on ``PATH``; a run takes about
a minute per measurement (Python runs some 50 times slower under valgrind).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

__all__ = ["count", "main"]


def _child_flowkit(path: str, steps: int, work: bool) -> None:
    from flowkit import engines, task
    from flowkit.patterns import linear_flow
    from flowkit.persistence import models
    from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend

    class Noop(task.Task):
        def execute(self) -> None:
            return None

    backend = SQLAlchemyBackend("sqlite:///" + path, table_prefix="bench_")
    flow = linear_flow.Flow("steps").add(*[Noop("t%d" % i) for i in range(steps)])
    book = models.LogBook("bench")
    detail = models.FlowDetail("steps", uuid=str(uuid.uuid4()))
    book.add(detail)
    engine = engines.load(flow, backend=backend, book=book, flow_detail=detail)
    engine.compile()
    engine.prepare()
    if work:
        engine.run()
    backend.close()


def _child_floor(path: str, steps: int, work: bool) -> None:
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
    for i in range(steps if work else 0):
        db.execute("BEGIN")
        db.execute("INSERT INTO t VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", (i % 10, "x"))
        db.execute("COMMIT")
    db.close()


_CHILDREN = {"flowkit": _child_flowkit, "floor": _child_floor}


def _instructions(what: str, steps: int, work: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="flowkit-instr-") as tmp:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=" + os.devnull,
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            what,
            os.path.join(tmp, "db.sqlite"),
            str(steps),
            "work" if work else "idle",
        ]
        # One hash seed: with random ones the dicts' layouts, and so the counts, vary by a few percent.
        env = dict(os.environ, PYTHONHASHSEED="0")
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError("valgrind run of %s failed (exit %d):\n%s" % (what, done.returncode, done.stderr[-2000:]))
    return int(found.group(1))


def count(what: str, steps: int) -> float:
    """Instructions per step of ``what`` ("flowkit" or "floor"): the work's run less the idle run."""
    return (_instructions(what, steps, True) - _instructions(what, steps, False)) / steps


def main(argv: list[str] | None = None) -> int:
    """Print instructions per durable step for flowkit and the raw-commit floor, and their ratio."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        what, path, steps, mode = args[1:5]
        _CHILDREN[what](path, int(steps), mode == "work")
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per measurement (default 300)")
    options = parser.parse_args(args)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: nothing measured", file=sys.stderr)
        return 1
    mine = count("flowkit", options.steps)
    floor = count("floor", options.steps)
    print("| measure | instructions per step |")
    print("|---|---|")
    print("| flowkit durable SQLite step (%d steps) | %s |" % (options.steps, f"{mine:,.0f}"))
    print("| raw SQLite commit of one upserted row | %s |" % (f"{floor:,.0f}",))
    print("| flowkit / floor | %.1fx |" % (mine / floor,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
