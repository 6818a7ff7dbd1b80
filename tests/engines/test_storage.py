"""engine.storage: fetch, fetch_all, get, states, inject."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from flowkit import exceptions, states
from flowkit.patterns import graph_flow, linear_flow
from flowkit.task import Task
from flowkit.types.failure import Failure
from tests.support import Add, BoomError, Const, Double, Fail, Name


def flow_x_y() -> Any:
    return linear_flow.Flow("f").add(
        Const(name="make_x", provides="x", inject={"value": 2}),
        Double(name="double", provides="y"),
    )


def test_fetch_and_fetch_all(load: Any) -> None:
    engine = load(flow_x_y(), store={"extra": "e"})
    engine.run()
    assert engine.storage.fetch("x") == 2
    assert engine.storage.fetch("y") == 4
    assert engine.storage.fetch("extra") == "e"
    assert engine.storage.fetch_all() == {"x": 2, "y": 4, "extra": "e"}


def test_fetch_unknown_name_raises_not_found(load: Any) -> None:
    engine = load(flow_x_y())
    engine.run()
    with pytest.raises(exceptions.NotFound) as info:
        engine.storage.fetch("nothing_provides_this")
    assert "nothing_provides_this" in str(info.value)


def test_fetch_before_running_raises_not_found(load: Any) -> None:
    engine = load(flow_x_y())
    engine.compile()
    engine.prepare()
    with pytest.raises(exceptions.NotFound):
        engine.storage.fetch("y")


def test_store_values_are_fetchable_before_running(load: Any) -> None:
    engine = load(flow_x_y(), store={"extra": 1})
    engine.compile()
    engine.prepare()
    assert engine.storage.fetch("extra") == 1


def test_get_returns_an_atom_result(load: Any) -> None:
    engine = load(flow_x_y())
    engine.run()
    assert engine.storage.get("make_x") == 2
    assert engine.storage.get("double") == 4


class Pair(Task):
    def execute(self) -> list[int]:
        return [1, 2]


def test_get_returns_the_whole_result_even_when_unpacked(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Pair(name="pair", provides=("one", "two"))))
    engine.run()
    assert engine.storage.get("pair") == [1, 2]
    assert engine.storage.fetch("one") == 1
    assert engine.storage.fetch("two") == 2


def test_get_returns_the_failure_of_a_failed_atom(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="ok"), Fail(name="bad")))
    with pytest.raises(BoomError):
        engine.run()
    failure = engine.storage.get("bad")
    assert isinstance(failure, Failure)
    assert failure.check(BoomError) is BoomError
    assert failure.exception_str == "bad"


def test_get_of_an_atom_that_never_ran_raises_not_found(load: Any) -> None:
    engine = load(flow_x_y())
    engine.compile()
    engine.prepare()
    with pytest.raises(exceptions.NotFound):
        engine.storage.get("double")


def test_get_of_an_unknown_atom_raises_not_found(load: Any) -> None:
    engine = load(flow_x_y())
    engine.run()
    with pytest.raises(exceptions.NotFound):
        engine.storage.get("no_such_atom")


def test_flow_and_atom_states(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="ok"), Fail(name="bad"), Name(name="never")))
    engine.compile()
    engine.prepare()
    assert engine.storage.get_flow_state() == states.PENDING
    assert engine.storage.get_atom_state("ok") == states.PENDING
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("ok") == states.REVERTED
    assert engine.storage.get_atom_state("bad") == states.REVERTED
    assert engine.storage.get_atom_state("never") == states.PENDING


def test_atom_state_of_unknown_atom_raises_not_found(load: Any) -> None:
    engine = load(flow_x_y())
    engine.compile()
    engine.prepare()
    with pytest.raises(exceptions.NotFound):
        engine.storage.get_atom_state("no_such_atom")


def test_reverted_results_are_no_longer_fetchable(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="make_x", provides="x", inject={"value": 1}), Fail(name="bad")))
    with pytest.raises(BoomError):
        engine.run()
    with pytest.raises(exceptions.NotFound):
        engine.storage.fetch("x")


def test_a_result_is_fetchable_until_its_revert_is_over(load: Any) -> None:
    # The engine hands a REVERTING atom's result to what still needs it; storage answers the same.
    engine = load(linear_flow.Flow("f").add(Const(name="make_x", provides="x", inject={"value": 1}), Fail(name="bad")))
    seen: dict[str, Any] = {}

    def on_state(state: Any, details: dict[str, Any]) -> None:
        if details["atom_name"] == "make_x":
            seen[str(state)] = engine.storage.fetch_all().get("x")

    engine.atom_notifier.register("*", on_state)
    with pytest.raises(BoomError):
        engine.run()
    assert seen == {"RUNNING": None, "SUCCESS": 1, "REVERTING": 1, "REVERTED": None}


def test_inject_before_running(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Add(name="add", provides="sum")))
    engine.compile()
    engine.prepare()
    engine.storage.inject({"x": 1, "y": 2})
    engine.run()
    assert engine.storage.fetch("sum") == 3
    assert engine.storage.fetch_all() == {"x": 1, "y": 2, "sum": 3}


def test_inject_overrides_the_store(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Add(name="add", provides="sum")), store={"x": 1, "y": 1})
    engine.compile()
    engine.prepare()
    engine.storage.inject({"y": 10})
    engine.run()
    assert engine.storage.fetch("sum") == 11


def test_results_in_a_graph_flow_are_scoped_by_data(load: Any) -> None:
    flow = graph_flow.Flow("g").add(
        Add(name="add", provides="total", rebind=["a", "b"]),
        Const(name="make_a", provides="a", inject={"value": "A"}),
        Const(name="make_b", provides="b", inject={"value": "B"}),
    )
    engine = load(flow)
    engine.run()
    assert engine.storage.fetch("total") == "AB"


class Opaque:
    """Not JSON: a result that cannot be stored."""


class ReturnsOpaque(Task):
    def execute(self) -> Opaque:
        return Opaque()


def test_a_result_that_cannot_be_stored_fails_its_task(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="first"), ReturnsOpaque(name="opaque")))
    with pytest.raises((exceptions.FlowkitError, TypeError, ValueError)) as info:
        engine.run()
    message = str(info.value)
    assert "opaque" in message
    assert "Opaque" in message
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("first") == states.REVERTED


def test_a_stored_value_wins_over_an_atom_result_of_the_same_name(load: Any) -> None:
    # TaskFlow looks in the store (and injected values) before atom results
    flow = linear_flow.Flow("f").add(
        Const(name="make_x", provides="x", inject={"value": "from atom"}),
        Double(name="double", provides="y"),
    )
    engine = load(flow, store={"x": "stored "})
    engine.run()
    assert engine.storage.fetch("y") == "stored stored "
    assert engine.storage.fetch("x") == "stored "


def test_atom_details_have_distinct_uuids_within_and_across_flows(load: Any) -> None:
    def chain(name: str) -> Any:
        return linear_flow.Flow(name).add(
            *(Const(name="c%d" % i, provides="v%d" % i, inject={"value": i}) for i in range(50))
        )

    seen: set[str] = set()
    for name in ("first", "second", "third"):
        engine = load(chain(name))
        engine.run()
        uuids = [detail.uuid for detail in engine.storage.flow_detail]
        assert len(uuids) == 50
        for text in uuids:
            parsed = uuid.UUID(text)
            assert str(parsed) == text and parsed.version == 4
        assert not seen & set(uuids), "an atom uuid of flow %r is also one of an earlier flow" % name
        seen.update(uuids)
    assert len(seen) == 150
