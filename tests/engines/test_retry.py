"""Retry controllers: Times, ForEach, ParameterizedForEach, AlwaysRevert(All), custom.

A retry controller owns the subflow it is attached to: a retried subflow is reverted and run
again without touching the atoms outside it.
"""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import exceptions, retry, states
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from tests.support import BadRevert, BoomError, Capture, Const, Fail, FailUntil, Name, OtherBoomError, Undoable


def flaky(good: Any, name: str = "flaky", source: str = "attempt") -> FailUntil:
    """A task that fails until the value of ``source`` equals ``good``."""
    return FailUntil(name=name, provides=name + "_ok", rebind={"attempt": source}, inject={"good": good})


# --- Times --------------------------------------------------------------------------------


def test_times_retries_until_success(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=retry.Times(5, name="times", provides="attempt")).add(
        Undoable(name="before"), flaky(3)
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("flaky_ok") == 3
    assert engine.storage.fetch("attempt") == 3
    assert capture.executed("flaky") == 3
    assert capture.executed("before") == 3
    assert capture.count("before", states.REVERTED) == 2
    assert capture.count("times", states.RETRYING) == 2


def test_times_provides_the_attempt_number(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=retry.Times(4, name="times", provides="attempt")).add(flaky(4))
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert results_of(capture, "times", states.SUCCESS) == [1, 2, 3, 4]


def results_of(capture: Capture, atom: str, state: str) -> list[Any]:
    """Every result reported with ``atom`` entering ``state``, in order."""
    return [details.get("result") for s, details in capture.details if details["atom_name"] == atom and s == state]


def test_retried_atoms_go_back_to_pending(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=retry.Times(2, name="times", provides="attempt")).add(flaky(2))
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert capture.states_of("flaky") == [
        states.RUNNING,
        states.FAILURE,
        states.REVERTING,
        states.REVERTED,
        states.PENDING,
        states.RUNNING,
        states.SUCCESS,
    ]
    assert states.RETRYING in capture.states_of("times")


def test_times_exhausted_reverts_and_reraises(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=retry.Times(3, name="times", provides="attempt")).add(
        Undoable(name="before"), flaky("never")
    )
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError, match="attempt 3"):
        engine.run()
    assert capture.executed("flaky") == 3
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("times") == states.REVERTED
    assert engine.storage.get_atom_state("before") == states.REVERTED


def test_inner_retry_never_touches_outer_atoms(load: Any) -> None:
    inner = linear_flow.Flow("inner", retry=retry.Times(5, name="inner_retry", provides="attempt")).add(
        Undoable(name="inner_first"), flaky(3)
    )
    flow = linear_flow.Flow("outer", retry=retry.Times(2, name="outer_retry")).add(
        Undoable(name="outer_first"), inner, Name(name="outer_last")
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert capture.executed("outer_first") == 1
    assert capture.count("outer_first", states.REVERTING) == 0
    assert capture.executed("outer_retry") == 1
    assert capture.count("outer_retry", states.RETRYING) == 0
    assert capture.executed("inner_first") == 3
    assert capture.executed("outer_last") == 1


def test_inner_retry_inside_a_graph_flow_leaves_siblings_alone(load: Any) -> None:
    inner = linear_flow.Flow("inner", retry=retry.Times(3, name="inner_retry", provides="attempt")).add(flaky(2))
    flow = graph_flow.Flow("g").add(Const(name="sibling", provides="s", inject={"value": 1}), inner)
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert capture.executed("sibling") == 1
    assert capture.count("sibling", states.REVERTING) == 0
    assert capture.executed("flaky") == 2


def test_exhausted_inner_retry_lets_the_outer_retry_decide(load: Any) -> None:
    # the inner controller gives up (REVERT) on the first outer attempt; the outer one
    # retries everything, and on the second outer attempt the inner flow succeeds
    inner = linear_flow.Flow("inner", retry=retry.Times(2, name="inner_retry")).add(
        Undoable(name="inner_first"), flaky(2, source="outer_attempt")
    )
    flow = linear_flow.Flow("outer", retry=retry.Times(3, name="outer_retry", provides="outer_attempt")).add(
        Undoable(name="outer_first"), inner, Name(name="outer_last")
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("flaky_ok") == 2
    assert capture.executed("outer_first") == 2
    assert capture.count("outer_first", states.REVERTED) == 1
    assert capture.executed("flaky") == 3  # twice under outer attempt 1, once under 2
    assert capture.count("inner_retry", states.REVERTED) == 1
    assert capture.count("outer_retry", states.RETRYING) == 1
    assert capture.executed("outer_last") == 1


def test_exhausted_inner_retry_without_outer_controller(load: Any) -> None:
    # TaskFlow's default for REVERT when no outer controller exists: only the
    # controller's own subflow is reverted; the flow ends REVERTED and re-raises
    inner = linear_flow.Flow("inner", retry=retry.Times(2, name="inner_retry")).add(
        Undoable(name="inner_first"), Fail(name="flaky")
    )
    flow = linear_flow.Flow("outer").add(Undoable(name="outer_first"), inner, Name(name="outer_last"))
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("inner_retry") == states.REVERTED
    assert engine.storage.get_atom_state("inner_first") == states.REVERTED
    assert engine.storage.get_atom_state("outer_last") == states.PENDING
    assert capture.executed("outer_last") == 0
    assert engine.storage.get_atom_state("outer_first") == states.SUCCESS


def test_times_revert_all_reverts_outer_atoms(load: Any) -> None:
    inner = linear_flow.Flow("inner", retry=retry.Times(2, name="inner_retry", revert_all=True)).add(
        Undoable(name="inner_first"), Fail(name="flaky")
    )
    flow = linear_flow.Flow("outer").add(Undoable(name="outer_first"), inner, Name(name="outer_last"))
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.executed("flaky") == 2
    assert engine.storage.get_atom_state("outer_first") == states.REVERTED
    assert engine.storage.get_flow_state() == states.REVERTED
    assert capture.names_in(states.REVERTED)[-1] == "outer_first"


def test_retry_in_unordered_flow(load: Any) -> None:
    flow = unordered_flow.Flow("u", retry=retry.Times(3, name="times", provides="attempt")).add(
        flaky(2, name="f1"), Name(name="steady")
    )
    engine = load(flow)
    engine.run()
    assert engine.storage.fetch("f1_ok") == 2
    assert engine.storage.get_atom_state("steady") == states.SUCCESS


# --- ForEach / ParameterizedForEach -------------------------------------------------------


def test_for_each_tries_values_in_order_and_provides_the_current_one(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=retry.ForEach(["a", "b", "c", "d"], name="each", provides="item")).add(
        flaky("c", source="item")
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.fetch("item") == "c"
    assert engine.storage.fetch("flaky_ok") == "c"
    assert capture.executed("flaky") == 3
    assert results_of(capture, "each", states.SUCCESS) == ["a", "b", "c"]


def test_for_each_exhausted_reverts(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=retry.ForEach(["a", "b"], name="each", provides="item")).add(
        Undoable(name="before"), flaky("z", source="item")
    )
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError, match="'b'"):
        engine.run()
    assert capture.executed("flaky") == 2
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("each") == states.REVERTED


def test_for_each_revert_all(load: Any) -> None:
    inner = linear_flow.Flow("inner", retry=retry.ForEach([1, 2], name="each", provides="item", revert_all=True)).add(
        flaky(9, source="item")
    )
    flow = linear_flow.Flow("outer").add(Undoable(name="outer_first"), inner)
    engine = load(flow)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_atom_state("outer_first") == states.REVERTED


def test_parameterized_for_each_reads_values_from_storage(load: Any) -> None:
    flow = linear_flow.Flow(
        "f", retry=retry.ParameterizedForEach(name="each", provides="item", rebind=["choices"])
    ).add(flaky("y", source="item"))
    engine = load(flow, store={"choices": ["x", "y", "z"]})
    capture = Capture(engine)
    engine.run()
    assert engine.storage.fetch("item") == "y"
    assert capture.executed("flaky") == 2


def test_parameterized_for_each_values_from_an_earlier_atom(load: Any) -> None:
    inner = linear_flow.Flow(
        "inner", retry=retry.ParameterizedForEach(name="each", provides="item", rebind=["choices"])
    ).add(flaky(30, source="item"))
    flow = linear_flow.Flow("outer").add(
        Const(name="make_choices", provides="choices", inject={"value": [10, 20, 30]}), inner
    )
    engine = load(flow)
    engine.run()
    assert engine.storage.fetch("flaky_ok") == 30


# --- AlwaysRevert / AlwaysRevertAll ---------------------------------------------------------


def test_always_revert_reverts_only_its_subflow(load: Any) -> None:
    inner = linear_flow.Flow("inner", retry=retry.AlwaysRevert(name="ar")).add(
        Undoable(name="inner_first"), Fail(name="flaky")
    )
    flow = linear_flow.Flow("outer").add(Undoable(name="outer_first"), inner)
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.executed("flaky") == 1
    assert engine.storage.get_atom_state("inner_first") == states.REVERTED
    assert engine.storage.get_atom_state("outer_first") == states.SUCCESS


def test_always_revert_all_reverts_everything(load: Any) -> None:
    inner = linear_flow.Flow("inner", retry=retry.AlwaysRevertAll(name="ara")).add(
        Undoable(name="inner_first"), Fail(name="flaky")
    )
    flow = linear_flow.Flow("outer").add(Undoable(name="outer_first"), inner)
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.executed("flaky") == 1
    assert engine.storage.get_atom_state("outer_first") == states.REVERTED
    assert capture.names_in(states.REVERTED)[-1] == "outer_first"


# --- custom controllers ---------------------------------------------------------------------


class RetryOnBoom(retry.Retry):
    """Retry while the failures are BoomErrors, at most ``limit`` attempts."""

    def __init__(self, limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit

    def execute(self, history: retry.History) -> int:
        return len(history) * 10

    def on_failure(self, history: retry.History) -> retry.Decision:
        last_result, last_failures = list(history)[-1]
        if len(history) < self.limit and all(failure.check(BoomError) for failure in last_failures.values()):
            return retry.RETRY
        return retry.REVERT


def test_custom_retry_sees_history_and_provides_its_value(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=RetryOnBoom(4, name="custom", provides="attempt")).add(flaky(20))
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.fetch("flaky_ok") == 20
    assert capture.executed("flaky") == 3


def test_custom_retry_gives_up(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=RetryOnBoom(2, name="custom", provides="attempt")).add(flaky(99))
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.executed("flaky") == 2


def test_decision_constants() -> None:
    assert retry.RETRY is retry.Decision.RETRY
    assert retry.REVERT is retry.Decision.REVERT
    assert retry.REVERT_ALL is retry.Decision.REVERT_ALL
    assert retry.RETRY == "RETRY" and retry.REVERT == "REVERT" and retry.REVERT_ALL == "REVERT_ALL"


def test_times_rejects_nonsense() -> None:
    with pytest.raises((ValueError, TypeError)):
        retry.Times(0)


def test_retry_value_reaches_nested_subflows(load: Any) -> None:
    inner = graph_flow.Flow("inner").add(flaky("b", source="item"))
    flow = linear_flow.Flow("f", retry=retry.ForEach(["a", "b"], name="each", provides="item")).add(
        linear_flow.Flow("middle").add(inner)
    )
    engine = load(flow)
    engine.run()
    assert engine.storage.fetch("flaky_ok") == "b"


def test_revert_inside_a_retry_scope_sees_the_failure(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=retry.Times(2, name="times", provides="attempt")).add(
        Undoable(name="before"), flaky(2)
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    summary = capture.reverted_result("before")
    assert summary["result"] == "before"
    assert summary["flow_failures"] == {"flaky": "attempt 1 is not 2"}


def test_controller_enters_retrying_once_its_subflow_is_reverted(load: Any) -> None:
    # TaskFlow's order: the subflow is reverted first, then the controller is RETRYING
    flow = linear_flow.Flow("f", retry=retry.Times(2, name="times", provides="attempt")).add(
        Undoable(name="before"), flaky(2)
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    events = capture.events
    retrying = events.index(("times", states.RETRYING))
    assert events.index(("flaky", states.REVERTED)) < retrying
    assert events.index(("before", states.REVERTED)) < retrying


def test_nested_revert_decisions_revert_only_the_innermost_subflow(load: Any) -> None:
    # TaskFlow: a REVERT is passed to the enclosing controller only so that it can choose
    # something else (RETRY, REVERT_ALL); when it too says REVERT, just the failing
    # atom's own subflow is reverted
    innermost = linear_flow.Flow("innermost", retry=retry.AlwaysRevert(name="inner_retry")).add(
        Undoable(name="inner_task"), Fail(name="boom")
    )
    middle = linear_flow.Flow("middle", retry=retry.AlwaysRevert(name="middle_retry")).add(
        Undoable(name="middle_task"), innermost
    )
    flow = linear_flow.Flow("outer").add(Undoable(name="outer_task"), middle, Name(name="never"))
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("inner_task") == states.REVERTED
    assert engine.storage.get_atom_state("inner_retry") == states.REVERTED
    assert engine.storage.get_atom_state("middle_task") == states.SUCCESS
    assert engine.storage.get_atom_state("middle_retry") == states.SUCCESS
    assert engine.storage.get_atom_state("outer_task") == states.SUCCESS
    assert capture.executed("never") == 0


def test_revert_failure_inside_a_retry_scope_ends_the_flow_in_failure(load: Any) -> None:
    inner = linear_flow.Flow("inner", retry=retry.Times(3, name="times")).add(
        BadRevert(name="stubborn"), Fail(name="boom")
    )
    flow = linear_flow.Flow("outer").add(Undoable(name="outer_first"), inner)
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises((OtherBoomError, exceptions.WrappedFailure)):
        engine.run()
    assert engine.storage.get_flow_state() == states.FAILURE
    assert engine.storage.get_atom_state("stubborn") == states.REVERT_FAILURE
    assert engine.storage.get_atom_state("outer_first") == states.SUCCESS
    # the controller never got to retry: it is not left RETRYING (TaskFlow leaves it SUCCESS)
    assert engine.storage.get_atom_state("times") == states.SUCCESS
    assert capture.executed("boom") == 1


def test_for_each_without_values_fails_the_flow(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=retry.ForEach([], name="each", provides="item")).add(
        Undoable(name="needs_nothing")
    )
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(exceptions.NotFound):
        engine.run()
    assert capture.executed("needs_nothing") == 0
    assert engine.storage.get_flow_state() == states.REVERTED
