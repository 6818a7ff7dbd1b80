"""Every definition error is found before any task runs, and says who and what.

Each case builds the flow, loads it and calls compile()/prepare()/validate() (or run())
inside the ``raises`` block: flowkit may find an error as early as ``add()``/``link()``,
but never later than ``validate()``. The atoms here are ``Tripwire`` tasks: if one ever
ran, ``run()`` would raise ``TripwireError`` instead of the definition error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flowkit import exceptions
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from flowkit.task import Task


class TripwireError(Exception):
    pass


class Tripwire(Task):
    """Must never run: the definition error has to be found first."""

    def execute(self) -> None:
        raise TripwireError(self.name)


class NeedsV(Task):
    def execute(self, v: Any) -> None:
        raise TripwireError(self.name)


class NeedsW(Task):
    def execute(self, w: Any) -> None:
        raise TripwireError(self.name)


Build = Callable[[], Any]


def check_before_running(load: Any, build: Build, error: type[Exception]) -> Exception:
    """The error comes from compile/prepare/validate, and again from run()."""
    with pytest.raises(error) as first:
        engine = load(build())
        engine.compile()
        engine.prepare()
        engine.validate()
    with pytest.raises(error) as second:
        load(build()).run()
    assert type(first.value) is type(second.value)
    return first.value


# --- duplicates -------------------------------------------------------------------------


def duplicate_in_linear() -> Any:
    return linear_flow.Flow("f").add(Tripwire(name="a"), Tripwire(name="dup"), Tripwire(name="dup"))


def duplicate_nested() -> Any:
    return linear_flow.Flow("f").add(
        Tripwire(name="dup"),
        unordered_flow.Flow("u").add(graph_flow.Flow("g").add(Tripwire(name="dup"))),
    )


def duplicate_across_siblings() -> Any:
    return graph_flow.Flow("g").add(
        linear_flow.Flow("l1").add(Tripwire(name="dup")),
        linear_flow.Flow("l2").add(Tripwire(name="dup")),
    )


def duplicate_retry_name() -> Any:
    from flowkit.retry import Times

    return linear_flow.Flow("f").add(
        Tripwire(name="dup"),
        linear_flow.Flow("inner", retry=Times(2, name="dup")).add(Tripwire(name="x")),
    )


@pytest.mark.parametrize(
    "build",
    [duplicate_in_linear, duplicate_nested, duplicate_across_siblings, duplicate_retry_name],
)
def test_duplicate_atom_names_anywhere_in_the_tree(load: Any, build: Build) -> None:
    error = check_before_running(load, build, exceptions.Duplicate)
    assert "dup" in str(error)
    assert isinstance(error, exceptions.DefinitionError)


def test_same_atom_object_added_twice(load: Any) -> None:
    def build() -> Any:
        twice = Tripwire(name="twice")
        return linear_flow.Flow("f").add(twice, linear_flow.Flow("inner").add(twice))

    error = check_before_running(load, build, exceptions.Duplicate)
    assert "twice" in str(error)


# --- cycles ---------------------------------------------------------------------------------


def cycle_by_links() -> Any:
    a, b, c = Tripwire(name="cyc_one"), Tripwire(name="cyc_two"), Tripwire(name="cyc_three")
    flow = graph_flow.Flow("g").add(a, b, c)
    flow.link(a, b)
    flow.link(b, c)
    flow.link(c, a)
    return flow


class VfromW(Task):
    def execute(self, w: Any) -> None:
        raise TripwireError(self.name)


class WfromV(Task):
    def execute(self, v: Any) -> None:
        raise TripwireError(self.name)


def cycle_by_data() -> Any:
    return graph_flow.Flow("g").add(VfromW(name="cyc_one", provides="v"), WfromV(name="cyc_two", provides="w"))


def cycle_by_data_and_link() -> Any:
    producer = Tripwire(name="cyc_one", provides="v")
    consumer = NeedsV(name="cyc_two")
    flow = graph_flow.Flow("g").add(producer, consumer)
    flow.link(consumer, producer)
    return flow


@pytest.mark.parametrize("build", [cycle_by_links, cycle_by_data, cycle_by_data_and_link])
def test_cycles_are_dependency_failures(load: Any, build: Build) -> None:
    error = check_before_running(load, build, exceptions.DependencyFailure)
    assert "cyc_one" in str(error) or "cyc_two" in str(error)


# --- missing requirements ---------------------------------------------------------------


def test_missing_requirement_names_atom_and_symbol(load: Any) -> None:
    def build() -> Any:
        return linear_flow.Flow("f").add(Tripwire(name="first"), NeedsV(name="needs_v"))

    error = check_before_running(load, build, exceptions.MissingDependencies)
    assert isinstance(error, exceptions.DependencyFailure)
    assert "needs_v" in str(error)
    assert "'v'" in str(error) or '"v"' in str(error) or " v" in str(error)


def test_requirement_provided_only_later_in_a_linear_flow_is_missing(load: Any) -> None:
    def build() -> Any:
        return linear_flow.Flow("f").add(NeedsV(name="needs_v"), Tripwire(name="late", provides="v"))

    error = check_before_running(load, build, exceptions.MissingDependencies)
    assert "needs_v" in str(error)


def test_rebound_requirement_is_missing(load: Any) -> None:
    def build() -> Any:
        return linear_flow.Flow("f").add(NeedsV(name="needs_v", rebind={"v": "renamed"}))

    error = check_before_running(load, build, exceptions.MissingDependencies)
    assert "needs_v" in str(error)
    assert "renamed" in str(error)


def test_store_satisfies_requirements(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(NeedsV(name="needs_v")), store={"v": 1})
    engine.compile()
    engine.prepare()
    engine.validate()  # no error: the store provides v


def test_inject_after_prepare_satisfies_requirements(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(NeedsV(name="needs_v")))
    engine.compile()
    engine.prepare()
    engine.storage.inject({"v": 1})
    engine.validate()
    with pytest.raises(TripwireError):
        engine.run()


# --- ambiguity ------------------------------------------------------------------------------


def ambiguous_in_graph() -> Any:
    return graph_flow.Flow("g").add(
        Tripwire(name="p1", provides="v"), Tripwire(name="p2", provides="v"), NeedsV(name="c")
    )


def ambiguous_in_unordered_consumed_later() -> Any:
    return linear_flow.Flow("f").add(
        unordered_flow.Flow("u").add(Tripwire(name="p1", provides="v"), Tripwire(name="p2", provides="v")),
        NeedsV(name="c"),
    )


def ambiguous_nested_graph() -> Any:
    return graph_flow.Flow("g").add(
        linear_flow.Flow("l1").add(Tripwire(name="p1", provides="v")),
        linear_flow.Flow("l2").add(Tripwire(name="p2", provides="v")),
        NeedsV(name="c"),
    )


@pytest.mark.parametrize("build", [ambiguous_in_graph, ambiguous_in_unordered_consumed_later, ambiguous_nested_graph])
def test_two_providers_of_a_consumed_symbol(load: Any, build: Build) -> None:
    error = check_before_running(load, build, exceptions.AmbiguousDependency)
    assert isinstance(error, exceptions.DefinitionError)
    message = str(error)
    assert "c" in message
    assert "p1" in message and "p2" in message
    assert "v" in message


# --- unordered flows ----------------------------------------------------------------------


def test_unordered_members_depending_on_each_other(load: Any) -> None:
    def build() -> Any:
        return unordered_flow.Flow("u").add(Tripwire(name="producer", provides="v"), NeedsV(name="consumer"))

    error = check_before_running(load, build, exceptions.DependencyFailure)
    assert "consumer" in str(error)
    assert "v" in str(error)


def test_unordered_subflows_depending_on_each_other(load: Any) -> None:
    def build() -> Any:
        return unordered_flow.Flow("u").add(
            linear_flow.Flow("makes").add(Tripwire(name="producer", provides="v")),
            linear_flow.Flow("needs").add(NeedsV(name="consumer")),
        )

    error = check_before_running(load, build, exceptions.DependencyFailure)
    assert "consumer" in str(error)


def test_unordered_members_sharing_an_outer_input_are_fine(load: Any) -> None:
    flow = linear_flow.Flow("f").add(
        Tripwire(name="producer", provides="v"),
        unordered_flow.Flow("u").add(NeedsV(name="c1"), NeedsV(name="c2")),
    )
    engine = load(flow)
    engine.compile()
    engine.prepare()
    engine.validate()


def test_two_unordered_providers_nobody_consumes_are_fine(load: Any) -> None:
    flow = unordered_flow.Flow("u").add(Tripwire(name="p1", provides="v"), Tripwire(name="p2", provides="v"))
    engine = load(flow)
    engine.compile()
    engine.prepare()
    engine.validate()


def test_ambiguity_seen_from_a_nested_consumer(load: Any) -> None:
    def build() -> Any:
        return graph_flow.Flow("g").add(
            Tripwire(name="p1", provides="v"),
            Tripwire(name="p2", provides="v"),
            linear_flow.Flow("inner").add(NeedsV(name="c")),
        )

    error = check_before_running(load, build, exceptions.AmbiguousDependency)
    assert "p1" in str(error) and "p2" in str(error)
