"""flowkit.states: a str enum whose members are TaskFlow's state strings."""

from __future__ import annotations

import json

import pytest

from flowkit import states

STATE_NAMES = [
    "PENDING",
    "RUNNING",
    "SUCCESS",
    "FAILURE",
    "REVERTING",
    "REVERTED",
    "REVERT_FAILURE",
    "SUSPENDED",
    "SUSPENDING",
    "RESUMING",
    "IGNORE",
    "RETRYING",
    "SCHEDULING",
    "WAITING",
    "ANALYZING",
    "UNDEFINED",
]

INTENTION_NAMES = ["EXECUTE", "REVERT", "RETRY"]


@pytest.mark.parametrize("name", STATE_NAMES)
def test_state_constant_equals_taskflow_string(name: str) -> None:
    value = getattr(states, name)
    assert isinstance(value, states.State)
    assert isinstance(value, str)
    assert value == name
    assert name == value
    assert states.State(name) is value


@pytest.mark.parametrize("name", INTENTION_NAMES)
def test_intention_constant_equals_taskflow_string(name: str) -> None:
    value = getattr(states, name)
    assert isinstance(value, str)
    assert value == name


def test_states_print_and_serialise_as_plain_strings() -> None:
    # ported code logs and stores states; they must read as TaskFlow's strings
    assert str(states.SUCCESS) == "SUCCESS"
    assert "%s" % states.REVERTED == "REVERTED"
    assert f"{states.FAILURE}" == "FAILURE"
    assert json.dumps([states.IGNORE]) == '["IGNORE"]'


def test_states_are_interchangeable_with_strings_as_keys() -> None:
    by_string = {"SUCCESS": 1, "FAILURE": 2}
    assert by_string[states.SUCCESS] == 1
    by_state = {states.FAILURE: 2}
    assert by_state["FAILURE"] == 2
    assert "REVERTED" in {states.REVERTED}


def test_states_are_distinct() -> None:
    values = [getattr(states, name) for name in STATE_NAMES]
    assert len(set(values)) == len(values)


def test_unknown_state_is_rejected() -> None:
    with pytest.raises(ValueError):
        states.State("NOT_A_STATE")
