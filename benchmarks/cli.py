"""``python -m benchmarks``: run the suite and print (or write) the tables.

Order of work: import the libraries, warm each engine up, then the per-atom
grid with sizes as the *outer* loop (so when the time budget runs out it is
the biggest sizes that are skipped, for every shape alike), then the parallel
chain step, the one-task pool overhead, and finally the memory measurements
in fresh subprocesses. Progress goes to stderr, tables to stdout.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import shapes
from benchmarks.baselines import PoolBaseline, measure_pool_baseline
from benchmarks.memory import MemoryResult, measure_memory
from benchmarks.report import Table, fmt_bytes, fmt_ratio, fmt_us, render
from benchmarks.targets import (
    LIBRARIES,
    Library,
    LibraryUnavailable,
    import_library,
    prepare_engine,
)
from benchmarks.timing import Estimator, FlowTimes, best_of, time_flow

__all__ = ["Config", "main", "parse_args"]

SIZES: tuple[int, ...] = (10, 100, 1_000, 10_000, 100_000)
MODES: tuple[str, ...] = ("serial", "parallel")

# Targets from the performance issue. They are reported, never asserted.
TARGET_US_PER_ATOM = 20.0
TARGET_FLAT_SPREAD = 2.0
TARGET_STEP_RATIO = 2.0
TARGET_BYTES_PER_ATOM = 3_000
TARGET_N = 100_000
STEP_N = 1_000


@dataclass(frozen=True)
class Config:
    """Everything a run needs, resolved from the command line."""

    sizes: tuple[int, ...]
    taskflow_max_n: int
    modes: tuple[str, ...]
    shapes: tuple[str, ...]
    with_taskflow: bool
    budget_s: float
    repeats: int
    repeat_budget_s: float
    gc_off: bool
    memory: bool
    memory_n: int
    taskflow_memory_n: int
    memory_methods: tuple[str, ...]
    output: Path | None
    floors: bool = True


@dataclass(frozen=True)
class Skipped:
    """A measurement deliberately not taken, and why."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """A measurement that raised; the library misbehaved on this input."""

    error: str


Outcome = FlowTimes | Skipped | Failed


def _csv(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """argparse type for a comma-separated subset of ``choices``."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(part.strip() for part in text.split(",") if part.strip())
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {text!r}")
        return items

    return parse


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Parse the command line into a :class:`Config`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="flowkit vs TaskFlow: per-atom prepare/run cost, parallel step, pool overhead, memory.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run: N<=1000, TaskFlow N<=100, fewer repeats, small memory run",
    )
    parser.add_argument(
        "--max-n",
        type=int,
        default=None,
        help="largest flow size for flowkit (default 100000; 1000 with --quick)",
    )
    parser.add_argument(
        "--taskflow-max-n",
        type=int,
        default=None,
        help="largest flow size for TaskFlow (default 1000; 100 with --quick)",
    )
    parser.add_argument(
        "--modes",
        type=_csv(MODES),
        default=MODES,
        help="comma-separated engine modes (default serial,parallel)",
    )
    parser.add_argument(
        "--shapes",
        type=_csv(tuple(shapes.SHAPES)),
        default=tuple(shapes.SHAPES),
        help="comma-separated flow shapes (default: all)",
    )
    parser.add_argument("--no-taskflow", action="store_true", help="measure flowkit only")
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="skip a measurement whose estimated single run exceeds this many seconds (default 60)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="max repetitions per measurement, best kept (default 5; 2 with --quick)",
    )
    parser.add_argument("--no-gc", action="store_true", help="disable the garbage collector inside timed phases")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocess measurements")
    parser.add_argument("--no-floors", action="store_true", help="skip the near-the-floor table (benchmarks.floors)")
    parser.add_argument("--memory-n", type=int, default=None, help="flow size for flowkit memory (default: --max-n)")
    parser.add_argument(
        "--taskflow-memory-n",
        type=int,
        default=None,
        help="flow size for TaskFlow memory (default 1000; 0 to skip; skipped with --quick)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also measure memory with tracemalloc (slow: about a minute per flow of 100000)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="also write the tables to FILE (.rst for reStructuredText, else Markdown)",
    )
    args = parser.parse_args(argv)

    max_n = args.max_n if args.max_n is not None else (1_000 if args.quick else TARGET_N)
    if max_n < 1:
        parser.error("--max-n must be at least 1")
    sizes = tuple(n for n in SIZES if n <= max_n)
    if max_n not in sizes:
        sizes = (*sizes, max_n)
    taskflow_max_n = args.taskflow_max_n if args.taskflow_max_n is not None else (100 if args.quick else 1_000)
    memory_n = args.memory_n if args.memory_n is not None else max_n
    taskflow_memory_n = args.taskflow_memory_n if args.taskflow_memory_n is not None else (0 if args.quick else 1_000)
    return Config(
        sizes=sizes,
        taskflow_max_n=taskflow_max_n,
        modes=args.modes,
        shapes=args.shapes,
        with_taskflow=not args.no_taskflow,
        budget_s=args.budget,
        repeats=args.repeats if args.repeats is not None else (2 if args.quick else 5),
        repeat_budget_s=0.5 if args.quick else 1.0,
        gc_off=args.no_gc,
        memory=not args.no_memory,
        memory_n=memory_n,
        taskflow_memory_n=taskflow_memory_n,
        memory_methods=("rss", "tracemalloc") if args.tracemalloc else ("rss",),
        output=args.output,
        floors=not args.no_floors,
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 120:
        first = first[:117] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _load_libraries(config: Config) -> tuple[list[Library], list[str]]:
    """Import the libraries to compare; notes explain any that are missing."""
    libs: list[Library] = []
    notes: list[str] = []
    for name in LIBRARIES:
        if name == "taskflow" and not config.with_taskflow:
            notes.append("TaskFlow not measured (--no-taskflow).")
            continue
        try:
            libs.append(import_library(name))
        except LibraryUnavailable as exc:
            hint = " Install it with `pip install -e .[bench]` (taskflow==6.5.0)." if name == "taskflow" else ""
            notes.append(f"NOTE: {exc}; measuring without it.{hint}")
            _progress(notes[-1])
    return libs, notes


def _warm_up(lib: Library, config: Config) -> str | None:
    """Run each shape once, small, so imports and plugin loading are not timed.

    Returns an error description if the library cannot run even that.
    """
    for mode in config.modes:
        for shape in config.shapes:
            try:
                engine = lib.load(shapes.build(lib, shape, 10), mode)
                prepare_engine(engine)
                engine.run()
            except Exception as exc:  # a broken library must not end the suite
                return f"{shape}/{mode}: {_describe_error(exc)}"
    gc.collect()
    return None


def _estimate_text(estimate: float | None) -> str:
    if estimate is None:
        return "no estimate"
    return f"est. {estimate:.1f} s" if estimate < 10 else f"est. {estimate:,.0f} s"


def _run_grid(libs: list[Library], config: Config) -> dict[tuple[str, str, str, int], Outcome]:
    """Measure every (size, shape, mode, library) within the time budget."""
    results: dict[tuple[str, str, str, int], Outcome] = {}
    estimators: dict[tuple[str, str, str], Estimator] = {}
    # A series that raised is not retried at bigger sizes.
    broken: dict[tuple[str, str, str], str] = {}
    for n in config.sizes:
        for shape in config.shapes:
            for mode in config.modes:
                for lib in libs:
                    series = (lib.name, shape, mode)
                    key = (lib.name, shape, mode, n)
                    estimator = estimators.setdefault(series, Estimator())
                    if series in broken:
                        results[key] = Skipped(f"not run ({broken[series]})")
                        continue
                    estimate = estimator.estimate(n)
                    est_text = _estimate_text(estimate)
                    limit = config.taskflow_max_n if lib.name == "taskflow" else config.sizes[-1]
                    # Estimates only grow with N, so once a series is over
                    # budget every bigger size is skipped with its estimate.
                    if estimate is not None and estimate > config.budget_s:
                        results[key] = Skipped(f"skipped (too slow: {est_text})")
                        continue
                    if n > limit:
                        results[key] = Skipped(f"skipped (N > {lib.name} max {limit:,}; {est_text})")
                        continue
                    _progress(f"  {lib.name:8} {mode:8} {shape:12} N={n:<7,} ({est_text}) ...")
                    try:
                        times = time_flow(
                            lib,
                            shape,
                            mode,
                            n,
                            repeats=config.repeats,
                            repeat_budget_s=config.repeat_budget_s,
                            gc_off=config.gc_off,
                        )
                    except Exception as exc:  # report, keep measuring the rest
                        error = _describe_error(exc)
                        results[key] = Failed(error)
                        broken[series] = f"failed at N={n:,}"
                        _progress(f"    FAILED: {error}")
                        continue
                    estimator.record(n, times.first_total_s)
                    results[key] = times
                    _progress(
                        f"    prepare {times.per_atom_us('prepare'):.1f} us/atom, "
                        f"run {times.per_atom_us('run'):.1f} us/atom ({times.repeats}x)"
                    )
    return results


def _grid_tables(libs: list[Library], config: Config, results: dict[tuple[str, str, str, int], Outcome]) -> list[Table]:
    names = [lib.name for lib in libs]
    compare = names == ["flowkit", "taskflow"]
    tables = []
    for mode in config.modes:
        headers = ["shape", "N"]
        for name in names:
            headers += [f"{name} build", f"{name} prepare", f"{name} run"]
        if compare:
            headers += ["prepare ratio", "run ratio"]
        table = Table(f"Per-atom cost, {mode} engine (µs per atom)", headers)
        for shape in config.shapes:
            for n in config.sizes:
                cells: list[str] = [shape, f"{n:,}"]
                per_atom: dict[str, tuple[float | None, float | None]] = {}
                for name in names:
                    outcome = results.get((name, shape, mode, n))
                    if isinstance(outcome, FlowTimes):
                        prep, run = outcome.per_atom_us("prepare"), outcome.per_atom_us("run")
                        per_atom[name] = (prep, run)
                        cells += [fmt_us(outcome.per_atom_us("build")), fmt_us(prep), fmt_us(run)]
                    else:
                        per_atom[name] = (None, None)
                        text = (
                            outcome.reason
                            if isinstance(outcome, Skipped)
                            else f"FAILED: {outcome.error}"
                            if outcome
                            else "-"
                        )
                        cells += ["-", text, "-"]
                if compare:
                    (fp, fr), (tp, tr) = per_atom["flowkit"], per_atom["taskflow"]
                    cells += [fmt_ratio(tp, fp), fmt_ratio(tr, fr)]
                table.add(*cells)
        table.notes = [
            "build = constructing the flow and its tasks (not part of prepare); "
            "prepare = engines.load + compile + prepare + validate; run = engine.run().",
            f"Best of up to {config.repeats} repetitions; "
            f"gc {'disabled' if config.gc_off else 'enabled'} during timing.",
        ]
        if compare:
            table.notes.append("ratio = TaskFlow time / flowkit time (higher means flowkit is faster).")
        if mode == "parallel":
            table.notes.append(
                "Parallel run times include the engine starting and shutting down its "
                "thread pool (max_workers=2) inside run()."
            )
        tables.append(table)
    return tables


@dataclass(frozen=True)
class StepResult:
    """The parallel chain step table and the numbers the targets check needs."""

    table: Table
    baseline: PoolBaseline
    #: Library name -> microseconds per chain step on the parallel engine.
    per_step_us: dict[str, float]


def _parallel_step(
    libs: list[Library], config: Config, results: dict[tuple[str, str, str, int], Outcome]
) -> StepResult | None:
    """Per-step cost of a linear chain on the parallel engine vs a bare pool.

    A chain that runs in under a second is measured again here, alternating
    with the bare-pool baseline (best of each kept), so a burst of load on a
    shared machine hits both sides of the ratio alike. Slower chains (TaskFlow:
    seconds per run) reuse the grid's measurement.
    """
    if "parallel" not in config.modes:
        return None
    step_n = min(STEP_N, config.sizes[-1])
    sizes: dict[str, int] = {}
    outcomes: dict[str, Outcome | None] = {}
    fresh: list[Library] = []
    for lib in libs:
        n = min(step_n, config.taskflow_max_n) if lib.name == "taskflow" else step_n
        sizes[lib.name] = n
        outcome = outcomes[lib.name] = results.get((lib.name, "linear", "parallel", n))
        if outcome is None or (isinstance(outcome, FlowTimes) and outcome.run_s < 1.0):
            fresh.append(lib)

    _progress(f"parallel chain step: N={step_n:,}, alternating with the bare pool ...")
    baselines: list[PoolBaseline] = []
    best_run: dict[str, float] = {}
    for _ in range(max(1, config.repeats)):
        baselines.append(measure_pool_baseline(step_n, repeats=1))
        for lib in fresh:
            if isinstance(outcomes[lib.name], Failed):
                continue
            try:
                times = time_flow(lib, "linear", "parallel", sizes[lib.name], repeats=1, repeat_budget_s=0.0)
            except Exception as exc:
                outcomes[lib.name] = Failed(_describe_error(exc))
                continue
            best_run[lib.name] = min(best_run.get(lib.name, times.run_s), times.run_s)
    baseline = PoolBaseline(
        n=step_n,
        max_workers=baselines[0].max_workers,
        round_trip_us=min(b.round_trip_us for b in baselines),
        map_us=min(b.map_us for b in baselines),
    )

    table = Table(
        "Parallel chain step (linear chain, parallel engine, max_workers=2)",
        ["what", "N", "µs per step", "vs ThreadPoolExecutor round trip"],
    )
    per_step: dict[str, float] = {}
    for lib in libs:
        n = sizes[lib.name]
        outcome = outcomes[lib.name]
        if lib.name in best_run:
            per_step[lib.name] = best_run[lib.name] / n * 1e6
        elif isinstance(outcome, FlowTimes):
            per_step[lib.name] = outcome.per_atom_us("run")
        if lib.name in per_step:
            value = per_step[lib.name]
            cells = [fmt_us(value), fmt_ratio(value, baseline.round_trip_us)]
        elif isinstance(outcome, Skipped):
            cells = [outcome.reason, "-"]
        elif isinstance(outcome, Failed):
            cells = [f"FAILED: {outcome.error}", "-"]
        else:
            cells = ["not measured", "-"]
        table.add(f"{lib.name} engine.run() / N", f"{n:,}", *cells)
    table.add(
        "ThreadPoolExecutor submit(fn).result() loop",
        f"{step_n:,}",
        fmt_us(baseline.round_trip_us),
        "1.0x",
    )
    table.add(
        "ThreadPoolExecutor.map (per item, floor)",
        f"{step_n:,}",
        fmt_us(baseline.map_us),
        fmt_ratio(baseline.map_us, baseline.round_trip_us),
    )
    table.notes = [
        "Engine per-step cost is the whole engine.run() (including pool start-up and shutdown) divided by N.",
        "Baselines use concurrent.futures.ThreadPoolExecutor(max_workers=2) with its threads already started.",
        f"Chains quicker than 1 s per run ({', '.join(lib.name for lib in fresh) or 'none'}) "
        f"are re-measured alternating with the baseline, best of {max(1, config.repeats)}; "
        "others come from the per-atom grid.",
    ]
    return StepResult(table=table, baseline=baseline, per_step_us=per_step)


def _time_one_task_run(lib: Library, mode: str, *, repeats: int) -> float:
    """Best wall time of ``engines.run`` on a one-task flow built beforehand."""
    flows = iter([shapes.one_task_flow(lib) for _ in range(repeats)])

    def run_one() -> None:
        lib.engines.run(next(flows), engine=mode)

    return best_of(run_one, repeats=repeats)


def _pool_overhead(libs: list[Library], config: Config) -> Table:
    """Wall time of a whole ``engines.run`` of a one-task flow."""
    modes = [m for m in ("parallel", "serial") if m in config.modes]
    table = Table(
        "Whole engines.run() of a one-task flow (pool start-up + shutdown overhead)",
        ["mode", *[f"{lib.name} ms" for lib in libs], *(["ratio"] if len(libs) == 2 else [])],
    )
    for mode in modes:
        cells: list[str] = [mode]
        values: list[float | None] = []
        for lib in libs:
            _progress(f"engines.run(one task) {lib.name} {mode} ...")
            try:
                seconds = _time_one_task_run(lib, mode, repeats=3)
            except Exception as exc:
                cells.append(f"FAILED: {_describe_error(exc)}")
                values.append(None)
                continue
            values.append(seconds * 1e3)
            cells.append(fmt_us(seconds * 1e3))
        if len(libs) == 2:
            cells.append(fmt_ratio(values[1], values[0]))
        table.add(*cells)
    table.notes = ["Best of 3; the flow is built outside the timed call; default engine options (no max_workers)."]
    return table


def _memory(libs: list[Library], config: Config) -> tuple[Table, dict[str, MemoryResult | str]]:
    """Peak memory per atom, one fresh subprocess per (library, shape, method)."""
    table = Table(
        "Peak memory per atom (serial engine, fresh process per measurement)",
        ["library", "shape", "N", "method", "peak growth", "after build", "after prepare", "after run"],
    )
    jobs: list[tuple[str, str, int, str]] = []
    for lib in libs:
        n = config.taskflow_memory_n if lib.name == "taskflow" else config.memory_n
        if n <= 0:
            continue
        # TaskFlow is measured on the linear shape only: its flows of 1,000
        # atoms already take seconds each and hundreds of MiB.
        lib_shapes = [s for s in config.shapes if lib.name != "taskflow" or s == "linear"]
        for shape in lib_shapes or config.shapes[:1]:
            jobs += [(lib.name, shape, n, method) for method in config.memory_methods]

    def run(job: tuple[str, str, int, str]) -> MemoryResult | str:
        name, shape, n, method = job
        _progress(f"memory {name} {shape} N={n:,} ({method}) ...")
        try:
            return measure_memory(name, shape, n, method=method, timeout_s=max(300.0, config.budget_s * 5))
        except Exception as exc:
            return _describe_error(exc)

    # Two children at a time: nothing is being timed any more, and each child
    # measures only its own memory, so they cannot disturb each other's result.
    workers = max(1, min(2, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(run, jobs))

    found: dict[str, MemoryResult | str] = {}
    for (name, shape, n, method), out in zip(jobs, outcomes):
        found[f"{name}/{shape}/{method}"] = out
        if isinstance(out, MemoryResult):
            table.add(
                name,
                shape,
                f"{n:,}",
                method,
                fmt_bytes(out.after_run),
                *(f"{value / n:,.0f} B/atom" for value in (out.after_build, out.after_prepare, out.after_run)),
            )
        else:
            table.add(name, shape, f"{n:,}", method, f"FAILED: {out}", "-", "-", "-")
    table.notes = [
        "Peak growth from just before the flow is built; 'after X' is that peak, per atom, "
        "once phase X is done (build, then load+compile+prepare+validate, then run).",
        "rss: the kernel's peak-RSS mark (VmHWM), reset before the build, minus the resident "
        "size then; includes allocator slack and C memory. tracemalloc (--tracemalloc): peak "
        "of Python allocations only.",
        "Measured after a small warm-up flow, so import and first-use costs are excluded.",
    ]
    return table, found


def _growth(points: list[tuple[int, float]]) -> float:
    """Largest factor by which the per-atom cost rose from a smaller N to a bigger one.

    Per-atom cost *falling* with N only means fixed costs are being spread
    thinner, which a linear engine is allowed; it is rising that breaks
    linearity, so 1.0 means flat (or falling).
    """
    growth = 1.0
    cheapest = float("inf")
    for _, cost in sorted(points):
        growth = max(growth, cost / cheapest)
        cheapest = min(cheapest, cost)
    return growth


def _targets(
    config: Config,
    results: dict[tuple[str, str, str, int], Outcome],
    step: StepResult | None,
    memory: dict[str, MemoryResult | str],
) -> Table:
    """flowkit against the issue's targets: reported, never asserted."""
    table = Table("flowkit vs targets (reported, not asserted)", ["target", "shape", "measured", "status"])
    top = config.sizes[-1]
    partial = "" if top >= TARGET_N else f" (only measured to N={top:,})"
    if "serial" in config.modes:
        for phase in ("prepare", "run"):
            for shape in config.shapes:
                points = [
                    (n, o.per_atom_us(phase))
                    for n in config.sizes
                    if n >= 100 and isinstance(o := results.get(("flowkit", shape, "serial", n)), FlowTimes)
                ]
                goal = f"serial {phase} ≤ {TARGET_US_PER_ATOM:.0f} µs/atom, flat N=100..{TARGET_N:,}"
                missing = [
                    n
                    for n in config.sizes
                    if n >= 100 and not isinstance(results.get(("flowkit", shape, "serial", n)), FlowTimes)
                ]
                if not points:
                    table.add(goal, shape, "not measured", "not measured")
                    continue
                worst_n, worst = max(points, key=lambda p: p[1])
                growth = _growth(points)
                met = worst <= TARGET_US_PER_ATOM and growth <= TARGET_FLAT_SPREAD and not missing
                detail = f"worst {fmt_us(worst)} µs (N={worst_n:,}); grows {growth:.1f}x"
                if missing:
                    detail += f"; missing N={','.join(f'{n:,}' for n in missing)}"
                table.add(goal, shape, detail, ("met" if met else "NOT met") + partial)
    if step is not None:
        goal = f"parallel chain step ≤ {TARGET_STEP_RATIO:.0f}x ThreadPoolExecutor round trip"
        fk_step = step.per_step_us.get("flowkit")
        if fk_step is not None:
            ratio = fk_step / step.baseline.round_trip_us
            table.add(
                goal,
                "linear",
                f"{fmt_us(fk_step)} µs vs {fmt_us(step.baseline.round_trip_us)} µs = {ratio:.1f}x",
                "met" if ratio <= TARGET_STEP_RATIO else "NOT met",
            )
        else:
            table.add(goal, "linear", "not measured", "not measured")
    goal = f"peak memory ≤ {TARGET_BYTES_PER_ATOM:,} B/atom at N={TARGET_N:,}"
    for shape in config.shapes:
        measured = [
            (method, out)
            for method in config.memory_methods
            if isinstance(out := memory.get(f"flowkit/{shape}/{method}"), MemoryResult)
        ]
        if not measured:
            reason = memory.get(f"flowkit/{shape}/rss")
            table.add(goal, shape, reason if isinstance(reason, str) else "not measured", "not measured")
            continue
        detail = ", ".join(f"{out.per_atom:,.0f} B/atom ({method})" for method, out in measured)
        # Judged on the larger reading, so the verdict never depends on
        # which method happened to be chosen.
        worst = max(out.per_atom for _, out in measured)
        status = "met" if worst <= TARGET_BYTES_PER_ATOM else "NOT met"
        if measured[0][1].n < TARGET_N:
            status += f" (measured at N={measured[0][1].n:,})"
        table.add(goal, shape, detail, status)
    table.notes = [
        f"'flat': from N=100 up, the per-atom cost never rises above {TARGET_FLAT_SPREAD:.0f}x "
        "its value at a smaller N ('grows'); a cost falling with N is fixed cost being amortized.",
        "Memory is judged on the larger of the measured peaks; 3 KB is read strictly as 3,000 bytes.",
    ]
    return table


def _load_average() -> str:
    """1-minute load average: other work on the machine skews every number."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def _environment(libs: list[Library], config: Config, load_at_start: str) -> list[str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    lines = [
        "flowkit benchmarks",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- python: {platform.python_implementation()} {platform.python_version()} on {platform.platform()}",
        f"- cpus: {os.cpu_count()}; load average at start: {load_at_start}; repo commit: {commit or 'unknown'}",
    ]
    lines += [f"- {lib.name}: {lib.version}" for lib in libs]
    lines.append(
        f"- sizes: {', '.join(f'{n:,}' for n in config.sizes)}; "
        f"TaskFlow up to {config.taskflow_max_n:,}; "
        f"budget {config.budget_s:.0f} s per measurement"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; returns the process exit status (0 unless nothing could run)."""
    config = parse_args(argv)
    started = time.perf_counter()
    load_at_start = _load_average()
    libs, notes = _load_libraries(config)
    if not libs:
        print("\n".join(notes), file=sys.stderr)
        return 2
    usable: list[Library] = []
    for lib in libs:
        _progress(f"warming up {lib.name} {lib.version} ...")
        problem = _warm_up(lib, config)
        if problem:
            notes.append(f"NOTE: {lib.name} failed its warm-up run ({problem}); not measured.")
            _progress(notes[-1])
        else:
            usable.append(lib)
    if not usable:
        print("\n".join(notes), file=sys.stderr)
        return 2

    _progress("per-atom grid:")
    results = _run_grid(usable, config)
    _progress(f"[{time.perf_counter() - started:.0f} s] grid done")
    tables = _grid_tables(usable, config, results)
    step = _parallel_step(usable, config, results)
    if step is not None:
        tables.append(step.table)
    tables.append(_pool_overhead(usable, config))
    _progress(f"[{time.perf_counter() - started:.0f} s] step and pool overhead done")
    memory: dict[str, MemoryResult | str] = {}
    if config.memory:
        memory_table, memory = _memory(usable, config)
        tables.append(memory_table)
        _progress(f"[{time.perf_counter() - started:.0f} s] memory done")
    if any(lib.name == "flowkit" for lib in usable):
        tables.append(_targets(config, results, step, memory))
        if config.floors:
            from benchmarks.floors import floor_table

            _progress("near the floor:")
            quick = max(config.sizes) < 100_000
            tables.append(floor_table(quick=quick, repeats=min(3, config.repeats), memory=config.memory))
            _progress(f"[{time.perf_counter() - started:.0f} s] floors done")

    preamble = _environment(usable, config, load_at_start)
    preamble += [f"- {note}" for note in notes]
    preamble.append(f"- total benchmark wall time: {time.perf_counter() - started:,.0f} s")
    print(render(tables, preamble=preamble))
    if config.output is not None:
        fmt = "rst" if config.output.suffix == ".rst" else "markdown"
        config.output.write_text(render(tables, fmt=fmt, preamble=preamble), encoding="utf-8")
        _progress(f"wrote {config.output}")
    return 0
