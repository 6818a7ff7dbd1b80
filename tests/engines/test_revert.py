"""Reverting: order, what revert() receives, what run() raises, revert failures."""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import exceptions, states
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from flowkit.task import Task
from flowkit.types.failure import Failure
from tests.support import (
    BadRevert,
    BoomError,
    Capture,
    Const,
    Fail,
    FailOther,
    FlowCapture,
    Name,
    OtherBoomError,
    Undoable,
    UndoableAdd,
)


def test_reverts_in_reverse_order(load: Any) -> None:
    flow = linear_flow.Flow("f").add(
        Undoable(name="a"), Undoable(name="b"), Undoable(name="c"), Fail(name="bad"), Name(name="never")
    )
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError, match="bad"):
        engine.run()
    assert capture.names_in(states.REVERTED) == ["bad", "c", "b", "a"]
    # an atom's revert starts only once everything after it is reverted
    revert_events = [e for e in capture.events if e[1] in (states.REVERTING, states.REVERTED)]
    assert revert_events == [
        (name, state) for name in ("bad", "c", "b", "a") for state in (states.REVERTING, states.REVERTED)
    ]
    assert capture.executed("never") == 0
    assert engine.storage.get_atom_state("never") == states.PENDING
    assert engine.storage.get_flow_state() == states.REVERTED


def test_atom_transitions_during_revert(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Undoable(name="a"), Fail(name="bad")))
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.states_of("a") == [
        states.RUNNING,
        states.SUCCESS,
        states.REVERTING,
        states.REVERTED,
    ]
    assert capture.states_of("bad") == [
        states.RUNNING,
        states.FAILURE,
        states.REVERTING,
        states.REVERTED,
    ]


def test_reverse_dependency_order_in_a_graph(load: Any) -> None:
    bad = Fail(name="bad")
    second = UndoableAdd(name="second", provides="y", rebind=["x", "x"])
    flow = graph_flow.Flow("g").add(bad, second, Const(name="first", provides="x", inject={"value": 1}))
    flow.link(second, bad)
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.names_in(states.REVERTED) == ["bad", "second", "first"]
    events = capture.events
    assert events.index(("second", states.REVERTED)) < events.index(("first", states.REVERTING))
    assert events.index(("bad", states.REVERTED)) < events.index(("second", states.REVERTING))


def test_revert_gets_its_arguments_result_and_flow_failures(load: Any) -> None:
    flow = linear_flow.Flow("f").add(UndoableAdd(name="add", provides="sum"), Fail(name="bad"))
    engine = load(flow, store={"x": 2, "y": 3})
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.reverted_result("add") == {
        "args": [2, 3],
        "failed": False,
        "result": 5,
        "flow_failures": {"bad": "bad"},
        "flow_failure_types": {"bad": True},
    }


def test_failing_task_revert_gets_its_own_failure(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Undoable(name="a"), Fail(name="bad")))
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    summary = capture.reverted_result("bad")
    assert summary["failed"] is True
    assert summary["result"] == "bad"
    assert summary["flow_failures"] == {"bad": "bad"}


def test_failure_event_and_storage_carry_the_failure(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Fail(name="bad")))
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    failure = capture.results[("bad", states.FAILURE)]
    assert isinstance(failure, Failure)
    assert failure.check(BoomError) is BoomError
    assert failure.exception_str == "bad"
    stored = engine.storage.get("bad")
    assert isinstance(stored, Failure)
    assert stored.check(BoomError) is BoomError


def test_original_exception_type_is_reraised(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="a"), FailOther(name="other")))
    with pytest.raises(OtherBoomError, match="other") as info:
        engine.run()
    assert not isinstance(info.value, exceptions.WrappedFailure)


class NeedsMissingKey(Task):
    def execute(self) -> None:
        {}["missing"]


def test_builtin_exception_type_is_reraised(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(NeedsMissingKey(name="lookup")))
    with pytest.raises(KeyError):
        engine.run()


def test_several_failures_at_once_raise_wrapped_failure(load: Any) -> None:
    # both are ready together, so both are started before either failure is seen (TaskFlow
    # does the same in its serial engine): every failure is reported
    flow = linear_flow.Flow("f").add(
        Undoable(name="before"),
        unordered_flow.Flow("u").add(Fail(name="f1"), FailOther(name="f2")),
    )
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(exceptions.WrappedFailure) as info:
        engine.run()
    wrapped = info.value
    assert len(wrapped) == 2
    assert all(isinstance(failure, Failure) for failure in wrapped)
    assert sorted(failure.exception_str for failure in wrapped) == ["f1", "f2"]
    assert wrapped.check(OtherBoomError) is OtherBoomError
    assert wrapped.check(BoomError) is BoomError
    assert wrapped.check(KeyError) is None
    assert "f1" in str(wrapped) and "f2" in str(wrapped)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert capture.names_in(states.REVERTED)[-1] == "before"
    # reverts are told about the failures (TaskFlow may pass either or both here)
    seen = capture.reverted_result("before")["flow_failures"]
    assert seen and set(seen) <= {"f1", "f2"}
    assert all(seen[name] == name for name in seen)


def test_revert_failure_ends_the_flow_in_failure(load: Any) -> None:
    flow = linear_flow.Flow("f").add(
        Undoable(name="first"), BadRevert(name="stubborn"), Undoable(name="a"), Fail(name="bad")
    )
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises((OtherBoomError, exceptions.WrappedFailure)) as info:
        engine.run()
    if isinstance(info.value, exceptions.WrappedFailure):
        assert info.value.check(OtherBoomError) is OtherBoomError
    assert engine.storage.get_flow_state() == states.FAILURE
    assert engine.storage.get_atom_state("stubborn") == states.REVERT_FAILURE
    assert engine.storage.get_atom_state("a") == states.REVERTED
    assert engine.storage.get_atom_state("bad") == states.REVERTED
    # reverting stops at the atom whose revert failed
    assert engine.storage.get_atom_state("first") == states.SUCCESS
    assert capture.count("first", states.REVERTING) == 0


def test_flow_notifier_sees_revert(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Undoable(name="a"), Fail(name="bad")))
    flow_capture = FlowCapture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert flow_capture.states[-1] == states.REVERTED


def test_failure_in_a_nested_flow_reverts_the_outer_flow(load: Any) -> None:
    flow = linear_flow.Flow("outer").add(
        Undoable(name="outer_first"),
        linear_flow.Flow("inner").add(Undoable(name="inner_first"), Fail(name="bad")),
        Name(name="never"),
    )
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.names_in(states.REVERTED) == ["bad", "inner_first", "outer_first"]
    assert capture.executed("never") == 0


class Gate:
    """A signal shared by the threads of one test (thread-pool mode only)."""

    event: Any = None


class WaitAtGate(Undoable):
    def execute(self) -> str:
        if not Gate.event.wait(timeout=10):
            raise AssertionError("the gate never opened")
        return self.name


class OpenGateThenFail(Task):
    def execute(self) -> None:
        Gate.event.set()
        raise BoomError(self.name)


@pytest.mark.modes("parallel")  # needs two atoms running at once in this process
def test_nothing_waiting_for_a_worker_starts_once_reverting(load: Any) -> None:
    import threading

    # Two workers. 'done1'/'done2' succeed first; 'blocker' and 'bad' then take both
    # workers while 'queued' may wait for one. 'bad' lets 'blocker' finish and fails: the
    # flow reverts. Whatever ran must be reverted, and nothing may start once reverting
    # began. Whether 'queued' would sneak in late depends on timing, so repeat.
    for attempt in range(20):
        Gate.event = threading.Event()
        flow = unordered_flow.Flow("u").add(
            Undoable(name="done1", priority=30),
            Undoable(name="done2", priority=30),
            WaitAtGate(name="blocker", priority=20),
            OpenGateThenFail(name="bad", priority=10),
            Undoable(name="queued", priority=0),
        )
        engine = load(flow)
        capture = Capture(engine)
        try:
            with pytest.raises(BoomError):
                engine.run()
        finally:
            Gate.event = None
        events = capture.events
        assert engine.storage.get_flow_state() == states.REVERTED
        for name in ("done1", "done2", "blocker", "bad", "queued"):
            assert engine.storage.get_atom_state(name) in (states.REVERTED, states.PENDING), (
                attempt,
                name,
                events,
            )
        first_revert = next(i for i, (_, state) in enumerate(events) if state == states.REVERTING)
        started = [i for i, (_, state) in enumerate(events) if state == states.RUNNING]
        assert max(started) < first_revert, (attempt, events)
