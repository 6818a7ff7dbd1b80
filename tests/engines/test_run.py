"""Loading and running: load()/run(), run_iter(), reset(), statistics(), executors."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
import time
from typing import Any

import pytest

import flowkit
import flowkit.engines
from flowkit import exceptions, states
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from tests.support import Add, BoomError, Capture, Const, Double, Fail, FlowCapture, Name


def simple_flow() -> Any:
    return linear_flow.Flow("simple").add(
        Const(name="make_x", provides="x", inject={"value": 1}),
        Double(name="double", provides="y"),
    )


def test_engine_run_returns_none_and_stores_results(load: Any) -> None:
    engine = load(simple_flow())
    assert engine.run() is None
    assert engine.storage.fetch_all() == {"x": 1, "y": 2}
    assert engine.storage.get_flow_state() == states.SUCCESS


def test_engines_run_returns_all_results(run: Any) -> None:
    assert run(simple_flow(), store={"unused": "kept"}) == {"x": 1, "y": 2, "unused": "kept"}


def test_top_level_run_and_load(engine_options: dict[str, Any]) -> None:
    assert flowkit.run(simple_flow(), **engine_options) == {"x": 1, "y": 2}
    engine = flowkit.load(simple_flow(), **engine_options)
    engine.run()
    assert engine.storage.fetch("y") == 2


def test_load_a_single_task(load: Any) -> None:
    engine = load(Add(name="add", provides="sum"), store={"x": 1, "y": 2})
    engine.run()
    assert engine.storage.fetch("sum") == 3
    assert engine.storage.get_atom_state("add") == states.SUCCESS


def test_unknown_engine_mode_is_rejected() -> None:
    with pytest.raises((ValueError, exceptions.FlowkitError)):
        flowkit.engines.load(simple_flow(), engine="no-such-engine")


def test_compile_prepare_validate_then_run(load: Any) -> None:
    engine = load(simple_flow())
    engine.compile()
    engine.prepare()
    engine.validate()
    assert engine.storage.get_flow_state() == states.PENDING
    assert engine.storage.get_atom_state("double") == states.PENDING
    engine.run()
    assert engine.storage.get_atom_state("double") == states.SUCCESS


def test_run_iter_yields_states_ending_with_the_flow_state(load: Any) -> None:
    engine = load(simple_flow())
    seen = list(engine.run_iter())
    assert seen, "run_iter() yielded nothing"
    assert all(isinstance(state, states.State) for state in seen)
    assert seen[-1] == states.SUCCESS
    assert engine.storage.fetch("y") == 2


def test_run_iter_yields_taskflows_rounds_in_every_mode(load: Any) -> None:
    # RESUMING, then rounds of [SCHEDULING] WAITING ANALYZING, then the flow's state
    seen = " ".join(str(state) for state in load(simple_flow()).run_iter())
    assert re.fullmatch(r"RESUMING SCHEDULING WAITING ANALYZING ((SCHEDULING )?WAITING ANALYZING )*SUCCESS", seen), seen
    seen = " ".join(str(state) for state in load(linear_flow.Flow("empty")).run_iter())
    assert seen == "RESUMING SCHEDULING WAITING ANALYZING SUCCESS"


def test_run_iter_ends_reverted_on_failure(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="a"), Fail(name="bad")))
    seen: list[Any] = []
    with pytest.raises(BoomError):
        for state in engine.run_iter():
            seen.append(state)
    assert seen[-1] == states.REVERTED
    assert engine.storage.get_flow_state() == states.REVERTED


def test_run_again_after_success_does_not_rerun(load: Any) -> None:
    engine = load(simple_flow())
    engine.run()
    capture = Capture(engine)
    engine.run()
    assert capture.events == []
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("y") == 2


def test_reset_makes_the_flow_run_again(load: Any) -> None:
    engine = load(simple_flow())
    engine.run()
    engine.reset()
    assert engine.storage.get_flow_state() == states.PENDING
    assert engine.storage.get_atom_state("double") == states.PENDING
    with pytest.raises(exceptions.NotFound):
        engine.storage.fetch("y")
    capture = Capture(engine)
    engine.run()
    assert capture.executed("make_x") == 1
    assert capture.executed("double") == 1
    assert engine.storage.fetch("y") == 2


def test_run_after_revert_runs_the_flow_again(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="a"), Fail(name="bad")))
    with pytest.raises(BoomError):
        engine.run()
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.executed("a") == 1
    assert engine.storage.get_flow_state() == states.REVERTED


def test_flow_notifier_reports_running_then_success(load: Any) -> None:
    engine = load(simple_flow())
    flow_capture = FlowCapture(engine)
    engine.run()
    assert states.RUNNING in flow_capture.states
    assert flow_capture.states[-1] == states.SUCCESS


def test_wide_flows_finish(load: Any) -> None:
    flow = graph_flow.Flow("wide").add(
        Const(name="root", provides="x", inject={"value": 1}),
        *[Double(name="leaf%d" % i, provides="y%d" % i) for i in range(50)],
    )
    engine = load(flow)
    engine.run()
    results = engine.storage.fetch_all()
    assert all(results["y%d" % i] == 2 for i in range(50))


def test_long_chains_finish(load: Any) -> None:
    atoms = [Const(name="c0", provides="v0", inject={"value": 0})]
    for i in range(1, 200):
        atoms.append(Add(name="c%d" % i, provides="v%d" % i, rebind=["v%d" % (i - 1)], inject={"y": 1}))
    engine = load(linear_flow.Flow("chain").add(*atoms))
    engine.run()
    assert engine.storage.fetch("v199") == 199


def test_statistics(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="a"), Name(name="b"), Fail(name="bad")))
    with pytest.raises(BoomError):
        engine.run()
    stats = engine.statistics()
    assert dataclasses.is_dataclass(stats)
    assert type(stats).__name__ == "EngineStatistics"
    assert stats.atoms_total == 3
    assert stats.atoms_executed == 3
    assert stats.atoms_reverted == 3
    for field in ("compile_seconds", "prepare_seconds", "run_seconds"):
        assert getattr(stats, field) >= 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.atoms_total = 0  # type: ignore[misc]


def test_a_run_returns_promptly(engine_options: dict[str, Any]) -> None:
    # TaskFlow's parallel engine spends about a second shutting its pool down on every run
    flowkit.engines.run(Name(name="warm_up"), **engine_options)
    started = time.monotonic()
    for _ in range(3):
        flowkit.engines.run(unordered_flow.Flow("u").add(Name(name="a"), Name(name="b")), **engine_options)
    assert time.monotonic() - started < 1.5


# --- parallel-only options (these pick their own mode) -------------------------------------


def test_parallel_with_a_user_executor_leaves_it_running() -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        flow = unordered_flow.Flow("u").add(*[Name(name="n%d" % i, provides="r%d" % i) for i in range(4)])
        results = flowkit.engines.run(flow, engine="parallel", executor=pool)
        assert results == {"r%d" % i: "n%d" % i for i in range(4)}
        # the engine must not shut down a pool it does not own
        assert pool.submit(lambda: 42).result(timeout=10) == 42


@pytest.mark.parametrize("workers", [1, 4])
def test_parallel_max_workers(workers: int) -> None:
    flow = unordered_flow.Flow("u").add(*[Name(name="n%d" % i, provides="r%d" % i) for i in range(6)])
    results = flowkit.engines.run(flow, engine="parallel", executor="threads", max_workers=workers)
    assert len(results) == 6


class MeetAtBarrier(Name):
    """Wait until ``parties`` tasks are running at once (threads only)."""

    barrier: Any = None

    def execute(self) -> str:
        MeetAtBarrier.barrier.wait(timeout=10)
        return self.name


@pytest.mark.modes("parallel")  # only the thread-pool mode runs two atoms at once in this process
def test_parallel_mode_runs_ready_atoms_at_the_same_time(load: Any) -> None:
    import threading

    MeetAtBarrier.barrier = threading.Barrier(2)
    try:
        flow = unordered_flow.Flow("u").add(
            MeetAtBarrier(name="m1", provides="r1"), MeetAtBarrier(name="m2", provides="r2")
        )
        engine = load(flow)
        # with max_workers=2 both must be running at once, or the barrier breaks
        engine.run()
    finally:
        MeetAtBarrier.barrier = None
    assert engine.storage.fetch_all() == {"r1": "m1", "r2": "m2"}


def test_reset_after_a_revert_runs_everything_again(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="a"), Fail(name="bad")))
    with pytest.raises(BoomError):
        engine.run()
    engine.reset()
    assert engine.storage.get_flow_state() == states.PENDING
    assert engine.storage.get_atom_state("a") == states.PENDING
    assert engine.storage.get_atom_state("bad") == states.PENDING
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.executed("a") == 1
    assert capture.executed("bad") == 1
