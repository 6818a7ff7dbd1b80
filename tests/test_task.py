"""Task and FunctorTask: construction, and what a flow sees of them when run."""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import states
from flowkit.patterns import linear_flow
from flowkit.task import EVENT_UPDATE_PROGRESS, FunctorTask, Task
from tests.support import BoomError, Capture, Name, Undoable


class Greet(Task):
    def execute(self, who: str) -> str:
        return "hello " + who


def shout(text: str) -> str:
    return text.upper()


def unshout(text: str, result: Any, flow_failures: Any, **kwargs: Any) -> dict[str, Any]:
    return {"text": text, "result": result, "failed": sorted(flow_failures)}


def explode() -> None:
    raise BoomError("functor exploded")


def test_name_defaults_to_the_class_name() -> None:
    assert Greet().name.rsplit(".", 1)[-1] == "Greet"
    assert Greet(name="custom").name == "custom"


def test_requirements_come_from_execute_signature() -> None:
    task = Greet()
    assert set(task.requires) == {"who"}
    assert set(task.provides) == set()
    assert set(Greet(provides="greeting").provides) == {"greeting"}


def test_task_without_execute_cannot_run() -> None:
    class Empty(Task):
        pass

    with pytest.raises(Exception):
        Empty(name="empty").execute()


def test_default_revert_does_nothing() -> None:
    assert Greet().revert("x", result="hello x", flow_failures={}) is None


def test_task_runs_alone(load: Any) -> None:
    engine = load(Greet(provides="greeting"), store={"who": "bob"})
    engine.run()
    assert engine.storage.fetch("greeting") == "hello bob"
    assert engine.storage.get_flow_state() == states.SUCCESS


def test_task_runs_in_a_flow(run: Any) -> None:
    flow = linear_flow.Flow("f").add(Greet(provides="greeting"))
    assert run(flow, store={"who": "ann"}) == {"who": "ann", "greeting": "hello ann"}


def test_functor_task_name_defaults_to_function_name() -> None:
    task = FunctorTask(shout)
    assert task.name.rsplit(".", 1)[-1] == "shout"
    assert set(task.requires) == {"text"}
    assert FunctorTask(execute=shout, name="loud").name == "loud"


def test_functor_task_runs(run: Any) -> None:
    flow = linear_flow.Flow("f").add(FunctorTask(execute=shout, provides="loud"))
    assert run(flow, store={"text": "hi"})["loud"] == "HI"


def test_functor_task_rebind_and_inject(run: Any) -> None:
    flow = linear_flow.Flow("f").add(
        FunctorTask(execute=shout, name="a", provides="a_out", rebind={"text": "other"}),
        FunctorTask(execute=shout, name="b", provides="b_out", inject={"text": "injected"}),
    )
    results = run(flow, store={"other": "from store"})
    assert results["a_out"] == "FROM STORE"
    assert results["b_out"] == "INJECTED"


def test_functor_task_revert_is_called(load: Any) -> None:
    flow = linear_flow.Flow("f").add(
        FunctorTask(execute=shout, revert=unshout, name="loud", provides="loud"),
        FunctorTask(execute=explode, name="explode"),
    )
    engine = load(flow, store={"text": "hi"})
    capture = Capture(engine)
    with pytest.raises(BoomError, match="functor exploded"):
        engine.run()
    assert engine.storage.get_atom_state("loud") == states.REVERTED
    assert capture.reverted_result("loud") == {
        "text": "hi",
        "result": "HI",
        "failed": ["explode"],
    }


def test_functor_task_requires_a_callable() -> None:
    with pytest.raises((TypeError, ValueError)):
        FunctorTask(execute="not callable")  # type: ignore[arg-type]


def test_update_progress_notifies_task_listeners_clamped() -> None:
    task = Name(name="p")
    seen: list[tuple[str, float]] = []
    task.notifier.register(
        EVENT_UPDATE_PROGRESS,
        lambda event_type, details: seen.append((event_type, details["progress"])),
    )
    for value in (0.5, 7, -2, 0.25):
        task.update_progress(value)
    assert seen == [
        (EVENT_UPDATE_PROGRESS, 0.5),
        (EVENT_UPDATE_PROGRESS, 1.0),
        (EVENT_UPDATE_PROGRESS, 0.0),
        (EVENT_UPDATE_PROGRESS, 0.25),
    ]


def test_a_task_instance_can_be_run_twice_in_separate_engines(load: Any) -> None:
    task = Undoable(name="u", provides="out")
    for _ in range(2):
        engine = load(linear_flow.Flow("f").add(task))
        engine.run()
        assert engine.storage.fetch("out") == "u"
