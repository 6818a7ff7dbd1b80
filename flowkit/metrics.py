"""Prometheus metrics of engines and conductors.

``pip install 'flowkit[metrics]'`` installs ``prometheus_client``.  Turn the
metrics on once per process and serve them::

    from flowkit.metrics import enable_metrics, serve_metrics

    enable_metrics()                  # into prometheus_client's default registry
    serve_metrics(9464)               # http://127.0.0.1:9464/metrics

``flowkit conductor ... --metrics-port 9464`` does both for a conductor.
Every engine and conductor built afterwards in the process records:

======================================  ===========================================================
``flowkit_atoms_started_total``         atom executions started (label ``kind``: task or retry)
``flowkit_atoms_finished_total``        atom executions and reverts ended (``kind``, ``state``:
                                        SUCCESS, FAILURE, REVERTED, REVERT_FAILURE, ...)
``flowkit_atom_attempt_seconds``        histogram of how long each execution took (``kind``,
                                        ``state``: SUCCESS or FAILURE), in seconds
``flowkit_flows_total``                 runs of a flow ended (``state``: SUCCESS, REVERTED, FAILURE,
                                        SUSPENDED, WAITING, BROKEN)
``flowkit_wakeup_lag_seconds``          histogram of how late a parked (WAITING) flow was resumed
                                        after its due time, on the engine's clock (one a signal
                                        woke before it was due is not counted)
``flowkit_job_claims_total``            jobs claimed (label ``conductor``)
``flowkit_lease_losses_total``          claims lost while their job ran (``conductor``)
``flowkit_jobs_parked_total``           jobs given back to the board because their flow waits on a
                                        timer or a signal (``conductor``)
``flowkit_parked_jobs``                 gauge: jobs parked on the board now, read from the board when
                                        scraped (``board``; one COUNT on SQL boards)
======================================  ===========================================================

Labels are deliberately few and bounded: flow and atom names are not
labels (a name per flow would grow a series per flow); the spans of
:mod:`flowkit.tracing` and the log records carry those.  With metrics off,
engines register no listener: nothing is paid per atom
(``benchmarks/observability.py`` measures the cost with them on).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowkit import states
from flowkit.engines import _observers
from flowkit.listeners.base import Listener
from flowkit.waits import WAKE_KEY

if TYPE_CHECKING:
    from flowkit.conductors.base import Conductor
    from flowkit.engines.engine import Engine

LOG = logging.getLogger(__name__)

__all__ = [
    # turning them on for every engine and conductor
    "enable_metrics",
    "disable_metrics",
    "FlowkitMetrics",
    "MetricsListener",
    # serving them
    "serve_metrics",
    "MetricsServer",
    "INSTALL_HINT",
]

#: What the ImportError says when prometheus_client is missing.
INSTALL_HINT = "metrics need prometheus_client: pip install 'flowkit[metrics]'"

_STARTS = frozenset({states.RUNNING, states.REVERTING})
_ATOM_ENDS = frozenset(
    {states.SUCCESS, states.FAILURE, states.REVERTED, states.REVERT_FAILURE, states.BROKEN, states.IGNORE}
)
_EXECUTED = frozenset({states.SUCCESS, states.FAILURE})
_FLOW_ENDS = frozenset(
    {states.SUCCESS, states.REVERTED, states.FAILURE, states.SUSPENDED, states.WAITING, states.BROKEN}
)


def _import_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return prometheus_client


class FlowkitMetrics:
    """flowkit's metrics (see :mod:`flowkit.metrics`), registered in ``registry``.

    ``registry`` defaults to ``prometheus_client.REGISTRY``, the one
    ``prometheus_client``'s own exporters serve.  One registry holds one set:
    :func:`enable_metrics` makes it and hands the same one back when asked again.
    """

    def __init__(self, registry: Any = None) -> None:
        prometheus_client = _import_prometheus()
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        counter, histogram, gauge = prometheus_client.Counter, prometheus_client.Histogram, prometheus_client.Gauge
        where = {"registry": self.registry}
        self.atoms_started = counter("flowkit_atoms_started", "Atom executions started.", ["kind"], **where)
        self.atoms_finished = counter(
            "flowkit_atoms_finished",
            "Atom executions and reverts ended, by the state they ended in.",
            ["kind", "state"],
            **where,
        )
        self.attempt_seconds = histogram(
            "flowkit_atom_attempt_seconds",
            "Seconds each atom execution took, by how it ended.",
            ["kind", "state"],
            **where,
        )
        self.flows = counter("flowkit_flows", "Flow runs ended, by the state they ended in.", ["state"], **where)
        self.wakeup_lag = histogram(
            "flowkit_wakeup_lag_seconds",
            "Seconds a parked flow was resumed after its due time.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, float("inf")),
            **where,
        )
        self.job_claims = counter("flowkit_job_claims", "Jobs claimed by a conductor.", ["conductor"], **where)
        self.lease_losses = counter(
            "flowkit_lease_losses", "Claims a conductor lost while it worked on their job.", ["conductor"], **where
        )
        self.jobs_parked = counter(
            "flowkit_jobs_parked",
            "Jobs given back to the board to wait on a timer or a signal.",
            ["conductor"],
            **where,
        )
        self.parked_jobs = gauge(
            "flowkit_parked_jobs", "Jobs parked on the board now (read when scraped).", ["board"], **where
        )

    # -- what the observers call ------------------------------------------------------

    def watch_engine(self, engine: Engine) -> MetricsListener:
        """Record ``engine``'s atoms and runs (registers a :class:`MetricsListener` and returns it)."""
        listener = MetricsListener(engine, self)
        listener.register()
        return listener

    def watch_conductor(self, conductor: Conductor) -> None:
        """Record ``conductor``'s claims, lost claims and parked jobs."""
        from flowkit.conductors.base import JOB_CLAIMED, JOB_LOST, JOB_PARKED

        name = conductor.name
        claims = self.job_claims.labels(conductor=name)
        losses = self.lease_losses.labels(conductor=name)
        parked = self.jobs_parked.labels(conductor=name)
        conductor.notifier.register(JOB_CLAIMED, _Count(claims))
        conductor.notifier.register(JOB_LOST, _Count(losses))
        conductor.notifier.register(JOB_PARKED, _Count(parked))
        self.parked_jobs.labels(board=conductor.board.name).set_function(_ParkedJobs(conductor.board))


class _ParkedJobs:
    """A gauge's function: how many jobs ``board`` has parked now, NaN while the board cannot say."""

    def __init__(self, board: Any) -> None:
        self._board = board

    def __call__(self) -> float:
        try:
            return float(self._board.parked_count)
        except Exception as error:  # a scrape must answer even when the board's store is down
            LOG.warning("cannot count the parked jobs of board %r: %s", self._board.name, error)
            return float("nan")


class _Count:
    """A conductor notifier callback that adds one to ``counter`` per event."""

    def __init__(self, counter: Any) -> None:
        self._counter = counter

    def __call__(self, event: str, details: Mapping[str, Any]) -> None:
        self._counter.inc()


class MetricsListener(Listener):
    """Records one engine's atoms and runs in ``metrics`` (:func:`enable_metrics` attaches one to every engine)."""

    def __init__(self, engine: Engine, metrics: FlowkitMetrics) -> None:
        super().__init__(engine)
        self.metrics = metrics
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}
        self._children: dict[tuple[int, str, str | None], Any] = {}

    def on_flow_event(self, state: Any, details: Mapping[str, Any]) -> None:
        if state in _FLOW_ENDS:
            self.metrics.flows.labels(state=str(state)).inc()
        elif state == states.RUNNING and details.get("old_state") == states.WAITING:
            wake = self._engine.storage.flow_detail.meta.get(WAKE_KEY)
            due = wake.get("due") if isinstance(wake, Mapping) else None
            if isinstance(due, (int, float)) and not isinstance(due, bool):
                late = self._engine.clock.now() - float(due)
                if late >= 0:  # (earlier: a signal woke it, not its timer)
                    self.metrics.wakeup_lag.observe(late)

    def on_task_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._atom_event("task", state, details)

    def on_retry_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._atom_event("retry", state, details)

    def _child(self, metric: Any, kind: str, state: str | None) -> Any:
        """``metric.labels(...)``, looked up once per listener (a labels() call takes a lock)."""
        key = (id(metric), kind, state)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(kind=kind) if state is None else metric.labels(kind=kind, state=state)
            self._children[key] = child
        return child

    def _atom_event(self, kind: str, state: Any, details: Mapping[str, Any]) -> None:
        uuid = details["atom_uuid"]
        if state == states.RUNNING:
            self._child(self.metrics.atoms_started, kind, None).inc()
            with self._lock:
                self._started[uuid] = time.perf_counter()
            return
        if state not in _ATOM_ENDS:
            if state != states.REVERTING:
                with self._lock:  # held back or interrupted: no attempt to time
                    self._started.pop(uuid, None)
            return
        with self._lock:
            started = self._started.pop(uuid, None)
        name = str(state)
        self._child(self.metrics.atoms_finished, kind, name).inc()
        if started is not None and state in _EXECUTED:
            self._child(self.metrics.attempt_seconds, kind, name).observe(time.perf_counter() - started)


class _Recording:
    """What :func:`enable_metrics` installed: the observers that watch each new engine and conductor."""

    def __init__(self, metrics: FlowkitMetrics) -> None:
        self.metrics = metrics

    def engine(self, engine: Engine) -> None:
        self.metrics.watch_engine(engine)

    def conductor(self, conductor: Conductor) -> None:
        self.metrics.watch_conductor(conductor)


_lock = threading.Lock()
_by_registry: dict[int, FlowkitMetrics] = {}
_installed: _Recording | None = None


def enable_metrics(registry: Any = None) -> FlowkitMetrics:
    """Record the metrics of every engine and conductor built from now on, in ``registry``.

    ``registry`` defaults to ``prometheus_client.REGISTRY``.  Returns the
    metrics (the same object for the same registry, however often it is
    called); a second call with another registry records there from then
    on.  Raises ImportError (:data:`INSTALL_HINT`) without ``prometheus_client``.
    """
    global _installed
    prometheus_client = _import_prometheus()
    target = registry if registry is not None else prometheus_client.REGISTRY
    with _lock:
        metrics = _by_registry.get(id(target))
        if metrics is None or metrics.registry is not target:
            metrics = _by_registry[id(target)] = FlowkitMetrics(target)
        if _installed is not None:
            _observers.remove(_observers.ENGINE_OBSERVERS, _installed.engine)
            _observers.remove(_observers.CONDUCTOR_OBSERVERS, _installed.conductor)
        _installed = _Recording(metrics)
        _observers.add(_observers.ENGINE_OBSERVERS, _installed.engine)
        _observers.add(_observers.CONDUCTOR_OBSERVERS, _installed.conductor)
    return metrics


def disable_metrics() -> None:
    """Stop recording engines and conductors built from now on (those built already keep recording)."""
    global _installed
    with _lock:
        if _installed is not None:
            _observers.remove(_observers.ENGINE_OBSERVERS, _installed.engine)
            _observers.remove(_observers.CONDUCTOR_OBSERVERS, _installed.conductor)
        _installed = None


class MetricsServer:
    """An HTTP server answering ``GET /metrics`` in the Prometheus text format, on a thread of its own."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def host(self) -> str:
        """The address it listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port it listens on (the one the system picked, when asked for port 0)."""
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """Where the metrics are, e.g. ``http://127.0.0.1:9464/metrics``."""
        host = self.host
        return "http://%s:%d/metrics" % ("[%s]" % host if ":" in host else host, self.port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve_metrics(port: int, host: str = "127.0.0.1", *, registry: Any = None) -> MetricsServer:
    """Serve ``registry`` (default ``prometheus_client.REGISTRY``) on ``http://host:port/metrics``.

    It binds to ``127.0.0.1`` unless told otherwise; ``port=0`` picks a free
    port (read it from :attr:`MetricsServer.port`).
    """
    prometheus_client = _import_prometheus()
    target = registry if registry is not None else prometheus_client.REGISTRY
    server, thread = prometheus_client.start_http_server(port, addr=host, registry=target)
    return MetricsServer(server, thread)
