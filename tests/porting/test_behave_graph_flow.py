"""graph_flow: an add() or link() that closes a cycle raises DependencyFailure at once."""

from __future__ import annotations

import importlib
from typing import Any

import pytest


def _modules(package: str) -> tuple[Any, Any, Any]:
    task = importlib.import_module(package + ".task")
    graph_flow = importlib.import_module(package + ".patterns.graph_flow")
    exceptions = importlib.import_module(package + ".exceptions")
    return task, graph_flow, exceptions


def test_adding_a_task_that_closes_a_data_cycle_raises(package: str) -> None:
    task, graph_flow, exceptions = _modules(package)

    class Step(task.Task):
        def execute(self, **kwargs: Any) -> int:
            return 1

    flow = graph_flow.Flow("g")
    flow.add(Step("a", provides="x", requires=["y"]))
    with pytest.raises(exceptions.DependencyFailure):
        flow.add(Step("b", provides="y", requires=["x"]))
    # the flow is as it was: only "a" is in it
    assert [item.name for item in flow] == ["a"]


def test_a_link_that_closes_a_cycle_raises_and_is_not_kept(package: str) -> None:
    task, graph_flow, exceptions = _modules(package)

    class Step(task.Task):
        def execute(self, **kwargs: Any) -> int:
            return 1

    a, b, c = Step("a"), Step("b"), Step("c")
    flow = graph_flow.Flow("g").add(a, b, c)
    flow.link(a, b)
    flow.link(b, c)
    with pytest.raises(exceptions.DependencyFailure):
        flow.link(c, a)
    assert [(u.name, v.name) for u, v, _meta in flow.iter_links()] == [("a", "b"), ("b", "c")]
    engines = importlib.import_module(package + ".engines")
    engines.run(flow)  # still a valid flow


def test_a_link_against_the_data_order_raises(package: str) -> None:
    task, graph_flow, exceptions = _modules(package)

    class Step(task.Task):
        def execute(self, **kwargs: Any) -> int:
            return 1

    make, use = Step("make", provides="x"), Step("use", requires=["x"])
    flow = graph_flow.Flow("g").add(make, use)
    with pytest.raises(exceptions.DependencyFailure):
        flow.link(use, make)


def test_the_error_names_the_cycle() -> None:
    from flowkit import exceptions, task
    from flowkit.patterns import graph_flow

    class Step(task.Task):
        def execute(self, **kwargs: Any) -> int:
            return 1

    a, b = Step("a", provides="x"), Step("b", requires=["x"], provides="y")
    flow = graph_flow.Flow("g").add(a, b, Step("c", requires=["y"]))
    c = list(flow)[2]
    with pytest.raises(exceptions.DependencyFailure) as caught:
        flow.link(c, a)
    assert str(caught.value) == (
        "graph flow 'g': linking 'c' to 'a' would close a cycle: "
        "'a' -> 'b' (needs 'x'); 'b' -> 'c' (needs 'y'); 'c' -> 'a' (linked)"
    )
