"""OpenTelemetry spans of flow runs and atom attempts, read back from the SDK's in-memory exporter."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flowkit.engines
from flowkit import retry
from flowkit.patterns import linear_flow
from flowkit.task import Task
from flowkit.tracing import TracingListener, disable_tracing, enable_tracing, tracing_enabled
from tests.support import BoomError, Const, Fail, FailUntil, Undoable


class SpanProbe(Task):
    """Return the ids of the span current while it runs (and of that span's parent, when it is recorded)."""

    def execute(self) -> dict[str, Any]:
        span = trace.get_current_span()
        context = span.get_span_context()
        parent = getattr(span, "parent", None)
        return {
            "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"),
            "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        }


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_tracing(tracer_provider=provider)
    try:
        yield exporter
    finally:
        disable_tracing()
        provider.shutdown()


def _by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def _hex(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def test_a_run_is_a_flow_span_with_one_child_span_per_atom(load: Any, exporter: InMemorySpanExporter) -> None:
    flow = linear_flow.Flow("shop").add(Const(name="a", inject={"value": 1}), Const(name="b", inject={"value": 2}))
    engine = load(flow)
    engine.run()
    spans = _by_name(exporter.get_finished_spans())
    (flow_span,) = spans["flow shop"]
    assert flow_span.attributes is not None
    assert dict(flow_span.attributes) == {
        "flowkit.flow.name": "shop",
        "flowkit.flow.uuid": engine.flow_detail.uuid,
        "flowkit.engine.mode": engine.mode,
        "flowkit.flow.state": "SUCCESS",
    }
    assert flow_span.status.is_ok
    trace_id, flow_span_id = _hex(flow_span)
    for name in ("a", "b"):
        (atom_span,) = spans["atom " + name]
        assert atom_span.parent is not None and format(atom_span.parent.span_id, "016x") == flow_span_id
        assert _hex(atom_span)[0] == trace_id
        assert atom_span.attributes is not None
        assert atom_span.attributes["flowkit.flow.uuid"] == engine.flow_detail.uuid
        assert atom_span.attributes["flowkit.atom.name"] == name
        assert atom_span.attributes["flowkit.atom.uuid"] == engine.flow_detail.find_by_name(name).uuid
        assert atom_span.attributes["flowkit.atom.kind"] == "task"
        assert atom_span.attributes["flowkit.atom.attempt"] == 1
        assert atom_span.attributes["flowkit.atom.state"] == "SUCCESS"
    # The atoms ran one after the other, inside the flow's span.
    (a,), (b,) = spans["atom a"], spans["atom b"]
    assert flow_span.start_time is not None and flow_span.end_time is not None
    assert a.end_time is not None and b.start_time is not None
    assert flow_span.start_time <= a.start_time and a.end_time <= b.start_time and b.end_time <= flow_span.end_time  # type: ignore[operator]


def test_a_failure_marks_its_attempt_and_the_reverts_are_spans_too(load: Any, exporter: InMemorySpanExporter) -> None:
    engine = load(linear_flow.Flow("doomed").add(Undoable(name="first"), Fail(name="boom")))
    with pytest.raises(BoomError):
        engine.run()
    spans = _by_name(exporter.get_finished_spans())
    (boom,) = spans["atom boom"]
    assert boom.attributes is not None and boom.attributes["flowkit.atom.state"] == "FAILURE"
    assert boom.status.status_code is trace.StatusCode.ERROR
    assert boom.status.description is not None and "BoomError: boom" in boom.status.description
    (undone,) = spans["revert first"]
    assert undone.attributes is not None and undone.attributes["flowkit.atom.state"] == "REVERTED"
    (flow_span,) = spans["flow doomed"]
    assert flow_span.attributes is not None and flow_span.attributes["flowkit.flow.state"] == "REVERTED"
    assert flow_span.status.status_code is trace.StatusCode.ERROR


def test_each_attempt_of_a_retried_atom_is_its_own_span(load: Any, exporter: InMemorySpanExporter) -> None:
    flow = linear_flow.Flow("retried", retry=retry.Times(3, name="times", provides="attempt")).add(
        FailUntil(name="flaky", inject={"good": 2})
    )
    load(flow).run()
    spans = _by_name(exporter.get_finished_spans())
    attempts = sorted(spans["atom flaky"], key=lambda s: s.start_time or 0)
    assert [(s.attributes or {}).get("flowkit.atom.attempt") for s in attempts] == [1, 2]
    assert [(s.attributes or {}).get("flowkit.atom.state") for s in attempts] == ["FAILURE", "SUCCESS"]
    assert [(s.attributes or {}).get("flowkit.atom.kind") for s in spans["atom times"]] == ["retry", "retry"]


def _check_probe_ran_under_its_attempt(
    probe: dict[str, Any], spans: dict[str, list[ReadableSpan]], *, in_this_process: bool
) -> None:
    (attempt,) = spans["atom probe"]
    trace_id, attempt_id = _hex(attempt)
    assert probe["trace_id"] == trace_id
    if in_this_process:
        # The attempt's span is the current one where the task runs; no second span is recorded.
        assert probe["span_id"] == attempt_id
        assert "probe.execute" not in spans
    else:
        # Another process: the call is "probe.execute", a child of the attempt, where that
        # process records spans (a forked pool worker inherits the provider); where it records
        # none, the attempt's own context is the current one.
        assert attempt_id in (probe["parent_id"], probe["span_id"])


def test_the_trace_context_reaches_where_the_atom_runs(
    load: Any, engine_mode: str, exporter: InMemorySpanExporter
) -> None:
    engine = load(linear_flow.Flow("probed").add(SpanProbe(name="probe", provides="ids")))
    engine.run()
    spans = _by_name(exporter.get_finished_spans())
    _check_probe_ran_under_its_attempt(engine.storage.fetch("ids"), spans, in_this_process=engine_mode != "distributed")


@pytest.mark.slow
def test_the_trace_context_reaches_a_process_pool_worker(exporter: InMemorySpanExporter) -> None:
    engine = flowkit.engines.load(
        linear_flow.Flow("probed").add(SpanProbe(name="probe", provides="ids")),
        engine="parallel",
        executor="processes",
        max_workers=1,
    )
    engine.run()
    probe = engine.storage.fetch("ids")
    spans = _by_name(exporter.get_finished_spans())
    # The worker is another process: its spans, if it records any, are not in this process's exporter.
    _check_probe_ran_under_its_attempt(probe, spans, in_this_process=False)
    assert "probe.execute" not in spans
    if multiprocessing.get_start_method() == "fork":  # the worker inherited the provider: it recorded its span
        assert probe["parent_id"] == _hex(spans["atom probe"][0])[1]


def test_nothing_is_traced_once_tracing_is_off(load: Any, exporter: InMemorySpanExporter) -> None:
    disable_tracing()
    assert not tracing_enabled()
    engine = load(linear_flow.Flow("quiet").add(SpanProbe(name="probe", provides="ids")))
    engine.run()
    assert engine.trace_carriers is None
    assert exporter.get_finished_spans() == ()
    assert engine.storage.fetch("ids")["trace_id"] == "0" * 32  # no current span where it ran


def test_one_engine_can_be_traced_on_its_own(load: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = load(linear_flow.Flow("alone").add(Const(name="a", inject={"value": 1})))
    with TracingListener(engine, tracer_provider=provider):
        engine.run()
    assert engine.trace_carriers is None  # given back when the listener is removed
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["atom a", "flow alone"]


def test_an_observer_that_fails_does_not_stop_an_engine_being_built(
    load: Any, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    from flowkit.engines import _observers

    def broken(engine: Any) -> None:
        raise RuntimeError("observer bug")

    _observers.add(_observers.ENGINE_OBSERVERS, broken)
    try:
        engine = load(linear_flow.Flow("still").add(Const(name="a", inject={"value": 1})))
    finally:
        _observers.remove(_observers.ENGINE_OBSERVERS, broken)
    engine.run()
    assert engine.storage.get("a") == 1
    assert "observer bug" in caplog.text
    assert "atom a" in [s.name for s in exporter.get_finished_spans()]  # the tracing observer still ran
