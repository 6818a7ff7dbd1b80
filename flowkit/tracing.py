"""OpenTelemetry spans for flow runs and atom attempts.

``pip install 'flowkit[otel]'`` installs the OpenTelemetry API and SDK.  Turn
tracing on once per process, with the tracer provider your exporters hang
off (default: OpenTelemetry's global one)::

    from flowkit.tracing import enable_tracing

    enable_tracing(tracer_provider=provider)

Every engine built afterwards records:

- one span per ``run()`` of a flow, ``flow <name>``, from the flow's RUNNING
  (or REVERTING) until it stops (SUCCESS, REVERTED, FAILURE, SUSPENDED,
  WAITING or BROKEN), with the attributes ``flowkit.flow.name``,
  ``flowkit.flow.uuid``, ``flowkit.engine.mode`` and, at the end,
  ``flowkit.flow.state``;
- one child span per atom attempt, ``atom <name>`` (or ``revert <name>``
  while it is undone), with ``flowkit.flow.uuid``, ``flowkit.atom.name``,
  ``flowkit.atom.uuid``, ``flowkit.atom.kind`` (``task`` or ``retry``),
  ``flowkit.atom.attempt`` (1 for the first) and ``flowkit.atom.state`` (the
  state it ended in); a failure sets the span's status to ERROR with the
  exception's type and message;
- the attempt's trace context travels with the call in
  :attr:`flowkit.task.TaskContext.trace_context` to where the atom runs (a
  worker thread, a process-pool worker, a Dask worker) and is the current
  context there, so spans a task starts belong to the same trace.  Away from
  the engine's process the call is a span of its own, ``<name>.execute``
  (``<name>.revert``), a child of the attempt's span, recorded by the tracer
  provider of that process (configure OpenTelemetry there, e.g. in a Dask
  worker plugin, to export those).

A span is ended when its flow or atom leaves the state it covers; a process
that dies mid-run leaves its open spans unexported (the logbook, not the
trace, is what a resume reads).  With tracing off, engines register no
listener and atoms carry no trace context: the per-atom cost is one ``None``
check (``benchmarks/observability.py`` measures both).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowkit import states
from flowkit.engines import _observers
from flowkit.engines._trace_context import TRACER_NAME, set_tracer_provider
from flowkit.listeners.base import Listener
from flowkit.persistence.models import ATTEMPT_KEY
from flowkit.types.failure import Failure

if TYPE_CHECKING:
    from flowkit.engines.engine import Engine

__all__ = [
    # turning it on for every engine
    "enable_tracing",
    "disable_tracing",
    "tracing_enabled",
    # one engine
    "TracingListener",
    "TRACER_NAME",
    "INSTALL_HINT",
]

#: What the ImportError says when OpenTelemetry is missing.
INSTALL_HINT = "tracing needs OpenTelemetry: pip install 'flowkit[otel]'"

_FLOW_STARTS = frozenset({states.RUNNING, states.REVERTING, states.RESUMING})
_FLOW_ENDS = frozenset(
    {states.SUCCESS, states.REVERTED, states.FAILURE, states.SUSPENDED, states.WAITING, states.BROKEN}
)
_FLOW_ERRORS = frozenset({states.REVERTED, states.FAILURE, states.BROKEN})
_ATOM_ERRORS = frozenset({states.FAILURE, states.REVERT_FAILURE, states.BROKEN})


def _import_otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return trace


class TracingListener(Listener):
    """Records the spans described in :mod:`flowkit.tracing` for one engine.

    :func:`enable_tracing` attaches one to every engine; use this class
    directly to trace a single engine (``with TracingListener(engine):``).
    ``tracer_provider`` defaults to OpenTelemetry's global one.
    """

    def __init__(self, engine: Engine, *, tracer_provider: Any = None) -> None:
        super().__init__(engine)
        trace = _import_otel()
        self._trace = trace
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self._tracer = provider.get_tracer(TRACER_NAME)
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._propagator = TraceContextTextMapPropagator()
        self._lock = threading.Lock()
        self._flow_span: Any = None
        self._spans: dict[str, Any] = {}  # atom uuid -> its open attempt span
        self._carriers: dict[str, dict[str, str]] = {}

    def register(self) -> None:
        super().register()
        self._engine.trace_carriers = self._carriers

    def deregister(self) -> None:
        super().deregister()
        if self._engine.trace_carriers is self._carriers:
            self._engine.trace_carriers = None
        with self._lock:
            spans, self._spans = list(self._spans.values()), {}
            self._carriers.clear()
            flow_span, self._flow_span = self._flow_span, None
        for span in spans:
            span.end()
        if flow_span is not None:
            flow_span.end()

    # -- flows ---------------------------------------------------------------------------

    def on_flow_event(self, state: Any, details: Mapping[str, Any]) -> None:
        if state in _FLOW_STARTS:
            with self._lock:
                if self._flow_span is not None:
                    return
                self._flow_span = self._tracer.start_span(
                    "flow %s" % (details["flow_name"],),
                    attributes={
                        "flowkit.flow.name": str(details["flow_name"]),
                        "flowkit.flow.uuid": str(details["flow_uuid"]),
                        "flowkit.engine.mode": self._engine.mode,
                    },
                )
            return
        if state not in _FLOW_ENDS:
            return
        with self._lock:
            span, self._flow_span = self._flow_span, None
            open_atoms, self._spans = list(self._spans.values()), {}
            self._carriers.clear()
        for atom_span in open_atoms:  # an atom interrupted by a suspend or a lost executor
            atom_span.end()
        if span is None:
            return
        span.set_attribute("flowkit.flow.state", str(state))
        if state in _FLOW_ERRORS:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, "flow ended %s" % (state,)))
        span.end()

    # -- atoms ---------------------------------------------------------------------------

    def on_task_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._atom_event("task", state, details)

    def on_retry_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._atom_event("retry", state, details)

    def _atom_event(self, kind: str, state: Any, details: Mapping[str, Any]) -> None:
        uuid = details["atom_uuid"]
        name = details["atom_name"]
        with self._lock:
            ended = self._spans.pop(uuid, None)
            self._carriers.pop(uuid, None)
        if ended is not None:
            ended.set_attribute("flowkit.atom.state", str(state))
            if state in _ATOM_ERRORS:
                failure = details.get("result")
                why = (
                    "%s: %s" % (failure.exception_type_name, failure.exception_str)
                    if isinstance(failure, Failure)
                    else "atom ended %s" % (state,)
                )
                ended.set_status(self._trace.Status(self._trace.StatusCode.ERROR, why))
            ended.end()
        if state not in (states.RUNNING, states.REVERTING):
            return
        storage = self._engine.storage
        detail = storage.flow_detail.find(uuid)
        attempt = detail.meta.get(ATTEMPT_KEY) if detail is not None else None
        with self._lock:
            parent = self._flow_span
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        span = self._tracer.start_span(
            "%s %s" % ("atom" if state == states.RUNNING else "revert", name),
            context=context,
            attributes={
                "flowkit.flow.uuid": storage.flow_detail.uuid,
                "flowkit.atom.name": str(name),
                "flowkit.atom.uuid": str(uuid),
                "flowkit.atom.kind": kind,
                "flowkit.atom.attempt": (attempt if isinstance(attempt, int) and attempt >= 0 else 0) + 1,
            },
        )
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        with self._lock:
            self._spans[uuid] = span
            self._carriers[uuid] = carrier


class _Tracing:
    """What :func:`enable_tracing` installed: the observer that gives each new engine its listener."""

    def __init__(self, tracer_provider: Any) -> None:
        self.tracer_provider = tracer_provider

    def __call__(self, engine: Engine) -> None:
        TracingListener(engine, tracer_provider=self.tracer_provider).register()


_installed: _Tracing | None = None
_install_lock = threading.Lock()


def enable_tracing(*, tracer_provider: Any = None) -> None:
    """Trace every engine built from now on in this process (see :mod:`flowkit.tracing`).

    ``tracer_provider`` is where the spans go (default: OpenTelemetry's
    global one, read when each engine is built).  Calling it again replaces
    the provider for engines built afterwards.  Raises ImportError
    (:data:`INSTALL_HINT`) when OpenTelemetry is not installed.
    """
    global _installed
    _import_otel()
    with _install_lock:
        if _installed is not None:
            _observers.remove(_observers.ENGINE_OBSERVERS, _installed)
        _installed = _Tracing(tracer_provider)
        set_tracer_provider(tracer_provider)
        _observers.add(_observers.ENGINE_OBSERVERS, _installed)


def disable_tracing() -> None:
    """Stop tracing engines built from now on (engines already built keep tracing until they are closed)."""
    global _installed
    with _install_lock:
        if _installed is not None:
            _observers.remove(_observers.ENGINE_OBSERVERS, _installed)
        _installed = None
        set_tracer_provider(None)


def tracing_enabled() -> bool:
    """True between :func:`enable_tracing` and :func:`disable_tracing`."""
    return _installed is not None
