"""``load()`` and ``run()``: a flow, its logbook and an executor made into an engine.

Its own module (re-exported by :mod:`flowkit.engines`) so that
:mod:`flowkit.engines.helpers`, which builds on ``load()``, imports it
without importing the package that re-exports both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowkit import exceptions as exc
from flowkit.engines.action_engine.engine import ENGINE_CLASSES
from flowkit.engines.engine import DEFER_REVERTS_KEY, Engine, make_flow_detail
from flowkit.engines.executors import make_executor
from flowkit.persistence.backends import fetch as fetch_backend
from flowkit.persistence.backends.impl_memory import MemoryBackend
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.policies import RetryPolicy

__all__ = ["load", "load_unsaved", "run", "ENGINE_MODES"]

#: The engine modes ``load()`` accepts.
ENGINE_MODES = ("serial", "parallel", "distributed")
_ALIASES = {"default": "serial", "serial": "serial", "parallel": "parallel", "distributed": "distributed"}


def _backend_from(backend: Any) -> Backend:
    if backend is None:
        return MemoryBackend()
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, (str, Mapping)):
        return fetch_backend(backend)
    raise TypeError("backend must be a Backend, a URL or a conf dict, got %r" % (backend,))


def _mode_and_executor(
    engine: str,
    executor: Any,
    max_workers: int | None,
    address: str | None,
    client: Any,
    security: Any,
    defer_reverts: bool | None,
) -> tuple[str, Any]:
    """The engine mode and executor option ``load()``'s options ask for; raises before anything is written."""
    if defer_reverts is not None and not isinstance(defer_reverts, bool):
        raise TypeError("defer_reverts must be True, False or None, got %r" % (defer_reverts,))
    try:
        mode = _ALIASES[engine]
    except (KeyError, TypeError):
        raise exc.UnknownChoice(
            "unknown engine %r; choose one of %s" % (engine, ", ".join(repr(m) for m in ENGINE_MODES))
        ) from None
    if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
        raise ValueError("max_workers must be a positive int, got %r" % (max_workers,))
    if mode == "distributed" or address is not None or client is not None or security is not None:
        # Built here so that a missing Dask or a bad option fails before the
        # logbook is touched.
        executor = make_executor(mode, executor, max_workers, address=address, client=client, security=security)
    return mode, executor


def _make_engine(
    flow: Any,
    flow_detail: FlowDetail,
    backend: Backend,
    mode: str,
    executor: Any,
    given_executor: Any,
    *,
    max_workers: int | None,
    clock: Any,
    retry_policy: RetryPolicy | None,
    **others: Any,
) -> Engine:
    """The engine of ``mode`` (its TaskFlow class); ``Engine.options`` shows the options given, not left at None."""
    given = {
        "executor": given_executor,
        "max_workers": max_workers,
        **others,
        "clock": clock,
        "retry_policy": retry_policy,
    }
    return ENGINE_CLASSES[mode](
        flow,
        flow_detail,
        backend,
        mode=mode,
        executor=executor,
        max_workers=max_workers,
        clock=clock,
        retry_policy=retry_policy,
        options={name: value for name, value in given.items() if value is not None},
    )


def load(
    flow: Any,
    store: Mapping[str, Any] | None = None,
    engine: str = "serial",
    *,
    backend: Any = None,
    book: LogBook | None = None,
    flow_detail: FlowDetail | None = None,
    executor: Any = None,
    max_workers: int | None = None,
    address: str | None = None,
    client: Any = None,
    security: Any = None,
    defer_reverts: bool | None = None,
    clock: Any = None,
    retry_policy: RetryPolicy | None = None,
) -> Engine:
    """Build an engine for ``flow`` (a flow or a single atom).

    ``store`` injects values any atom may require.  ``engine`` is ``"serial"``
    (atoms run one at a time in this thread) or ``"parallel"`` (on a pool:
    ``executor="threads"`` (default), ``"processes"`` for CPU-bound tasks,
    ``"greenthreads"`` (eventlet, the ``greenthreads`` extra), TaskFlow's
    spellings of these (``"threaded"``, ``"greenthreaded"``, ...), or any
    executor whose ``submit(fn, *args)`` returns a future, such as a
    ``concurrent.futures.Executor``; ``max_workers`` sizes the pool) or
    ``"distributed"`` (on a Dask cluster: the scheduler at ``address``, e.g.
    ``"tcp://host:8786"``, with ``security`` a ``distributed.security.Security``
    for TLS; an existing ``distributed.Client`` as ``client``; or neither, for a
    ``LocalCluster`` started for each run; needs ``pip install flowkit[distributed]``).
    ``backend`` is where the logbook is written (default: in memory);
    ``book``/``flow_detail`` pick an existing logbook and flow detail.

    ``defer_reverts=True`` is TaskFlow's option of that name: a retry
    controller that says REVERT (``Times`` out of attempts, ``AlwaysRevert``)
    always passes the failure to the enclosing controller, and when no
    enclosing controller retries, the whole flow is reverted, atoms outside
    the retry scope included.  By default only the innermost scope that said
    REVERT is reverted and the atoms outside it stay SUCCESS.  The choice is
    recorded in the flow detail, so a resumed run keeps it; None (the default)
    keeps what the flow detail records (False for a new one).

    ``clock`` is what timer and signal atoms (:mod:`flowkit.waits`) read the
    time on: a :class:`flowkit.clock.Clock` (default: the real one), e.g. a
    :class:`flowkit.testing.clock.VirtualClock` in tests.

    ``retry_policy`` (a :class:`flowkit.policies.RetryPolicy`) is the policy of every
    task that has none of its own and none from a flow around it.  It is not
    recorded in the logbook: an engine that resumes the flow is given it again.

    The engine is a :class:`~flowkit.engines.action_engine.engine.SerialActionEngine`,
    ``ParallelActionEngine`` or ``DistributedActionEngine`` (by mode, for
    TaskFlow's ``isinstance`` checks); ``engine.options`` shows the options
    given here that were not left at None.
    """
    given_executor = executor
    mode, executor = _mode_and_executor(engine, executor, max_workers, address, client, security, defer_reverts)
    persistence = _backend_from(backend)
    with persistence.get_connection() as conn:
        # A flow detail already in the backend (one being resumed) stays in its
        # own logbook; saving it in a new one would move or copy it.
        stored = book is None and flow_detail is not None and conn.has_flow_detail(flow_detail.uuid)
        deferring = flow_detail is not None and flow_detail.meta.get(DEFER_REVERTS_KEY) is True
        book, flow_detail = make_flow_detail(flow, book, flow_detail, store, defer_reverts)
        if stored:
            changed = deferring != (flow_detail.meta.get(DEFER_REVERTS_KEY) is True)
            if store or changed:  # otherwise the stored detail is already what is here
                conn.update_flow_details(flow_detail)
        else:
            conn.save_logbook(book)
    return _make_engine(
        flow,
        flow_detail,
        persistence,
        mode,
        executor,
        given_executor,
        max_workers=max_workers,
        address=address,
        client=client,
        security=security,
        defer_reverts=defer_reverts,
        clock=clock,
        retry_policy=retry_policy,
    )


def run(flow: Any, store: Mapping[str, Any] | None = None, engine: str = "serial", **options: Any) -> dict[str, Any]:
    """Load ``flow``, run it, and return every result (``storage.fetch_all()``)."""
    eng = load(flow, store=store, engine=engine, **options)
    eng.run()
    return eng.storage.fetch_all()


def load_unsaved(
    flow: Any,
    book: LogBook,
    flow_detail: FlowDetail,
    backend: Backend,
    store: Mapping[str, Any] | None = None,
    engine: str = "serial",
    *,
    executor: Any = None,
    max_workers: int | None = None,
    address: str | None = None,
    client: Any = None,
    security: Any = None,
    defer_reverts: bool | None = None,
    clock: Any = None,
    retry_policy: RetryPolicy | None = None,
) -> Engine:
    """An engine for ``flow`` on a new ``flow_detail`` in ``book`` that writes nothing yet.

    The options are ``load()``'s and are checked the same way.  ``flow_detail``
    is added to ``book`` and ``store`` recorded in it, but neither is saved:
    the caller stores ``book`` itself (with
    :meth:`~flowkit.persistence.base.Connection.create_logbook`, say) before
    it runs the engine, and may validate first (``engine.validate()``).
    """
    given_executor = executor
    mode, executor = _mode_and_executor(engine, executor, max_workers, address, client, security, defer_reverts)
    book, flow_detail = make_flow_detail(flow, book, flow_detail, store, defer_reverts)
    return _make_engine(
        flow,
        flow_detail,
        backend,
        mode,
        executor,
        given_executor,
        max_workers=max_workers,
        address=address,
        client=client,
        security=security,
        defer_reverts=defer_reverts,
        clock=clock,
        retry_policy=retry_policy,
    )
