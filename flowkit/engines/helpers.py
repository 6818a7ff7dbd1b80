"""Build engines whose flow can be rebuilt in another process.

A flow is code, and code is not stored in the logbook (persisted values are
JSON, never pickles).  What the logbook stores instead is *how to build* the
flow: the import path of a factory function and the JSON arguments it was
called with, in the flow detail's ``meta["factory"]``::

    {"name": "myapp.flows:make_order_flow", "args": [...], "kwargs": {...}}

:func:`load_from_factory` calls the factory, records that, and returns an
engine.  After a crash, :func:`load_from_detail` imports the factory again,
rebuilds the same flow and returns an engine that resumes the flow detail:
the runtime rebuilds its state from the atom details, so atoms whose results
are in the logbook are not run again.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# Imported as a module: flowkit.engines imports this file while it initialises.
from flowkit import engines as _engines
from flowkit.atom import Atom
from flowkit.engines import _consistency
from flowkit.engines.engine import Engine
from flowkit.flow import Flow
from flowkit.persistence.models import FlowDetail, LogBook

__all__ = ["load_from_factory", "flow_from_detail", "load_from_detail", "save_factory_details", "FACTORY_KEY"]

#: The key of ``FlowDetail.meta`` that records how to rebuild the flow.
FACTORY_KEY = "factory"


# -- naming a factory ----------------------------------------------------------------


def _resolve(name: str) -> Any:
    """Import ``"module:qualname"`` and return the object it names."""
    module_name, sep, qualname = name.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError("%r is not a 'module:qualname' factory name" % (name,))
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _module_name(factory: Any) -> str | None:
    module = getattr(factory, "__module__", None)
    if module == "__main__":
        # A script run with ``python -m pkg.mod`` knows its real module name;
        # recording that lets another process (or ``flowkit resume``) import it.
        import sys

        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            return str(spec.name)
    return module


def factory_name(factory: Callable[..., Any]) -> str:
    """The ``"module:qualname"`` under which ``factory`` can be imported again.

    Raises ValueError when the name would not lead back to ``factory``: a
    lambda, a function defined inside another function, a bound method of an
    instance, or anything without a module-level name.
    """
    if not callable(factory):
        raise ValueError("flow factory must be callable, got %r" % (factory,))
    module = _module_name(factory)
    qualname = getattr(factory, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        # "<lambda>" and "<locals>" mark callables no import can reach.
        raise ValueError(
            "flow factory %r cannot be imported by name (qualified name %r in module %r); "
            "use a function defined at the top level of an importable module so the flow can be "
            "rebuilt from the logbook" % (factory, qualname, module)
        )
    name = "%s:%s" % (module, qualname)
    try:
        found = _resolve(name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            "flow factory %r cannot be imported again as %r (%s: %s); use a function defined at the "
            "top level of an importable module" % (factory, name, type(error).__name__, error)
        ) from error
    # ``==`` rather than ``is``: each attribute access makes a new bound
    # classmethod object, but they compare equal.  A script run with
    # ``python -m`` is a second copy of its module, so its functions are
    # equal to the imported ones only in name and code location.
    same = found is factory or found == factory
    if not same and module != factory.__module__:
        same = _code_location(found) == _code_location(factory) is not None
    if not same:
        raise ValueError(
            "flow factory %r is not what %r imports (%r); a bound method of an instance or a "
            "re-assigned name cannot be rebuilt from the logbook" % (factory, name, found)
        )
    return name


def _code_location(func: Any) -> tuple[str, int] | None:
    code = getattr(getattr(func, "__func__", func), "__code__", None)
    return None if code is None else (code.co_filename, code.co_firstlineno)


def _json_copy(value: Any, what: str) -> Any:
    """``value`` as it will read back from the logbook, or ValueError if it is not JSON."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(
            "%s must be JSON data (dicts with str keys, lists, str, numbers, bool, None) so the flow "
            "can be rebuilt from the logbook: %s" % (what, error)
        ) from error


def _build(factory: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], name: str) -> Any:
    flow = factory(*args, **kwargs)
    if not isinstance(flow, (Flow, Atom)):
        raise TypeError(
            "flow factory %r returned %r, not a flow or an atom" % (name, type(flow).__name__)
        )
    return flow


# -- the public helpers ------------------------------------------------------------


def load_from_factory(
    flow_factory: Callable[..., Any],
    factory_args: Sequence[Any] | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    store: Mapping[str, Any] | None = None,
    book: LogBook | None = None,
    backend: Any = None,
    engine: str = "serial",
    **options: Any,
) -> Engine:
    """Build a flow with ``flow_factory(*factory_args, **factory_kwargs)`` and load it.

    The flow detail records the factory's import path and arguments in
    ``meta["factory"]``, so :func:`load_from_detail` can rebuild the flow in
    another process and resume it.  The factory must be importable by name
    and its arguments must be JSON data; otherwise ValueError is raised
    before anything is written.  ``store``, ``book``, ``backend``, ``engine``
    and ``options`` (``executor``, ``max_workers``) are as for
    :func:`flowkit.engines.load`.
    """
    name = factory_name(flow_factory)
    args = _json_copy(list(factory_args or ()), "factory_args of %r" % (name,))
    kwargs = _json_copy(dict(factory_kwargs or {}), "factory_kwargs of %r" % (name,))
    flow = _build(flow_factory, tuple(factory_args or ()), dict(factory_kwargs or {}), name)
    flow_detail = FlowDetail(name=flow.name)
    flow_detail.meta[FACTORY_KEY] = {"name": name, "args": args, "kwargs": kwargs}
    return _engines.load(
        flow, store=store, engine=engine, backend=backend, book=book, flow_detail=flow_detail, **options
    )


def save_factory_details(
    flow_detail: FlowDetail,
    flow_factory: Callable[..., Any],
    factory_args: Sequence[Any] | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
) -> FlowDetail:
    """Record in ``flow_detail`` how to build its flow, without building or running it.

    This is what posting a job needs: the conductor that claims the job calls
    :func:`load_from_detail`, which imports ``flow_factory`` again and calls it
    with these arguments.  The same checks as :func:`load_from_factory` apply
    (an importable factory, JSON arguments), raising ValueError before
    anything is recorded.  The flow detail is changed in place and returned;
    saving it (in a logbook) is the caller's business.
    """
    name = factory_name(flow_factory)
    args = _json_copy(list(factory_args or ()), "factory_args of %r" % (name,))
    kwargs = _json_copy(dict(factory_kwargs or {}), "factory_kwargs of %r" % (name,))
    flow_detail.meta[FACTORY_KEY] = {"name": name, "args": args, "kwargs": kwargs}
    return flow_detail


def flow_from_detail(flow_detail: FlowDetail) -> Any:
    """Rebuild the flow that ``flow_detail`` was loaded from (see :func:`load_from_factory`).

    Raises ValueError naming the flow detail when it has no factory record or
    the factory cannot be imported or called.
    """
    what = "flow detail %r (%s)" % (flow_detail.name, flow_detail.uuid)
    record = flow_detail.meta.get(FACTORY_KEY)
    if not isinstance(record, Mapping) or not isinstance(record.get("name"), str):
        raise ValueError(
            "cannot rebuild the flow of %s: it has no factory record (meta[%r]); only flows loaded "
            "with load_from_factory() can be rebuilt" % (what, FACTORY_KEY)
        )
    name = record["name"]
    args = record.get("args") or []
    kwargs = record.get("kwargs") or {}
    try:
        factory = _resolve(name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            "cannot rebuild the flow of %s: factory %r cannot be imported (%s: %s)"
            % (what, name, type(error).__name__, error)
        ) from error
    try:
        return _build(factory, args, kwargs, name)
    except Exception as error:
        raise ValueError(
            "cannot rebuild the flow of %s: factory %r failed (%s: %s)" % (what, name, type(error).__name__, error)
        ) from error


def load_from_detail(
    flow_detail: FlowDetail,
    store: Mapping[str, Any] | None = None,
    backend: Any = None,
    engine: str = "serial",
    *,
    repair: bool = False,
    **options: Any,
) -> Engine:
    """Rebuild ``flow_detail``'s flow and load an engine that continues it.

    ``run()`` on the returned engine resumes the flow: atoms whose results are
    in the logbook keep them, atoms that were in flight run again, and a flow
    that was reverting goes on reverting.  A flow detail that ended (SUCCESS,
    REVERTED) or was SUSPENDED can also just be inspected through
    ``engine.storage``.  ``backend`` should be the backend the flow detail was
    read from; ``store`` adds injected values.

    The flow detail is checked first: one whose logbook is inconsistent (an
    atom row that could not be read, an atom detail that must exist but does
    not) raises :class:`~flowkit.exceptions.InconsistentLogbook` naming each
    problem, before anything is written.  ``repair=True`` instead re-runs the
    atoms concerned, recording that in ``flow_detail.meta["repairs"]`` (see
    :mod:`flowkit.engines._consistency` for the rules).
    """
    flow = flow_from_detail(flow_detail)
    compilation = _consistency.check_resumable(flow, flow_detail, backend, repair=repair)
    eng = _engines.load(flow, store=store, engine=engine, backend=backend, flow_detail=flow_detail, **options)
    eng._compilation = compilation  # compiled once, by the check
    # Attach the atom details now so that ``engine.storage`` answers questions
    # (fetch_all, get) about a finished flow without running anything.  Any
    # new detail is written by ``prepare()`` or by ``run()``'s first flush.
    eng._prepare()
    return eng
