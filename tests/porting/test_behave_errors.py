"""Definition errors raise TaskFlow's exception types (with flowkit's messages)."""

from __future__ import annotations

import importlib

import pytest


def test_an_unknown_engine_is_not_found(package: str) -> None:
    engines = importlib.import_module(package + ".engines")
    exceptions = importlib.import_module(package + ".exceptions")
    linear_flow = importlib.import_module(package + ".patterns.linear_flow")
    with pytest.raises(exceptions.NotFound, match="nope"):
        engines.load(linear_flow.Flow("f"), engine="nope")


def test_an_unknown_persistence_backend_is_not_found(package: str) -> None:
    backends = importlib.import_module(package + ".persistence.backends")
    exceptions = importlib.import_module(package + ".exceptions")
    with pytest.raises(exceptions.NotFound, match="nope"):
        backends.fetch({"connection": "nope://somewhere"})
    with pytest.raises(exceptions.NotFound, match="nope"):
        backends.fetch("nope://somewhere")


def test_a_persistence_conf_without_a_connection_is_a_key_error(package: str) -> None:
    backends = importlib.import_module(package + ".persistence.backends")
    with pytest.raises(KeyError):
        backends.fetch({})


def test_an_unknown_decider_depth_is_a_value_error(package: str) -> None:
    task = importlib.import_module(package + ".task")
    graph_flow = importlib.import_module(package + ".patterns.graph_flow")

    class Step(task.Task):
        def execute(self) -> None:
            pass

    a, b = Step("a"), Step("b")
    flow = graph_flow.Flow("g").add(a, b)
    with pytest.raises(ValueError, match="NOPE"):
        flow.link(a, b, decider=lambda history: True, decider_depth="NOPE")


def test_an_unknown_executor_is_a_value_error(package: str) -> None:
    engines = importlib.import_module(package + ".engines")
    task = importlib.import_module(package + ".task")
    linear_flow = importlib.import_module(package + ".patterns.linear_flow")

    class Step(task.Task):
        def execute(self) -> None:
            pass

    with pytest.raises(ValueError, match="nope"):
        engines.run(linear_flow.Flow("f").add(Step("a")), engine="parallel", executor="nope")


def test_flowkit_keeps_its_messages_and_its_value_errors() -> None:
    from flowkit import engines, exceptions
    from flowkit.patterns import linear_flow
    from flowkit.persistence import backends

    with pytest.raises(exceptions.UnknownChoice) as caught:
        engines.load(linear_flow.Flow("f"), engine="nope")
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == "unknown engine 'nope'; choose one of 'serial', 'parallel', 'distributed'"
    with pytest.raises(exceptions.MissingConnection) as missing:
        backends.fetch({})
    assert isinstance(missing.value, ValueError)
    # a sentence, not KeyError's quoted key
    assert str(missing.value) == "persistence conf needs a 'connection' URL like 'memory://', got None"
    with pytest.raises(exceptions.UnknownChoice, match="'memory://'"):
        backends.fetch({"connection": "no-scheme-here"})


def test_times_with_no_attempts_is_refused_when_defined() -> None:
    # TaskFlow accepts Times(attempts=0) and reverts at the first failure; flowkit says so at once.
    from flowkit import retry

    with pytest.raises(ValueError, match="attempts >= 1, got 0"):
        retry.Times(attempts=0)
