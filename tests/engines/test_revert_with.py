"""A flow's own undo: ``Flow(name, revert_with=...)`` runs once instead of its atoms' reverts."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import flowkit.engines
from flowkit import exceptions, retry, states
from flowkit.engines.executors import AtomExecutor, make_executor, run_revert
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from flowkit.task import Task
from flowkit.types.failure import Failure
from tests.support import BoomError, Capture, Fail, FailUntil, Undoable

UNDO = "vm.revert_with"


def undo_summary(results: Mapping[str, Any], flow_failures: Mapping[str, Failure]) -> dict[str, Any]:
    """A flow-level undo that reports what it was given (as JSON)."""
    return {
        "results": dict(results),
        "failures": {name: failure.exception_str for name, failure in flow_failures.items()},
    }


def undo_that_fails(results: Mapping[str, Any], flow_failures: Mapping[str, Failure]) -> None:
    raise BoomError("could not delete the vm")


class DeleteVm(Task):
    """A task used as a flow's undo: its revert names only what it uses."""

    def revert(self, results: Mapping[str, Any]) -> Any:
        return {"deleted": results.get("vm")}


def vm_flow(revert_with: Any, flow_class: Callable[..., Any] = linear_flow.Flow) -> Any:
    return flow_class("vm", revert_with=revert_with).add(
        Undoable(name="create", provides="vm"),
        Undoable(name="configure", provides="config"),
    )


def test_the_undo_runs_once_instead_of_the_atoms_reverts(load: Any) -> None:
    flow = linear_flow.Flow("order").add(vm_flow(undo_summary), Fail(name="boom"))
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert capture.count(UNDO, states.REVERTING) == 1
    assert capture.reverted_result(UNDO) == {
        "results": {"vm": "create", "config": "configure"},
        "failures": {"boom": "boom"},
    }
    for name in ("create", "configure"):
        assert engine.storage.get_atom_state(name) == states.REVERTED
        assert capture.count(name, states.REVERTING) == 0  # their own revert never ran
        assert engine.storage.get_revert_result(name) is None


@pytest.mark.parametrize("flow_class", [linear_flow.Flow, unordered_flow.Flow, graph_flow.Flow])
def test_every_pattern_takes_an_undo(load: Any, flow_class: Callable[..., Any]) -> None:
    inner = vm_flow(undo_summary, flow_class)
    inner.add(Fail(name="boom"))
    engine = load(inner)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert capture.count(UNDO, states.REVERTED) == 1
    assert capture.reverted_result(UNDO)["failures"] == {"boom": "boom"}
    assert capture.names_in(states.REVERTING) == [UNDO]


def test_a_task_as_the_undo_gets_what_its_revert_names(load: Any) -> None:
    flow = linear_flow.Flow("order").add(vm_flow(DeleteVm(name="delete")), Fail(name="boom"))
    engine = load(flow)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_revert_result(UNDO) == {"deleted": "create"}


def test_a_flow_that_never_started_does_not_undo(load: Any) -> None:
    flow = linear_flow.Flow("order").add(Fail(name="boom"), vm_flow(undo_summary))
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert capture.count(UNDO, states.REVERTING) == 0
    for name in (UNDO, "create", "configure"):
        assert engine.storage.get_atom_state(name) == states.PENDING


def test_nested_inner_undo_and_outer_atoms_revert_in_reverse_order(load: Any) -> None:
    flow = linear_flow.Flow("order").add(
        Undoable(name="reserve"),
        vm_flow(undo_summary),
        Undoable(name="announce"),
        Fail(name="boom"),
    )
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert capture.names_in(states.REVERTING) == ["boom", "announce", UNDO, "reserve"]
    assert capture.reverted_result("announce")["result"] == "announce"


def test_an_outer_undo_replaces_an_inner_one(load: Any) -> None:
    inner = vm_flow(undo_summary)
    outer = linear_flow.Flow("all", revert_with=undo_summary).add(Undoable(name="reserve", provides="r"), inner)
    flow = linear_flow.Flow("order").add(outer, Fail(name="boom"))
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.names_in(states.REVERTING) == ["boom", "all.revert_with"]
    assert capture.reverted_result("all.revert_with")["results"] == {
        "r": "reserve",
        "vm": "create",
        "config": "configure",
    }
    assert engine.storage.get_atom_state(UNDO) == states.REVERTED


def test_inside_a_retry_scope_the_undo_runs_then_the_scope_again(load: Any) -> None:
    flow = linear_flow.Flow("vm", retry=retry.Times(3, provides="attempt"), revert_with=undo_summary).add(
        Undoable(name="create", provides="vm"),
        FailUntil(name="configure", inject={"good": 3}),
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert capture.executed("configure") == 3
    assert capture.count(UNDO, states.REVERTED) == 2  # once per failed attempt
    assert capture.count("create", states.REVERTING) == 0
    assert engine.storage.get_atom_state(UNDO) == states.SUCCESS


def test_an_undo_inside_a_flow_whose_scope_retries_only_runs_with_its_flow(load: Any) -> None:
    # The retry scope holds the undo's flow and the failing atom; the scope is retried as a whole.
    flow = linear_flow.Flow("order", retry=retry.Times(2, provides="attempt")).add(
        vm_flow(undo_summary), FailUntil(name="settle", inject={"good": 2})
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert capture.count(UNDO, states.REVERTED) == 1
    assert capture.count("create", states.REVERTING) == 0


def test_an_undo_that_raises_is_a_revert_failure(load: Any) -> None:
    flow = linear_flow.Flow("order").add(vm_flow(undo_that_fails), Fail(name="boom"))
    engine = load(flow)
    with pytest.raises(Exception) as raised:
        engine.run()
    assert engine.storage.get_flow_state() == states.FAILURE
    assert engine.storage.get_atom_state(UNDO) == states.REVERT_FAILURE
    assert "could not delete the vm" in str(raised.value)
    assert "could not delete the vm" in engine.storage.get_revert_failures()[UNDO].exception_str


class LosesTheUndo(AtomExecutor):
    """The mode's executor, except that the first revert of the undo reports the executor lost."""

    def __init__(self, inner: AtomExecutor) -> None:
        self.inner = inner
        self.local = inner.local
        self.inline = inner.inline
        self.max_in_flight = inner.max_in_flight
        self.lost = False

    def start(self) -> None:
        self.inner.start()

    def stop(self) -> None:
        self.inner.stop()

    def check_atom(self, atom: Any) -> None:
        self.inner.check_atom(atom)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        if fn is run_revert and args[0].name == UNDO and not self.lost:
            self.lost = True
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_exception(exceptions.ExecutorLost("the workers went away during the undo"))
            return future
        return self.inner.submit(fn, *args)


def test_an_undo_interrupted_by_a_crash_runs_again_on_resume(engine_options: dict[str, Any]) -> None:
    mode = engine_options["engine"]
    inner = make_executor(
        mode, engine_options.get("executor"), engine_options.get("max_workers"), client=engine_options.get("client")
    )

    def build() -> Any:
        return linear_flow.Flow("order").add(Undoable(name="reserve"), vm_flow(undo_summary), Fail(name="boom"))

    engine = flowkit.engines.load(build(), engine=mode, executor=LosesTheUndo(inner))
    capture = Capture(engine)
    with pytest.raises(exceptions.ExecutorLost, match="during the undo"):
        engine.run()
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state(UNDO) == states.REVERTING
    assert engine.storage.get_atom_state("reserve") == states.SUCCESS
    assert capture.count(UNDO, states.REVERTED) == 0

    again = flowkit.engines.load(build(), backend=engine.backend, flow_detail=engine.flow_detail, **engine_options)
    capture = Capture(again)
    with pytest.raises(BoomError):
        again.run()
    assert again.storage.get_flow_state() == states.REVERTED
    assert capture.names_in(states.REVERTING) == [UNDO, "reserve"]
    assert again.storage.get_revert_result(UNDO)["results"] == {"vm": "create", "config": "configure"}
    for name in ("create", "configure"):
        assert capture.count(name, states.REVERTING) == 0


@pytest.mark.parametrize("bad", [42, "delete", Undoable, retry.Times(2)])
def test_an_undo_that_is_not_a_task_or_callable_is_a_type_error(bad: Any) -> None:
    with pytest.raises(TypeError, match="flow 'vm': revert_with must be"):
        linear_flow.Flow("vm", revert_with=bad)
    with pytest.raises(TypeError, match="flow 'vm': revert_with must be"):
        graph_flow.Flow("vm", revert_with=bad)
