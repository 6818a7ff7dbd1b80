"""suspend(): in-flight atoms finish, the flow ends SUSPENDED, run() again continues.

Suspension is requested from notifier callbacks, which run in the engine, so these tests
work whichever way the engine runs its tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flowkit import states
from flowkit.patterns import linear_flow, unordered_flow
from flowkit.task import EVENT_UPDATE_PROGRESS
from tests.support import BoomError, Capture, Const, Double, Fail, FlowCapture, Name, Progress, Undoable


def suspend_when(engine: Any, atom: str, state: str) -> Callable[..., None]:
    """Register a callback that suspends ``engine`` when ``atom`` enters ``state``."""

    def callback(new_state: Any, details: dict[str, Any]) -> None:
        if details["atom_name"] == atom and new_state == state:
            engine.suspend()

    engine.atom_notifier.register("*", callback)
    return callback


def chain() -> Any:
    return linear_flow.Flow("chain").add(
        Const(name="a", provides="x", inject={"value": 1}),
        Double(name="b", provides="y", rebind=["x"]),
        Double(name="c", provides="z", rebind=["y"]),
    )


def test_suspend_after_an_atom_then_resume(load: Any) -> None:
    engine = load(chain())
    callback = suspend_when(engine, "a", states.SUCCESS)
    capture = Capture(engine)
    assert engine.run() is None  # suspension is not an error
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("a") == states.SUCCESS
    assert engine.storage.get_atom_state("b") == states.PENDING
    assert engine.storage.get_atom_state("c") == states.PENDING
    assert capture.executed("b") == 0

    engine.atom_notifier.deregister("*", callback)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("z") == 4
    assert capture.executed("a") == 1  # not run again
    assert capture.executed("b") == 1
    assert capture.executed("c") == 1


def test_in_flight_atoms_finish(load: Any) -> None:
    flow = linear_flow.Flow("f").add(
        unordered_flow.Flow("u").add(Name(name="p1"), Name(name="p2")),
        Name(name="after"),
    )
    engine = load(flow)
    suspend_when(engine, "p1", states.RUNNING)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUSPENDED
    started = set(capture.names_in(states.RUNNING))
    assert "p1" in started
    assert "after" not in started
    for name in started:
        assert engine.storage.get_atom_state(name) == states.SUCCESS
    assert engine.storage.get_atom_state("after") == states.PENDING


def test_suspend_from_the_flow_notifier_before_anything_runs(load: Any) -> None:
    engine = load(chain())

    def callback(state: Any, details: dict[str, Any]) -> None:
        if state == states.RUNNING:
            engine.suspend()

    engine.notifier.register("*", callback)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert capture.events == []
    engine.notifier.deregister("*", callback)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("z") == 4


def test_flow_notifier_reports_suspended(load: Any) -> None:
    engine = load(chain())
    suspend_when(engine, "b", states.SUCCESS)
    flow_capture = FlowCapture(engine)
    engine.run()
    assert flow_capture.states[-1] == states.SUSPENDED


def test_run_iter_ends_with_suspended(load: Any) -> None:
    engine = load(chain())
    callback = suspend_when(engine, "a", states.SUCCESS)
    seen = list(engine.run_iter())
    assert seen[-1] == states.SUSPENDED
    engine.atom_notifier.deregister("*", callback)
    seen = list(engine.run_iter())
    assert seen[-1] == states.SUCCESS
    assert engine.storage.fetch("z") == 4


def test_suspend_while_reverting_then_finish_reverting(load: Any) -> None:
    flow = linear_flow.Flow("f").add(Undoable(name="a"), Undoable(name="b"), Fail(name="bad"))
    engine = load(flow)
    callback = suspend_when(engine, "b", states.REVERTED)
    engine.run()  # suspended: the failure is not raised yet
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("a") == states.SUCCESS
    assert engine.storage.get_atom_state("b") == states.REVERTED
    engine.atom_notifier.deregister("*", callback)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("a") == states.REVERTED


def test_suspend_when_not_running_is_harmless(load: Any) -> None:
    engine = load(chain())
    engine.run()
    engine.suspend()
    assert engine.storage.get_flow_state() == states.SUCCESS


def test_suspend_requested_by_a_task_through_its_progress(load: Any) -> None:
    # the task reports progress; the listener (in the engine) asks for suspension; the
    # task itself is in flight, so it finishes
    task = Progress(name="reporter", inject={"steps": [0.5]})
    flow = linear_flow.Flow("f").add(task, Name(name="after"))
    engine = load(flow)

    def on_progress(event_type: str, details: dict[str, Any]) -> None:
        if details["progress"] == 0.5:
            engine.suspend()

    task.notifier.register(EVENT_UPDATE_PROGRESS, on_progress)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("reporter") == states.SUCCESS
    assert engine.storage.get_atom_state("after") == states.PENDING
    task.notifier.deregister(EVENT_UPDATE_PROGRESS, on_progress)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert capture.executed("reporter") == 1
    assert capture.executed("after") == 1
