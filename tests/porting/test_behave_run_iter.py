"""engine.run_iter() yields TaskFlow's engine states: RESUMING, then rounds of SCHEDULING,
WAITING, ANALYZING, then the flow's final state."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest

# TaskFlow's engine machine: a round starts by SCHEDULING (or, with nothing new to start,
# goes straight on WAITING for what is in flight), and ANALYZING ends each round.
ROUNDS = re.compile(r"RESUMING (SCHEDULING WAITING ANALYZING )((SCHEDULING )?WAITING ANALYZING )*(?P<end>\w+)")


def _modules(package: str) -> tuple[Any, Any, Any, Any]:
    return tuple(  # type: ignore[return-value]
        importlib.import_module(package + name)
        for name in (".task", ".patterns.linear_flow", ".patterns.unordered_flow", ".engines")
    )


def _states(engine: Any) -> str:
    return " ".join(str(state) for state in engine.run_iter())


def test_a_linear_flow_is_one_round_per_task(package: str) -> None:
    task, linear_flow, _unordered_flow, engines = _modules(package)

    class Step(task.Task):
        def execute(self) -> int:
            return 1

    engine = engines.load(linear_flow.Flow("f").add(Step("a"), Step("b")))
    assert _states(engine) == "RESUMING SCHEDULING WAITING ANALYZING SCHEDULING WAITING ANALYZING SUCCESS"


def test_an_empty_flow_still_has_a_round(package: str) -> None:
    _task, linear_flow, _unordered_flow, engines = _modules(package)
    assert _states(engines.load(linear_flow.Flow("empty"))) == "RESUMING SCHEDULING WAITING ANALYZING SUCCESS"


def test_a_failing_flow_reverts_in_rounds_and_ends_reverted(package: str) -> None:
    task, linear_flow, _unordered_flow, engines = _modules(package)

    class Step(task.Task):
        def execute(self) -> int:
            return 1

    class Boom(task.Task):
        def execute(self) -> None:
            raise RuntimeError("boom")

    engine = engines.load(linear_flow.Flow("f").add(Step("a"), Boom("b")))
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="boom"):
        for state in engine.run_iter():
            seen.append(str(state))
    match = ROUNDS.fullmatch(" ".join(seen))
    assert match is not None, seen
    assert match.group("end") == "REVERTED"
    # a, b, then the reverts of b and a: a round each
    assert seen.count("ANALYZING") == 4


def test_a_parallel_engine_waits_again_while_tasks_are_in_flight(package: str) -> None:
    task, _linear_flow, unordered_flow, engines = _modules(package)

    class Step(task.Task):
        def execute(self) -> int:
            return 1

    flow = unordered_flow.Flow("u").add(Step("a"), Step("b"), Step("c"))
    engine = engines.load(flow, engine="parallel", max_workers=2)
    seen = _states(engine)
    match = ROUNDS.fullmatch(seen)
    assert match is not None, seen
    assert match.group("end") == "SUCCESS"


def test_suspending_at_a_state_ends_the_run_suspended(package: str) -> None:
    task, linear_flow, _unordered_flow, engines = _modules(package)
    states = importlib.import_module(package + ".states")
    ran: list[str] = []

    class Step(task.Task):
        def execute(self) -> None:
            ran.append(self.name)

    engine = engines.load(linear_flow.Flow("f").add(Step("a"), Step("b"), Step("c")))
    seen = []
    for state in engine.run_iter():
        seen.append(str(state))
        if state == states.WAITING:
            engine.suspend()
    assert seen == ["RESUMING", "SCHEDULING", "WAITING", "ANALYZING", "SUSPENDED"]
    assert ran == ["a"]
    engine.run()
    assert ran == ["a", "b", "c"]
