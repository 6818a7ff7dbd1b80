"""Peak memory per atom, measured in a fresh interpreter per measurement.

Run one measurement by hand::

    python -m benchmarks.memory flowkit linear 100000 --method rss

It prints one JSON object. Two methods, each in its own process because
tracemalloc's bookkeeping would inflate the resident set size:

``tracemalloc``
    Peak of Python-level allocations (everything allocated through Python's
    allocators, which is nearly all of a flow) from just before the flow is
    built to the end of ``run()``. Deterministic, but it slows allocation
    down several times (about a minute for 100,000 atoms), so the suite only
    uses it when asked (``--tracemalloc``).
``rss`` (default)
    Growth of the process's peak resident set size over the same span: the
    kernel's peak mark (VmHWM) is reset just before the build and compared
    with the resident size at that moment (``ru_maxrss`` where /proc is not
    available). Includes allocator slack and C-level memory; noisier.

Both start after the library is imported and a tiny flow of the same shape
has run, so import-time and first-use costs are not charged to the atoms.
The flow and engine stay referenced to the end, as in a user's program.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["METHODS", "MemoryResult", "main", "measure_memory"]

#: Measurement methods, each run in a separate process.
METHODS: tuple[str, ...] = ("rss", "tracemalloc")

_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MemoryResult:
    """Peak memory growth (bytes) after each phase of one flow's life."""

    library: str
    shape: str
    n: int
    mode: str
    method: str
    after_build: int
    after_prepare: int
    after_run: int
    seconds: float

    @property
    def per_atom(self) -> float:
        """Peak bytes per atom over build + prepare + run."""
        return self.after_run / self.n


def _read_status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process, if supported.

    Without a reset the peak would still hold whatever import or warm-up
    reached, and growth below that mark would be invisible.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _read_status_kib("VmHWM") is not None


def _memory_meter(method: str) -> tuple[int, Callable[[], int]]:
    """Start measuring; return (baseline bytes, reader of the peak so far)."""
    if method == "tracemalloc":
        tracemalloc.start()
        return 0, lambda: tracemalloc.get_traced_memory()[1]
    if _reset_rss_peak():
        # After the reset VmHWM equals the current RSS, which is the baseline.
        return _read_status_kib("VmRSS") or 0, lambda: _read_status_kib("VmHWM") or 0
    # Fallback (no /proc): ru_maxrss cannot be reset, so growth is only seen
    # above the earlier peak. macOS reports it in bytes, Linux in KiB.
    scale = 1 if sys.platform == "darwin" else 1024

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    return peak(), peak


def _print_by_line(label: str, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, top: int) -> None:
    """The ``top`` source lines whose allocations still held grew most between two snapshots, per atom."""
    root = str(_REPO_ROOT) + os.sep
    grown = after.compare_to(before, "lineno")
    print("%s: %.0f B per atom still held" % (label, sum(stat.size_diff for stat in grown) / n))
    for stat in grown[:top]:
        frame = stat.traceback[0]
        where = "%s:%d" % (frame.filename.replace(root, ""), frame.lineno)
        print("  %8.1f B  %5.2f blocks  %s" % (stat.size_diff / n, stat.count_diff / n, where))


def _measure_here(library: str, shape: str, n: int, mode: str, method: str, by_line: int = 0) -> MemoryResult:
    """Do the measurement in this process (the subprocess side).

    With ``by_line`` (tracemalloc only), also print the source lines whose
    allocations grew most in each phase; the snapshots that takes are
    traced too, so the peaks of such a run read a little high.
    """
    # Imported here so the parent process never pays for these imports.
    from benchmarks import shapes
    from benchmarks.targets import import_library, prepare_engine

    lib = import_library(library)
    warm = lib.load(shapes.build(lib, shape, 3), mode)
    prepare_engine(warm)
    warm.run()
    del warm
    gc.collect()

    baseline, peak = _memory_meter(method)
    started = time.perf_counter()
    snapshots = [tracemalloc.take_snapshot()] if by_line else []
    flow = shapes.build(lib, shape, n)
    after_build = peak() - baseline
    if by_line:
        snapshots.append(tracemalloc.take_snapshot())
    engine = lib.load(flow, mode)
    prepare_engine(engine)
    after_prepare = peak() - baseline
    if by_line:
        snapshots.append(tracemalloc.take_snapshot())
    engine.run()
    after_run = peak() - baseline
    if by_line:
        snapshots.append(tracemalloc.take_snapshot())
        for label, before, after in zip(("build", "prepare", "run"), snapshots, snapshots[1:]):
            _print_by_line(label, before, after, n, by_line)
    seconds = time.perf_counter() - started
    if method == "tracemalloc":
        tracemalloc.stop()
    return MemoryResult(
        library=library,
        shape=shape,
        n=n,
        mode=mode,
        method=method,
        after_build=after_build,
        after_prepare=after_prepare,
        after_run=after_run,
        seconds=seconds,
    )


def measure_memory(
    library: str,
    shape: str,
    n: int,
    *,
    mode: str = "serial",
    method: str = "rss",
    timeout_s: float = 600.0,
) -> MemoryResult:
    """Run one measurement in a fresh interpreter and return its result.

    Raises ``RuntimeError`` (with the child's stderr tail) if it fails and
    ``subprocess.TimeoutExpired`` if it outlives ``timeout_s``.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    command = [
        sys.executable,
        "-m",
        "benchmarks.memory",
        library,
        shape,
        str(n),
        "--mode",
        mode,
        "--method",
        method,
    ]
    done = subprocess.run(
        command,
        cwd=_REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(" | ".join(tail) or f"exit status {done.returncode}")
    fields: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return MemoryResult(**fields)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: measure one flow and print the result as JSON."""
    from benchmarks.shapes import SHAPES

    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("library", choices=("flowkit", "taskflow"))
    parser.add_argument("shape", choices=tuple(SHAPES))
    parser.add_argument("n", type=int)
    parser.add_argument("--mode", choices=("serial", "parallel"), default="serial")
    parser.add_argument("--method", choices=METHODS, default="rss")
    parser.add_argument(
        "--by-line",
        type=int,
        default=0,
        metavar="K",
        help="with --method tracemalloc: also print the K source lines that keep most memory in each phase",
    )
    args = parser.parse_args(argv)
    if args.by_line and args.method != "tracemalloc":
        parser.error("--by-line needs --method tracemalloc")
    result = _measure_here(args.library, args.shape, args.n, args.mode, args.method, args.by_line)
    fields = {name: getattr(result, name) for name in result.__dataclass_fields__}
    print(json.dumps(fields))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
