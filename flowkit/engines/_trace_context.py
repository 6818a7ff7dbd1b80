"""Where an atom runs, the trace context its attempt was sent with becomes the current one.

:func:`run_traced` is what :func:`~flowkit.engines.executors.run_execute` and
:func:`~flowkit.engines.executors.run_revert` hand over to when the
:class:`~flowkit.task.TaskContext` carries ``trace_context`` (only when
:func:`flowkit.tracing.enable_tracing` is on in the engine's process).  It
restores the W3C trace context from those headers, starts a span for the
call as a child of the engine's attempt span (where the atom runs in another
process: a process-pool or Dask worker), and runs the call inside it: spans
the task itself starts join the same trace, in a worker thread, a worker
process or on a Dask worker alike.

OpenTelemetry is imported here, lazily: a worker without it runs the atom
untraced.  The span is recorded by the tracer provider of the process the
atom runs in: the one :func:`flowkit.tracing.enable_tracing` was given when
that is this process, else OpenTelemetry's global one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["run_traced", "set_tracer_provider", "TRACER_NAME"]

LOG = logging.getLogger(__name__)

#: The instrumentation name flowkit's spans are recorded under.
TRACER_NAME = "flowkit"

# The provider enable_tracing() was given in this process (a forked worker inherits it).
_provider: Any = None
# One propagator per process, made on first use.
_PROPAGATOR: Any = None


def set_tracer_provider(provider: Any) -> None:
    """Record spans of atoms run in this process with ``provider`` (None: OpenTelemetry's global one)."""
    global _provider
    _provider = provider


def run_traced(
    fn: Callable[[Any, dict[str, Any], Any], Any], what: str, task: Any, kwargs: dict[str, Any], context: Any
) -> Any:
    """Run ``fn(task, kwargs, context)`` with ``context.trace_context`` current.

    Away from the engine's process the call is a span ``"<atom>.<what>"`` of its own, a child
    of the attempt's span; in the engine's process the attempt's span is the current one.
    """
    plain = dataclasses.replace(context, trace_context=None)
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        LOG.debug(
            "atom %r of flow %s runs untraced: opentelemetry is not installed here",
            context.atom_name,
            context.flow_uuid,
        )
        return fn(task, kwargs, plain)
    global _PROPAGATOR
    if _PROPAGATOR is None:
        _PROPAGATOR = TraceContextTextMapPropagator()
    parent = _PROPAGATOR.extract(dict(context.trace_context))
    token = otel_context.attach(parent)
    try:
        if context.progress_sink is not None:
            # In the engine's own process the attempt's span (recorded by the engine) already
            # covers this call: its context is made current, and no second span is recorded.
            return fn(task, kwargs, plain)
        provider = _provider if _provider is not None else trace.get_tracer_provider()
        tracer = provider.get_tracer(TRACER_NAME)
        attributes = {"flowkit.flow.uuid": context.flow_uuid, "flowkit.atom.name": context.atom_name}
        with tracer.start_as_current_span("%s.%s" % (context.atom_name, what), attributes=attributes) as span:
            outcome = fn(task, kwargs, plain)
            if not outcome.ok:
                failure = outcome.value
                span.set_status(
                    trace.Status(
                        trace.StatusCode.ERROR,
                        "%s: %s" % (failure.exception_type_name, failure.exception_str),
                    )
                )
            return outcome
    finally:
        otel_context.detach(token)
