"""Cancelling a running flow, and an executor that disappears mid-flow."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest

import flowkit.engines
from flowkit import exceptions, states
from flowkit.engines.executors import AtomExecutor
from flowkit.patterns import linear_flow, unordered_flow
from tests.support import Capture, Name, Undoable


def test_cancel_reverts_what_ran_and_raises_cancelled(load: Any) -> None:
    flow = linear_flow.Flow("f").add(Undoable(name="first"), Name(name="canceller"), Name(name="never"))
    engine = load(flow)

    # Cancelled while "canceller" is starting (in the engine process, so in every mode):
    # it still runs, then the engine reverts at the next atom boundary.
    def on_state(state: Any, details: dict[str, Any]) -> None:
        if state == states.RUNNING and details["atom_name"] == "canceller":
            engine.cancel("stop the order")

    engine.atom_notifier.register("*", on_state)
    capture = Capture(engine)
    with pytest.raises(exceptions.Cancelled, match="stop the order"):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("first") == states.REVERTED
    assert engine.storage.get_atom_state("canceller") == states.REVERTED
    assert capture.executed("never") == 0


def test_cancel_without_revert_suspends(load: Any) -> None:
    flow = linear_flow.Flow("f").add(Name(name="a"), Name(name="b"))
    engine = load(flow)

    def on_state(state: Any, details: dict[str, Any]) -> None:
        if state == states.SUCCESS and details["atom_name"] == "a":
            engine.cancel(revert=False)

    engine.atom_notifier.register("*", on_state)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("b") == states.PENDING


def test_cancel_when_not_running_is_an_error(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="a")))
    with pytest.raises(exceptions.InvalidState, match="not running"):
        engine.cancel()


class LosesItself(AtomExecutor):
    """Runs atoms inline until ``lose_at`` is submitted; that one's future says the executor is gone."""

    local = True

    def __init__(self, lose_at: str) -> None:
        self.lose_at = lose_at
        self.max_in_flight = 4

    def submit(self, fn: Any, *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if args[0].name == self.lose_at:
            future.set_exception(exceptions.ExecutorLost("the cluster's scheduler went away"))
        else:
            future.set_result(fn(*args))
        return future


def test_a_lost_executor_suspends_the_flow_and_it_resumes(engine_options: dict[str, Any]) -> None:
    flow = linear_flow.Flow("f").add(Name(name="a"), Name(name="b"), Name(name="c"))
    engine = flowkit.engines.load(flow, engine=engine_options["engine"], executor=LosesItself("b"))
    capture = Capture(engine)
    with pytest.raises(exceptions.ExecutorLost, match="scheduler went away"):
        engine.run()
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("a") == states.SUCCESS
    assert engine.storage.get_atom_state("b") == states.RUNNING  # unknown: it runs again
    assert capture.executed("c") == 0

    again = flowkit.engines.load(
        flow, engine=engine_options["engine"], backend=engine.backend, flow_detail=engine.flow_detail
    )
    capture = Capture(again)
    again.run()
    assert again.storage.get_flow_state() == states.SUCCESS
    assert capture.executed("a") == 0
    assert capture.executed("b") == 1
    assert capture.executed("c") == 1


def test_a_lost_executor_does_not_wait_for_other_in_flight_atoms(engine_options: dict[str, Any]) -> None:
    class NeverReports(AtomExecutor):
        local = True
        max_in_flight = 4

        def submit(self, fn: Any, *args: Any) -> concurrent.futures.Future[Any]:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            if args[0].name == "lost":
                future.set_exception(exceptions.ExecutorLost("worker pool closed"))
            # every other future never completes, as on a dead cluster
            return future

    flow = unordered_flow.Flow("u").add(Name(name="hanging"), Name(name="lost"))
    engine = flowkit.engines.load(flow, engine=engine_options["engine"], executor=NeverReports())
    with pytest.raises(exceptions.ExecutorLost):
        engine.run()
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("hanging") == states.RUNNING
