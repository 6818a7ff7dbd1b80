"""CaptureListener: events as TaskFlow-style strings."""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import retry
from flowkit.listeners import CaptureListener
from flowkit.patterns import linear_flow
from tests.support import BoomError, Const, Fail, FailUntil, Undoable


def test_success_in_order(load: Any) -> None:
    flow = linear_flow.Flow("order").add(
        Const(name="reserve", provides="r", inject={"value": "R-1"}), Const(name="charge", inject={"value": 42})
    )
    engine = load(flow)
    with CaptureListener(engine) as capture:
        engine.run()
    assert capture.values == [
        "order.f RUNNING",
        "reserve.t RUNNING",
        "reserve.t SUCCESS(R-1)",
        "charge.t RUNNING",
        "charge.t SUCCESS(42)",
        "order.f SUCCESS",
    ]


def test_failure_and_revert(load: Any) -> None:
    flow = linear_flow.Flow("f").add(Undoable(name="a"), Fail(name="b"))
    engine = load(flow)
    with pytest.raises(BoomError), CaptureListener(engine, capture_results=False) as plain:
        with CaptureListener(engine, capture_flow=False) as capture:
            engine.run()
    assert capture.values[:4] == ["a.t RUNNING", "a.t SUCCESS(a)", "b.t RUNNING", "b.t FAILURE(Failure: BoomError: b)"]
    assert capture.values[4] == "b.t REVERTING"
    # Fail's revert returns a summary of what it was given; the event carries it
    assert capture.values[5].startswith("b.t REVERTED({") and "'b': 'b'" in capture.values[5]
    assert capture.values[-2] == "a.t REVERTING"
    assert capture.values[-1].startswith("a.t REVERTED(")
    assert plain.values == [
        "f.f RUNNING",
        "a.t RUNNING",
        "a.t SUCCESS",
        "b.t RUNNING",
        "b.t FAILURE",
        "f.f REVERTING",
        "b.t REVERTING",
        "b.t REVERTED",
        "a.t REVERTING",
        "a.t REVERTED",
        "f.f REVERTED",
    ]


def test_retries_are_suffixed_r_and_can_be_skipped(load: Any) -> None:
    flow = linear_flow.Flow("f", retry=retry.Times(3, name="again", provides="attempt")).add(
        FailUntil(name="flaky", provides="ok")
    )
    engine = load(flow, store={"good": 2})
    with CaptureListener(engine, capture_flow=False, skip_tasks=["flaky"]) as capture:
        engine.run()
    assert capture.values[:2] == ["again.r RUNNING", "again.r SUCCESS(1)"]
    assert "again.r RETRYING" in capture.values
    assert capture.values[-1] == "again.r SUCCESS(2)"
    assert not any(value.startswith("flaky") for value in capture.values)


def test_values_list_can_be_shared(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", inject={"value": 1})))
    shared: list[str] = ["before"]
    with CaptureListener(engine, values=shared, capture_flow=False):
        engine.run()
    assert shared == ["before", "a.t RUNNING", "a.t SUCCESS(1)"]
