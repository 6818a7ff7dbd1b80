"""states.check_*_transition answer as TaskFlow's do: True valid, False ignored, InvalidState invalid."""

from __future__ import annotations

import importlib
import itertools

import pytest

# Every state a TaskFlow flow or atom can be in (TaskFlow's WAITING is only an engine-loop
# state; in flowkit it is also a durable flow and atom state, so it is compared apart).
STATE_NAMES = [
    "PENDING",
    "RUNNING",
    "SUCCESS",
    "FAILURE",
    "REVERTING",
    "REVERTED",
    "REVERT_FAILURE",
    "SUSPENDING",
    "SUSPENDED",
    "RESUMING",
    "RETRYING",
    "IGNORE",
]


def test_flow_transitions_true_false_or_invalid(package: str) -> None:
    states = importlib.import_module(package + ".states")
    exceptions = importlib.import_module(package + ".exceptions")
    assert states.check_flow_transition(states.PENDING, states.RUNNING) is True
    assert states.check_flow_transition(states.RUNNING, states.SUSPENDING) is True
    # ignored: nothing to do
    assert states.check_flow_transition(states.PENDING, states.RESUMING) is False
    assert states.check_flow_transition(states.SUCCESS, states.SUSPENDING) is False
    assert states.check_flow_transition(states.RUNNING, states.RUNNING) is False
    with pytest.raises(exceptions.InvalidState, match="Flow transition from 'PENDING' to 'SUCCESS' is not allowed"):
        states.check_flow_transition(states.PENDING, states.SUCCESS)


def test_task_and_retry_transitions_are_true_or_false(package: str) -> None:
    states = importlib.import_module(package + ".states")
    assert states.check_task_transition(states.PENDING, states.RUNNING) is True
    assert states.check_task_transition(states.SUCCESS, states.REVERTING) is True
    assert states.check_task_transition(states.SUCCESS, states.SUCCESS) is False
    assert states.check_task_transition(states.PENDING, states.SUCCESS) is False
    assert states.check_task_transition(states.SUCCESS, states.RETRYING) is False
    assert states.check_retry_transition(states.SUCCESS, states.RETRYING) is True
    assert states.check_retry_transition(states.RETRYING, states.RUNNING) is True
    assert states.check_retry_transition(states.PENDING, states.SUCCESS) is False


def _answer(check: object, old: str, new: str) -> object:
    try:
        return check(old, new)  # type: ignore[operator]
    except Exception as error:
        return type(error).__name__


@pytest.mark.parametrize("kind", ["flow", "task", "retry"])
def test_every_pair_of_states_is_answered_as_taskflow_answers_it(kind: str) -> None:
    taskflow_states = pytest.importorskip("taskflow.states", reason="TaskFlow is not installed (the bench extra)")
    from flowkit import states

    ours = getattr(states, "check_%s_transition" % kind)
    theirs = getattr(taskflow_states, "check_%s_transition" % kind)
    pairs = list(itertools.product(STATE_NAMES, repeat=2))
    if kind == "flow":
        # A flowkit flow reports REVERTING while its atoms revert; TaskFlow's goes straight to REVERTED.
        pairs = [pair for pair in pairs if "REVERTING" not in pair]
    differ = {
        pair: (_answer(ours, *pair), _answer(theirs, *pair))
        for pair in pairs
        if _answer(ours, *pair) != _answer(theirs, *pair)
    }
    assert differ == {}
    assert len(pairs) >= 121


def test_flowkit_only_states_are_valid_where_flowkit_uses_them() -> None:
    from flowkit import exceptions, states

    # a flow parked on a timer, an atom waiting on one, a retry policy that ran out
    assert states.check_flow_transition(states.RUNNING, states.WAITING) is True
    assert states.check_flow_transition(states.WAITING, states.RUNNING) is True
    assert states.check_flow_transition(states.RUNNING, states.REVERTING) is True
    assert states.check_flow_transition(states.REVERTING, states.REVERTED) is True
    assert states.check_task_transition(states.PENDING, states.WAITING) is True
    assert states.check_task_transition(states.RUNNING, states.BROKEN) is True
    with pytest.raises(exceptions.InvalidState):
        states.check_flow_transition(states.WAITING, states.SUCCESS)
    # not a state at all
    assert states.check_task_transition("PENDING", "NOT_A_STATE") is False
    with pytest.raises(exceptions.InvalidState):
        states.check_flow_transition("PENDING", "NOT_A_STATE")
