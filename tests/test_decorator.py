"""@as_task: a plain function becomes a task factory."""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import LinearFlow, Task, as_task, states
from tests.support import BoomError, Capture, Fail


@as_task
def add(x: int, y: int) -> int:
    return x + y


@as_task(provides="greeting")
def greet(who: str, punctuation: str = "!") -> str:
    return "hello " + who + punctuation


def forget(x: int, result: Any, flow_failures: Any) -> dict[str, Any]:
    return {"x": x, "result": result, "failed": sorted(flow_failures)}


@as_task(provides="stored", revert=forget)
def store(x: int) -> int:
    return x * 100


@as_task(name="renamed_task")
def original_name() -> str:
    return "ran"


def test_fn_is_the_raw_function() -> None:
    assert add.fn(1, 2) == 3
    assert greet.fn("bob") == "hello bob!"


def test_calling_the_factory_makes_a_task() -> None:
    task = add()
    assert isinstance(task, Task)
    assert task.name.rsplit(".", 1)[-1] == "add"
    assert set(task.requires) == {"x", "y"}
    assert set(task.provides) == set()


def test_optional_parameters_are_not_required() -> None:
    task = greet()
    assert set(task.requires) == {"who"}
    assert set(task.provides) == {"greeting"}


def test_each_call_makes_a_new_task() -> None:
    first, second = add(name="first"), add(name="second")
    assert first is not second
    assert first.name == "first"
    assert second.name == "second"


def test_decorator_name_option() -> None:
    assert original_name().name == "renamed_task"
    assert original_name(name="again").name == "again"


def test_factory_options(run: Any) -> None:
    flow = LinearFlow("f").add(
        add(name="sum1", provides="s1"),
        add(name="sum2", provides="s2", rebind={"y": "s1"}),
        add(name="sum3", provides="s3", inject={"x": 1000}, rebind={"y": "s2"}),
        greet(provides="other_greeting"),
    )
    results = run(flow, store={"x": 1, "y": 2, "who": "ann"})
    assert results["s1"] == 3
    assert results["s2"] == 4
    assert results["s3"] == 1004
    assert results["other_greeting"] == "hello ann!"


def test_default_argument_filled_from_storage(run: Any) -> None:
    results = run(LinearFlow("f").add(greet()), store={"who": "bob", "punctuation": "?"})
    assert results["greeting"] == "hello bob?"


def test_decorated_task_runs(run: Any) -> None:
    assert run(LinearFlow("f").add(greet()), store={"who": "ann"})["greeting"] == "hello ann!"


def test_revert_function_is_called(load: Any) -> None:
    engine = load(LinearFlow("f").add(store(), Fail(name="bad")), store={"x": 3})
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    name = store().name
    assert engine.storage.get_atom_state(name) == states.REVERTED
    assert capture.reverted_result(name) == {"x": 3, "result": 300, "failed": ["bad"]}


def test_unknown_rebind_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        add(rebind={"nope": "x"})
