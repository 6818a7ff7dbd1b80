"""graph_flow.Flow: ordered by data dependencies and explicit links; deciders."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest

from flowkit import exceptions, states
from flowkit.patterns import graph_flow, linear_flow
from tests.support import Add, Capture, Const, Double, Name


def chain() -> list[Any]:
    """x -> y -> total, each needing the one before."""
    return [
        Const(name="make_x", provides="x", inject={"value": 4}),
        Double(name="double", provides="y"),
        Add(name="add", provides="total"),
    ]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_data_decides_the_order_whatever_the_insertion_order(load: Any, order: tuple[int, ...]) -> None:
    atoms = chain()
    flow = graph_flow.Flow("g").add(*[atoms[i] for i in order])
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert capture.names_in(states.RUNNING) == ["make_x", "double", "add"]
    assert engine.storage.fetch("total") == 12


def test_diamond(load: Any) -> None:
    flow = graph_flow.Flow("g").add(
        Add(name="join", provides="joined", rebind=["left", "right"]),
        Double(name="right", provides="right", rebind=["x"]),
        Const(name="source", provides="x", inject={"value": 5}),
        Add(name="left", provides="left", inject={"y": 1}),
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    started = capture.names_in(states.RUNNING)
    assert started[0] == "source"
    assert set(started[1:3]) == {"left", "right"}
    assert started[3] == "join"
    assert engine.storage.fetch("joined") == 16


def test_link_orders_atoms_without_data(load: Any) -> None:
    a, b, c = Name(name="a"), Name(name="b"), Name(name="c")
    flow = graph_flow.Flow("g").add(c, b, a)
    assert flow.link(a, b) is flow
    flow.link(b, c)
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert capture.names_in(states.RUNNING) == ["a", "b", "c"]


def test_link_requires_added_items() -> None:
    a, b = Name(name="a"), Name(name="b")
    flow = graph_flow.Flow("g").add(a)
    with pytest.raises(ValueError):
        flow.link(a, b)


def test_subflow_as_a_node(load: Any) -> None:
    sub = linear_flow.Flow("sub").add(Name(name="s1"), Name(name="s2"))
    first = Name(name="first")
    flow = graph_flow.Flow("g").add(sub, first)
    flow.link(first, sub)
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert capture.names_in(states.RUNNING) == ["first", "s1", "s2"]


def test_subflow_ordered_by_data(run: Any) -> None:
    consumer = linear_flow.Flow("consumer").add(Double(name="double", provides="y"))
    producer = linear_flow.Flow("producer").add(Const(name="make_x", provides="x", inject={"value": 21}))
    flow = graph_flow.Flow("g").add(consumer, producer)
    assert run(flow)["y"] == 42


# --- deciders -----------------------------------------------------------------------------


class Decider:
    """An engine-side decider that remembers what it was asked."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, history: Any) -> bool:
        with self._lock:
            self.calls.append(dict(history))
        return self.answer


def test_decider_false_ignores_target_and_dependents(load: Any) -> None:
    a = Const(name="a", provides="x", inject={"value": 1})
    b = Double(name="b", provides="y")
    c = Double(name="c", provides="z", rebind=["y"])
    flow = graph_flow.Flow("g").add(a, b, c)
    decider = Decider(False)
    flow.link(a, b, decider=decider)
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.get_atom_state("a") == states.SUCCESS
    assert engine.storage.get_atom_state("b") == states.IGNORE
    assert engine.storage.get_atom_state("c") == states.IGNORE
    assert capture.executed("b") == 0
    assert capture.executed("c") == 0
    assert decider.calls == [{"a": 1}]
    assert engine.storage.fetch_all() == {"x": 1}
    with pytest.raises(exceptions.NotFound):
        engine.storage.fetch("y")


def test_decider_true_lets_target_run(load: Any) -> None:
    a = Const(name="a", provides="x", inject={"value": 1})
    b = Double(name="b", provides="y")
    flow = graph_flow.Flow("g").add(a, b)
    decider = Decider(True)
    flow.link(a, b, decider=decider)
    engine = load(flow)
    engine.run()
    assert decider.calls == [{"a": 1}]
    assert engine.storage.get_atom_state("b") == states.SUCCESS
    assert engine.storage.fetch("y") == 2


def test_decider_false_ignores_a_whole_subflow(load: Any) -> None:
    a = Name(name="a")
    sub = linear_flow.Flow("sub").add(Name(name="s1"), Name(name="s2"))
    flow = graph_flow.Flow("g").add(a, sub)
    flow.link(a, sub, decider=Decider(False))
    engine = load(flow)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.get_atom_state("s1") == states.IGNORE
    assert engine.storage.get_atom_state("s2") == states.IGNORE


def test_decider_depth_atom_only_ignores_the_target(load: Any) -> None:
    a, b, c = Name(name="a"), Name(name="b"), Name(name="c")
    flow = graph_flow.Flow("g").add(a, b, c)
    flow.link(a, b, decider=Decider(False), decider_depth="ATOM")
    flow.link(b, c)
    engine = load(flow)
    engine.run()
    assert engine.storage.get_atom_state("a") == states.SUCCESS
    assert engine.storage.get_atom_state("b") == states.IGNORE
    assert engine.storage.get_atom_state("c") == states.SUCCESS
    assert engine.storage.get_flow_state() == states.SUCCESS


def test_decider_depth_all_is_the_default(load: Any) -> None:
    a, b, c = Name(name="a"), Name(name="b"), Name(name="c")
    flow = graph_flow.Flow("g").add(a, b, c)
    flow.link(a, b, decider=Decider(False))
    flow.link(b, c)
    engine = load(flow)
    engine.run()
    assert engine.storage.get_atom_state("c") == states.IGNORE


def test_decider_sees_only_its_source_atoms(load: Any) -> None:
    a = Const(name="a", provides="pa", inject={"value": "A"})
    b = Const(name="b", provides="pb", inject={"value": "B"})
    c = Name(name="c")
    flow = graph_flow.Flow("g").add(a, b, c)
    decider = Decider(True)
    flow.link(a, c, decider=decider)
    flow.link(b, c)
    engine = load(flow)
    engine.run()
    assert decider.calls == [{"a": "A"}]
    assert engine.storage.get_atom_state("c") == states.SUCCESS


def test_unrelated_branch_still_runs_when_a_decider_says_no(load: Any) -> None:
    a, b, other = Name(name="a"), Name(name="b"), Name(name="other")
    flow = graph_flow.Flow("g").add(a, b, other)
    flow.link(a, b, decider=Decider(False))
    engine = load(flow)
    engine.run()
    assert engine.storage.get_atom_state("other") == states.SUCCESS
    assert engine.storage.get_atom_state("b") == states.IGNORE


def test_invalid_decider_depth_is_rejected() -> None:
    a, b = Name(name="a"), Name(name="b")
    flow = graph_flow.Flow("g").add(a, b)
    with pytest.raises(ValueError):
        flow.link(a, b, decider=Decider(True), decider_depth="SOMETIMES")


def broken_decider(history: Any) -> bool:
    raise RuntimeError("decider broke")


def test_a_decider_that_raises_fails_the_flow(load: Any) -> None:
    a, b = Name(name="a"), Name(name="b")
    flow = graph_flow.Flow("g").add(a, b)
    flow.link(a, b, decider=broken_decider)
    engine = load(flow)
    capture = Capture(engine)
    with pytest.raises((RuntimeError, exceptions.FlowkitError)) as info:
        engine.run()
    assert "decider broke" in str(info.value)
    assert capture.executed("b") == 0
    # the flow is finished, not left looking as if it were still running (TaskFlow: FAILURE)
    assert engine.storage.get_flow_state() == states.FAILURE
