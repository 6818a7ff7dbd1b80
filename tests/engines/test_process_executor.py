"""engine="parallel", executor="processes": tasks run in worker processes.

These tests pick their own engine mode, so they behave the same whatever
FLOWKIT_ENGINE_MODE says. Tasks must pickle; one that does not is refused before
anything runs, with its name in the error.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Any

import pytest

import flowkit.engines
from flowkit import as_task, exceptions, retry, states
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from flowkit.task import EVENT_UPDATE_PROGRESS, FunctorTask, Task
from tests.support import (
    Add,
    BoomError,
    Capture,
    Const,
    Double,
    Fail,
    FailOther,
    FailUntil,
    Name,
    OtherBoomError,
    Progress,
    Undoable,
)

PROCESS_OPTIONS: dict[str, Any] = {"engine": "parallel", "executor": "processes", "max_workers": 2}


def load(flow: Any, store: dict[str, Any] | None = None, **kw: Any) -> Any:
    return flowkit.engines.load(flow, store=store, **{**PROCESS_OPTIONS, **kw})


class Pid(Task):
    def execute(self) -> int:
        return os.getpid()


class HoldsALambda(Task):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.callback = lambda: None

    def execute(self) -> None:
        return None


class HoldsALock(Task):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lock = threading.Lock()

    def execute(self) -> None:
        return None


class UnpicklableError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.hook = lambda: None  # cannot cross a process boundary


class RaisesUnpicklable(Task):
    def execute(self) -> None:
        raise UnpicklableError("cannot ship " + self.name)


def square(x: int) -> int:
    return x * x


@as_task(provides="cubed")
def cube(x: int) -> int:
    return x * x * x


def test_tasks_run_in_other_processes() -> None:
    flow = unordered_flow.Flow("u").add(Pid(name="p1", provides="pid1"), Pid(name="p2", provides="pid2"))
    results = flowkit.engines.run(flow, **PROCESS_OPTIONS)
    assert results["pid1"] != os.getpid()
    assert results["pid2"] != os.getpid()


def test_data_flows_between_process_tasks() -> None:
    flow = graph_flow.Flow("g").add(
        Add(name="add", provides="total"),
        Double(name="double", provides="y"),
        Const(name="make_x", provides="x", inject={"value": 5}),
        FunctorTask(square, name="square", provides="squared", rebind=["total"]),
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.fetch_all() == {"x": 5, "y": 10, "total": 15, "squared": 225}
    assert capture.names_in(states.SUCCESS)[-1] == "square"


def test_failure_in_a_worker_reraises_the_original_type_and_reverts() -> None:
    engine = load(linear_flow.Flow("f").add(Undoable(name="a"), Fail(name="bad")))
    capture = Capture(engine)
    with pytest.raises(BoomError, match="bad"):
        engine.run()
    assert capture.names_in(states.REVERTED) == ["bad", "a"]
    summary = capture.reverted_result("a")
    assert summary["result"] == "a"
    assert summary["flow_failures"] == {"bad": "bad"}
    assert summary["flow_failure_types"] == {"bad": True}
    assert engine.storage.get("bad").check(BoomError) is BoomError


def test_several_worker_failures_raise_wrapped_failure() -> None:
    engine = load(unordered_flow.Flow("u").add(Fail(name="f1"), FailOther(name="f2")))
    with pytest.raises(exceptions.WrappedFailure) as info:
        engine.run()
    assert len(info.value) == 2
    assert info.value.check(OtherBoomError) is OtherBoomError


def test_retry_with_process_tasks() -> None:
    flow = linear_flow.Flow("f", retry=retry.Times(3, name="times", provides="attempt")).add(
        FailUntil(name="flaky", provides="ok", inject={"good": 2})
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.fetch("ok") == 2
    assert capture.executed("flaky") == 2


def test_progress_from_a_worker_reaches_the_listener() -> None:
    task = Progress(name="worker", inject={"steps": [0.25, 0.75]})
    seen: list[float] = []
    task.notifier.register(EVENT_UPDATE_PROGRESS, lambda event_type, details: seen.append(details["progress"]))
    engine = load(linear_flow.Flow("f").add(task))
    engine.run()
    assert [p for p in seen if p not in (0.0, 1.0)] == [0.25, 0.75]
    assert engine.storage.get_task_progress("worker") == 1.0


class ContextPid(Task):
    """Return its context's atom name and flow uuid, and the pid it ran in."""

    def execute(self) -> list[Any]:
        context = self.context
        assert context is not None
        return [context.atom_name, context.flow_uuid, os.getpid()]


def test_the_task_context_reaches_a_worker_process() -> None:
    engine = load(linear_flow.Flow("f").add(ContextPid(name="where", provides="where")))
    engine.run()
    name, flow_uuid, pid = engine.storage.fetch("where")
    assert (name, flow_uuid) == ("where", engine.storage.flow_detail.uuid)
    assert pid != os.getpid()


@pytest.mark.parametrize("unpicklable", [HoldsALambda, HoldsALock])
def test_unpicklable_task_is_refused_before_anything_runs(unpicklable: type[Task]) -> None:
    flow = linear_flow.Flow("f").add(Name(name="first"), unpicklable(name="cannot_ship"))
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(exceptions.AtomNotPicklable) as info:
        engine.run()
    assert "cannot_ship" in str(info.value)
    assert capture.events == []


def test_unpicklable_task_is_found_by_validation() -> None:
    engine = load(linear_flow.Flow("f").add(HoldsALambda(name="cannot_ship")))
    with pytest.raises(exceptions.AtomNotPicklable) as info:
        engine.compile()
        engine.prepare()
        engine.validate()
    assert "cannot_ship" in str(info.value)
    assert isinstance(info.value, exceptions.DefinitionError)


def test_unpicklable_task_is_fine_with_threads() -> None:
    results = flowkit.engines.run(
        linear_flow.Flow("f").add(HoldsALock(name="local", provides="out")),
        engine="parallel",
        executor="threads",
        max_workers=2,
    )
    assert results == {"out": None}


def test_a_user_process_pool_is_used_and_left_open() -> None:
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        flow = unordered_flow.Flow("u").add(Pid(name="p1", provides="pid1"), Pid(name="p2", provides="pid2"))
        results = flowkit.engines.run(flow, engine="parallel", executor=pool)
        assert os.getpid() not in (results["pid1"], results["pid2"])
        assert pool.submit(square, 7).result(timeout=30) == 49


def test_decorated_functions_run_in_worker_processes() -> None:
    results = flowkit.engines.run(linear_flow.Flow("f").add(cube()), store={"x": 3}, **PROCESS_OPTIONS)
    assert results["cubed"] == 27


def test_an_exception_that_cannot_be_pickled_still_fails_the_flow_cleanly() -> None:
    engine = load(linear_flow.Flow("f").add(Undoable(name="a"), RaisesUnpicklable(name="odd")))
    capture = Capture(engine)
    with pytest.raises((UnpicklableError, exceptions.WrappedFailure)) as info:
        engine.run()
    if isinstance(info.value, exceptions.WrappedFailure):
        assert info.value.check(UnpicklableError) is UnpicklableError
    assert "cannot ship odd" in str(info.value)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert capture.names_in(states.REVERTED) == ["odd", "a"]
    failure = engine.storage.get("odd")
    assert failure.check("UnpicklableError") == "UnpicklableError"
