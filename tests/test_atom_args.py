"""How an atom's arguments are filled and its result stored.

name, provides (str / tuple / list / set), default_provides, requires, rebind (list / dict),
inject, optional arguments with defaults, priority.
"""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import exceptions, states
from flowkit.patterns import linear_flow, unordered_flow
from flowkit.task import Task
from tests.support import Add, Capture, Const, Name


class WithDefault(Task):
    def execute(self, a: int, b: int = 100) -> int:
        return a + b


class Collect(Task):
    """Return every keyword argument it was given, sorted."""

    def execute(self, **kwargs: Any) -> list[list[Any]]:
        return sorted([key, value] for key, value in kwargs.items())


class Triple(Task):
    def execute(self) -> list[int]:
        return [1, 2, 3]


class TupleResult(Task):
    """Returns a tuple, as ported TaskFlow tasks often do (``return a, b``)."""

    def execute(self) -> tuple[int, str]:
        return 7, "seven"


class Record(Task):
    def execute(self) -> dict[str, int]:
        return {"k1": 1, "k2": 2, "k3": 3}


class Defaulted(Task):
    default_provides = "defaulted_value"

    def execute(self) -> str:
        return "from default_provides"


# --- construction ------------------------------------------------------------------------


def test_unknown_rebind_argument_is_a_value_error() -> None:
    with pytest.raises(ValueError) as info:
        Add(name="adder", rebind={"z": "anything"})
    assert "z" in str(info.value)


def test_rebind_list_longer_than_the_arguments_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Add(name="adder", rebind=["p", "q", "r"])


def test_requires_reports_rebound_names() -> None:
    assert set(Add(rebind=["p", "q"]).requires) == {"p", "q"}
    assert set(Add(rebind={"y": "q"}).requires) == {"x", "q"}
    assert set(Collect(requires=["m", "n"]).requires) == {"m", "n"}


def test_provides_forms() -> None:
    assert set(Name(provides="one").provides) == {"one"}
    assert set(Triple(provides=("a", "b")).provides) == {"a", "b"}
    assert set(Triple(provides=["a", "b"]).provides) == {"a", "b"}
    assert set(Record(provides={"k1", "k3"}).provides) == {"k1", "k3"}
    assert set(Defaulted().provides) == {"defaulted_value"}
    assert set(Defaulted(provides="other").provides) == {"other"}


# --- through the engine --------------------------------------------------------------------


def test_provides_str_stores_the_whole_result(run: Any) -> None:
    results = run(linear_flow.Flow("f").add(Triple(provides="all")))
    assert results == {"all": [1, 2, 3]}


def test_provides_sequence_unpacks_by_position(run: Any) -> None:
    results = run(linear_flow.Flow("f").add(Triple(provides=("first", "second"))))
    assert results == {"first": 1, "second": 2}


def test_provides_list_unpacks_by_position(run: Any) -> None:
    results = run(linear_flow.Flow("f").add(Triple(provides=["first", "second", "third"])))
    assert results == {"first": 1, "second": 2, "third": 3}


def test_provides_set_picks_dict_keys(run: Any) -> None:
    results = run(linear_flow.Flow("f").add(Record(provides={"k1", "k3"})))
    assert results == {"k1": 1, "k3": 3}


def test_default_provides(run: Any) -> None:
    results = run(linear_flow.Flow("f").add(Defaulted()))
    assert results == {"defaulted_value": "from default_provides"}


def test_arguments_filled_by_name(run: Any) -> None:
    results = run(linear_flow.Flow("f").add(Add(provides="sum")), store={"x": 2, "y": 3})
    assert results["sum"] == 5


def test_rebind_list_maps_by_position(run: Any) -> None:
    flow = linear_flow.Flow("f").add(Add(provides="sum", rebind=["p", "q"]))
    results = run(flow, store={"p": "a", "q": "b", "x": "wrong", "y": "wrong"})
    assert results["sum"] == "ab"


def test_rebind_dict_maps_argument_to_name(run: Any) -> None:
    flow = linear_flow.Flow("f").add(Add(provides="sum", rebind={"y": "q"}))
    results = run(flow, store={"x": "a", "q": "b", "y": "wrong"})
    assert results["sum"] == "ab"


def test_requires_passes_extra_names_as_keywords(run: Any) -> None:
    flow = linear_flow.Flow("f").add(Collect(requires=["p", "q"], provides="got"))
    results = run(flow, store={"p": 1, "q": 2, "unrelated": 3})
    assert results["got"] == [["p", 1], ["q", 2]]


def test_missing_extra_requirement_is_an_error_before_running(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Collect(name="collector", requires=["p"])))
    with pytest.raises(exceptions.MissingDependencies) as info:
        engine.run()
    assert "collector" in str(info.value)
    assert "p" in str(info.value)


def test_inject_gives_per_atom_constants(run: Any) -> None:
    flow = linear_flow.Flow("f").add(
        Const(name="one", provides="a", inject={"value": 1}),
        Const(name="two", provides="b", inject={"value": 2}),
    )
    assert run(flow) == {"a": 1, "b": 2}


def test_inject_wins_over_storage(run: Any) -> None:
    flow = linear_flow.Flow("f").add(Add(provides="sum", inject={"x": 10}))
    results = run(flow, store={"x": 1, "y": 5})
    assert results["sum"] == 15


def test_inject_satisfies_a_requirement_nothing_else_provides(run: Any) -> None:
    flow = linear_flow.Flow("f").add(Add(provides="sum", inject={"x": 1, "y": 2}))
    assert run(flow)["sum"] == 3


def test_optional_argument_uses_its_default_when_absent(run: Any) -> None:
    results = run(linear_flow.Flow("f").add(WithDefault(provides="r")), store={"a": 1})
    assert results["r"] == 101


def test_optional_argument_filled_from_storage_when_present(run: Any) -> None:
    results = run(linear_flow.Flow("f").add(WithDefault(provides="r")), store={"a": 1, "b": 2})
    assert results["r"] == 3


def test_optional_argument_filled_from_an_earlier_atom(run: Any) -> None:
    flow = linear_flow.Flow("f").add(
        Const(name="make_b", provides="b", inject={"value": 40}),
        WithDefault(provides="r"),
    )
    assert run(flow, store={"a": 2})["r"] == 42


def test_optional_argument_rebound(run: Any) -> None:
    flow = linear_flow.Flow("f").add(WithDefault(provides="r", rebind={"b": "bee"}))
    assert run(flow, store={"a": 1, "bee": 5, "b": 1000})["r"] == 6


def test_later_provider_shadows_earlier_in_a_linear_flow(run: Any) -> None:
    flow = linear_flow.Flow("f").add(
        Const(name="first", provides="x", inject={"value": "old"}),
        Const(name="second", provides="x", inject={"value": "new"}),
        Add(name="use", provides="out", inject={"y": "!"}),
    )
    assert run(flow)["out"] == "new!"


def test_priority_orders_ready_atoms(load: Any) -> None:
    flow = unordered_flow.Flow("u").add(
        Name(name="low", priority=-5),
        Name(name="mid"),
        Name(name="high", priority=10),
        Name(name="top", priority=20),
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert capture.names_in(states.RUNNING) == ["top", "high", "mid", "low"]


def test_tuple_result_unpacks_by_position(run: Any) -> None:
    results = run(linear_flow.Flow("f").add(TupleResult(provides=("number", "word"))))
    assert results == {"number": 7, "word": "seven"}


def test_tuple_result_stored_whole(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(TupleResult(name="pair", provides="pair")))
    engine.run()
    assert list(engine.storage.fetch("pair")) == [7, "seven"]
