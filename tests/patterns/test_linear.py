"""linear_flow.Flow: items run one after another, in the order added."""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import states
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from tests.support import Add, Capture, Const, Double, Name


def test_add_returns_the_flow_and_flow_is_a_container() -> None:
    a, b, c = Name(name="a"), Name(name="b"), Name(name="c")
    flow = linear_flow.Flow("lin")
    assert flow.add(a, b) is flow
    flow.add(c)
    assert flow.name == "lin"
    assert flow.retry is None
    assert len(flow) == 3
    assert list(flow) == [a, b, c]


def test_only_atoms_and_flows_can_be_added() -> None:
    with pytest.raises((TypeError, ValueError)):
        linear_flow.Flow("lin").add("not an atom")  # type: ignore[arg-type]


def test_runs_in_insertion_order_without_data_dependencies(load: Any) -> None:
    names = ["n%d" % i for i in range(8)]
    engine = load(linear_flow.Flow("lin").add(*[Name(name=n) for n in names]))
    capture = Capture(engine)
    engine.run()
    assert capture.names_in(states.RUNNING) == names
    assert capture.names_in(states.SUCCESS) == names


def test_each_atom_sees_what_earlier_atoms_provided(run: Any) -> None:
    flow = linear_flow.Flow("lin").add(
        Const(name="start", provides="x", inject={"value": 3}),
        Double(name="double", provides="y"),
        Add(name="add", provides="total"),
    )
    assert run(flow) == {"x": 3, "y": 6, "total": 9}


def test_every_atom_ends_success(load: Any) -> None:
    engine = load(linear_flow.Flow("lin").add(Name(name="a"), Name(name="b")))
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    for name in ("a", "b"):
        assert engine.storage.get_atom_state(name) == states.SUCCESS
        assert capture.states_of(name) == [states.RUNNING, states.SUCCESS]


def test_nested_flows_keep_the_outer_order(load: Any) -> None:
    inner_unordered = unordered_flow.Flow("u").add(Name(name="u1"), Name(name="u2"))
    inner_linear = linear_flow.Flow("l").add(Name(name="l1"), Name(name="l2"))
    flow = linear_flow.Flow("outer").add(Name(name="first"), inner_unordered, inner_linear, Name(name="last"))
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    order = capture.names_in(states.SUCCESS)
    started = capture.names_in(states.RUNNING)
    assert order[0] == "first"
    assert set(order[1:3]) == {"u1", "u2"}
    assert order[3:] == ["l1", "l2", "last"]
    # nothing in a later item starts before an earlier item finished
    assert started.index("l1") > order.index("u1")
    assert started.index("l1") > order.index("u2")


def test_nested_graph_flow_in_linear_flow(run: Any) -> None:
    graph = graph_flow.Flow("g").add(
        Add(name="add", provides="total"),
        Double(name="double", provides="y"),
    )
    flow = linear_flow.Flow("outer").add(Const(name="x", provides="x", inject={"value": 5}), graph)
    assert run(flow)["total"] == 15


def test_empty_flow_succeeds(load: Any) -> None:
    engine = load(linear_flow.Flow("empty"))
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch_all() == {}
