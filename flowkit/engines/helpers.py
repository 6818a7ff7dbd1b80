"""Build engines whose flow can be rebuilt in another process.

A flow is code, and code is not stored in the logbook (persisted values are
JSON, never pickles).  What the logbook stores instead is *how to build* the
flow: the name of a registered factory function and the JSON arguments it
was called with, in the flow detail's ``meta["factory"]``::

    {"name": "myapp.flows:make_order_flow", "args": [...], "kwargs": {...}}

:func:`load_from_factory` calls the factory, registers it (see
:mod:`flowkit.factories`), records that, and returns an engine.  After a
crash, :func:`load_from_detail` looks the name up among the factories this
process knows -- registered ones, installed entry points, modules explicitly
allowed -- never importing what the record names; it rebuilds the same flow
and returns an engine that resumes the flow detail: the runtime rebuilds its
state from the atom details, so atoms whose results are in the logbook are
not run again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from flowkit import _imports
from flowkit.atom import Atom
from flowkit.engines import _consistency, _loading
from flowkit.engines._compiler import compile_flow
from flowkit.engines.engine import Engine
from flowkit.exceptions import ResultNotStorable
from flowkit.factories import FactoryRegistry, _natural_name, default_registry
from flowkit.flow import Flow
from flowkit.persistence import codec
from flowkit.persistence._integrity import REPAIRS_KEY
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.versioning import STRUCTURE_KEY, Migration, check_resume

__all__ = [
    "load_from_factory",
    "flow_from_detail",
    "load_from_detail",
    "save_factory_details",
    "FACTORY_KEY",
]

#: The key of ``FlowDetail.meta`` that records how to rebuild the flow.
FACTORY_KEY = "factory"
# The key of ``FlowDetail.meta`` holding the injected values (the engine's storage keeps it).
_STORE_KEY = "store"


# -- naming a factory ----------------------------------------------------------------


def factory_name(factory: Callable[..., Any]) -> str:
    """The ``"module:qualname"`` under which ``factory`` can be found again.

    Raises ValueError when the name would not lead back to ``factory``: a
    lambda, a function defined inside another function, a bound method of an
    instance, or anything without a module-level name.  (Importing here is
    safe: ``factory`` is the caller's code, already running.)
    """
    name = _natural_name(factory)
    module = name.partition(":")[0]
    try:
        found: Any = _imports.resolve(name)
    except _imports.ResolveError as error:
        raise ValueError(
            "flow factory %r cannot be imported again as %r (%s); use a function defined at the "
            "top level of an importable module" % (factory, name, error.reason)
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


def _registered_name(factory: Callable[..., Any], factories: FactoryRegistry | None) -> str:
    """The name ``factory`` is recorded under, registering it in ``factories`` if it is new there."""
    registry = factories if factories is not None else default_registry
    name = registry.name_of(factory)
    if name is None:
        name = factory_name(factory)
        registry.register(factory, name)
    return name


def _factory_record(name: str, args: Any, kwargs: Any, factories: FactoryRegistry | None) -> dict[str, Any]:
    registry = factories if factories is not None else default_registry
    record: dict[str, Any] = {"name": name, "args": args, "kwargs": kwargs}
    version = registry.version_of(name)
    if version is not None:
        record["version"] = version
    return record


def _json_copy(value: Any, what: str) -> Any:
    """``value`` as it will read back from the logbook, or ValueError if it cannot be stored."""
    try:
        return codec.canonical(value, what=what)
    except ResultNotStorable as error:
        raise ValueError(
            "%s must be JSON data (dicts with str keys, lists, str, numbers, bool, None) so the flow "
            "can be rebuilt from the logbook: %s" % (what, error)
        ) from error


def _not_json(value: Any, what: str) -> str | None:
    """Why ``value`` (read from storage, named ``what``) cannot be stored, or None if it can."""
    try:
        codec.canonical(value, what=what)
    except ResultNotStorable as error:
        return str(error)
    return None


def _build(factory: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], name: str) -> Any:
    flow = factory(*args, **kwargs)
    if not isinstance(flow, (Flow, Atom)):
        raise TypeError("flow factory %r returned %r, not a flow or an atom" % (name, type(flow).__name__))
    return flow


def _what(flow_detail: FlowDetail) -> str:
    name = repr(flow_detail.name)
    return "flow detail %s (%s)" % (name if len(name) <= 120 else name[:116] + "...'", flow_detail.uuid)


def _stored_record(flow_detail: FlowDetail) -> tuple[str, list[Any], dict[str, Any]]:
    """The factory record of ``flow_detail``, checked to be what load_from_factory writes."""
    what = _what(flow_detail)
    record = flow_detail.meta.get(FACTORY_KEY)
    if not isinstance(record, Mapping) or not isinstance(record.get("name"), str):
        raise ValueError(
            "cannot rebuild the flow of %s: it has no factory record (meta[%r]); only flows loaded "
            "with load_from_factory() can be rebuilt" % (what, FACTORY_KEY)
        )
    args = record.get("args", [])
    kwargs = record.get("kwargs", {})
    if not isinstance(args, list):
        raise ValueError(
            "cannot rebuild the flow of %s: its factory record's args must be a JSON list, got %s"
            % (what, type(args).__name__)
        )
    if not isinstance(kwargs, dict):
        raise ValueError(
            "cannot rebuild the flow of %s: its factory record's kwargs must be a JSON object, got %s"
            % (what, type(kwargs).__name__)
        )
    version = record.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(
            "cannot rebuild the flow of %s: its factory record's version must be a positive int, got %s"
            % (what, type(version).__name__)
        )
    for part, value in (("args", args), ("kwargs", kwargs)):
        problem = _not_json(value, part)
        if problem is not None:
            raise ValueError(
                "cannot rebuild the flow of %s: its factory record's %s are not JSON data: %s" % (what, part, problem)
            )
    return record["name"], args, kwargs


def _check_stored_store(flow_detail: FlowDetail) -> None:
    stored = flow_detail.meta.get(_STORE_KEY)
    if stored is None:
        return
    where = "meta[%r]" % (_STORE_KEY,)
    if isinstance(stored, dict):
        problem = _not_json(stored, where)
    else:
        problem = "%s is a %s, not a JSON object" % (where, type(stored).__name__)
    if problem is not None:
        raise ValueError("cannot resume %s: its stored values are not JSON data: %s" % (_what(flow_detail), problem))


# -- the public helpers ------------------------------------------------------------


def load_from_factory(
    flow_factory: Callable[..., Any],
    factory_args: Sequence[Any] | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    store: Mapping[str, Any] | None = None,
    book: LogBook | None = None,
    backend: Any = None,
    engine: str = "serial",
    *,
    factories: FactoryRegistry | None = None,
    **options: Any,
) -> Engine:
    """Build a flow with ``flow_factory(*factory_args, **factory_kwargs)`` and load it.

    The flow detail records the factory's name and arguments in
    ``meta["factory"]``, so :func:`load_from_detail` can rebuild the flow in
    another process and resume it.  The factory is registered in
    ``factories`` (default: :data:`flowkit.factories.default_registry`) for
    this process, under the name it already has there or else its
    ``"module:qualname"``; another process resuming the flow must register it
    too (importing a module whose factory is decorated with
    :func:`flowkit.factories.flow_factory` does).  An unregistered factory
    must be importable by that name, and the arguments must be JSON data;
    otherwise ValueError is raised before anything is written.  ``store``,
    ``book``, ``backend``, ``engine`` and ``options`` (``executor``,
    ``max_workers``) are as for :func:`flowkit.engines.load`.
    """
    name = _registered_name(flow_factory, factories)
    args = _json_copy(list(factory_args or ()), "factory_args of %r" % (name,))
    kwargs = _json_copy(dict(factory_kwargs or {}), "factory_kwargs of %r" % (name,))
    flow = _build(flow_factory, tuple(factory_args or ()), dict(factory_kwargs or {}), name)
    flow_detail = FlowDetail(name=flow.name)
    flow_detail.meta[FACTORY_KEY] = _factory_record(name, args, kwargs, factories)
    return _loading.load(
        flow, store=store, engine=engine, backend=backend, book=book, flow_detail=flow_detail, **options
    )


def save_factory_details(
    flow_detail: FlowDetail,
    flow_factory: Callable[..., Any],
    factory_args: Sequence[Any] | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    *,
    factories: FactoryRegistry | None = None,
) -> FlowDetail:
    """Record in ``flow_detail`` how to build its flow, without building or running it.

    This is what posting a job needs: the conductor that claims the job calls
    :func:`load_from_detail`, which finds ``flow_factory`` by its registered
    name and calls it with these arguments.  The factory is registered as
    :func:`load_from_factory` does, and the same checks apply (JSON
    arguments), raising ValueError before anything is recorded.  The flow
    detail is changed in place and returned; saving it (in a logbook) is the
    caller's business.
    """
    name = _registered_name(flow_factory, factories)
    args = _json_copy(list(factory_args or ()), "factory_args of %r" % (name,))
    kwargs = _json_copy(dict(factory_kwargs or {}), "factory_kwargs of %r" % (name,))
    flow_detail.meta[FACTORY_KEY] = _factory_record(name, args, kwargs, factories)
    return flow_detail


def flow_from_detail(
    flow_detail: FlowDetail,
    *,
    factories: FactoryRegistry | None = None,
    allowed_modules: Iterable[str] | None = None,
) -> Any:
    """Rebuild the flow that ``flow_detail`` was loaded from (see :func:`load_from_factory`).

    The factory is looked up by the name recorded in the flow detail in
    ``factories`` (default: :data:`flowkit.factories.default_registry`);
    ``allowed_modules`` adds module prefixes whose factories may be imported
    (see :mod:`flowkit.factories`).  A name it does not know raises
    :class:`~flowkit.exceptions.UnknownFactory` before anything is imported or
    called.  Raises ValueError naming the flow detail when it has no factory
    record, the record's arguments are not JSON data, or the factory fails.
    """
    name, args, kwargs = _stored_record(flow_detail)
    registry = factories if factories is not None else default_registry
    factory = registry.resolve(name, flow_detail=flow_detail, allowed_modules=allowed_modules)
    try:
        return _build(factory, args, kwargs, name)
    except Exception as error:
        raise ValueError(
            "cannot rebuild the flow of %s: factory %r failed (%s: %s)"
            % (_what(flow_detail), name, type(error).__name__, error)
        ) from error


def factory_migration(flow_detail: FlowDetail, factories: FactoryRegistry | None = None) -> Migration | None:
    """The migration the flow detail's factory declares from the version that built it (None: none).

    Raises ValueError when the flow detail was built by a newer version of
    the factory than the one registered here.
    """
    record = flow_detail.meta.get(FACTORY_KEY)
    if not isinstance(record, Mapping) or not isinstance(record.get("name"), str):
        return None
    registry = factories if factories is not None else default_registry
    recorded = record.get("version", 1)
    if not isinstance(recorded, int) or isinstance(recorded, bool):
        return None  # refused by _stored_record when the flow is rebuilt
    try:
        return registry.migration_for(record["name"], recorded)
    except ValueError as error:
        raise ValueError("cannot resume %s: %s" % (_what(flow_detail), error)) from None


def migration_for_resume(
    flow_detail: FlowDetail, migrate: Migration | None, factories: FactoryRegistry | None = None
) -> Migration | None:
    """The factory's declared migration (if any) followed by ``migrate``."""
    declared = factory_migration(flow_detail, factories)
    if declared is None:
        return migrate
    return declared if migrate is None else declared.then(migrate)


def _record_current_version(flow_detail: FlowDetail, factories: FactoryRegistry | None) -> None:
    record = flow_detail.meta.get(FACTORY_KEY)
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        return
    registry = factories if factories is not None else default_registry
    version = registry.version_of(record["name"])
    if version is not None and record.get("version", 1) != version:
        flow_detail.meta[FACTORY_KEY] = {**record, "version": version}


def load_from_detail(
    flow_detail: FlowDetail,
    store: Mapping[str, Any] | None = None,
    backend: Any = None,
    engine: str = "serial",
    *,
    factories: FactoryRegistry | None = None,
    allowed_modules: Iterable[str] | None = None,
    repair: bool = False,
    migrate: Migration | None = None,
    **options: Any,
) -> Engine:
    """Rebuild ``flow_detail``'s flow and load an engine that continues it.

    ``run()`` on the returned engine resumes the flow: atoms whose results are
    in the logbook keep them, atoms that were in flight run again, and a flow
    that was reverting goes on reverting.  A flow detail that ended (SUCCESS,
    REVERTED) or was SUSPENDED can also just be inspected through
    ``engine.storage``.  ``backend`` should be the backend the flow detail was
    read from.  The values injected when the flow was loaded or posted as a
    job are in the flow detail; ``store`` adds to them and overrides them.
    ``factories`` and ``allowed_modules`` are as for :func:`flow_from_detail`.

    The flow detail is checked first: one whose logbook is inconsistent (an
    atom row that could not be read, an atom detail that must exist but does
    not) raises :class:`~flowkit.exceptions.InconsistentLogbook` naming each
    problem, before anything is written.  ``repair=True`` instead re-runs the
    atoms concerned, recording that in ``flow_detail.meta["repairs"]`` (see
    ``flowkit.engines._consistency`` for the rules).

    Before that, the flow rebuilt from code is compared with the structure
    the flow detail recorded when it started (see :mod:`flowkit.versioning`):
    an incompatible change (a finished atom renamed or removed, a major
    version bump, ...) raises :class:`~flowkit.exceptions.FlowChanged`
    naming each difference, before anything runs or is written.  ``migrate``
    (a :class:`~flowkit.versioning.Migration`) says what to do instead; it
    follows the migrations the factory declares for the version that built
    the flow detail.  What was accepted is written at once, in one
    transaction, and recorded in ``flow_detail.meta["changes"]``.
    """
    if migrate is not None and not isinstance(migrate, Migration):
        raise TypeError("migrate must be a flowkit.versioning.Migration, got %r" % (migrate,))
    flow = flow_from_detail(flow_detail, factories=factories, allowed_modules=allowed_modules)
    _check_stored_store(flow_detail)
    compiled = compile_flow(flow)
    before = flow_detail.meta.get(STRUCTURE_KEY)
    accepted = check_resume(compiled, flow_detail, migration_for_resume(flow_detail, migrate, factories))
    changed = flow_detail.meta.get(STRUCTURE_KEY) != before
    _record_current_version(flow_detail, factories)
    # Atoms known to be new have no detail because they never had one; without a
    # recorded structure a missing detail may be a lost row, which the check below names.
    added = frozenset(d.atoms[0] for d in accepted if d.kind == "added") if before is not None else frozenset()
    repairs = len(flow_detail.meta.get(REPAIRS_KEY) or ())
    compilation = _consistency.check_resumable(
        flow, flow_detail, backend, repair=repair, compilation=compiled, added=added
    )
    eng = _loading.load(flow, store=store, engine=engine, backend=backend, flow_detail=flow_detail, **options)
    eng._compilation = compilation  # compiled once, by the check
    records: list[Any] = flow_detail.meta.get(REPAIRS_KEY) or []
    if len(records) > repairs:
        eng._repairing = frozenset(records[-1]["atoms"])
    if changed:
        _write_changes(eng, flow_detail)
    # Attach the atom details now so that ``engine.storage`` answers questions
    # (fetch_all, get) about a finished flow without running anything.  Any
    # new detail is written by ``prepare()`` or by ``run()``'s first flush.
    eng._prepare()
    return eng


def _write_changes(eng: Engine, flow_detail: FlowDetail) -> None:
    """Write an accepted change (a migration, the new structure) in one transaction, holding the flow lock."""
    connection = eng.storage.connection
    if not connection.has_flow_detail(flow_detail.uuid):
        return  # a flow detail of no backend: written when the engine first saves it
    lock = connection.lock_flow(flow_detail)
    try:
        connection.update_flow_details(flow_detail)
        connection.flush()
    finally:
        lock.release()
