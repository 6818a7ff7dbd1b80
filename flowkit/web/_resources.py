"""What the dashboard shows of reconciled resources (:mod:`flowkit.reconcile`), as JSON-ready dicts.

A resource and its operations have one JSON shape, the one ``flowkit
resources list/show --json`` prints (:func:`~flowkit.reconcile._values.resource_json`);
the dashboard masks keys in the facts and cuts the error texts to
:data:`~flowkit.web._model.LIMITS`, as it does for results and failures.

The resources live in two tables of the logbook's SQL database.  A backend
that is not SQL has none, and a database can lack them (they come with
schema version 0006; a tool that made only the logbook tables, or an
operator, may have left them out): both read as no resources, with a note
saying why, instead of an error.  flowkit.reconcile is imported on first use,
so a dashboard that is never asked about resources never loads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from flowkit.exceptions import NotFound, StorageFailure
from flowkit.listeners.base import mask_values
from flowkit.persistence.base import Backend
from flowkit.web._model import clip

if TYPE_CHECKING:
    from flowkit.reconcile import Operation, Resource, Resources

__all__ = ["ResourceFilter", "statuses", "list_resources", "resource_view"]


@dataclasses.dataclass(frozen=True)
class ResourceFilter:
    """Which resources the list shows: of one kind, in one status (a ResourceStatus value), how many."""

    kind: str | None = None
    status: str | None = None
    limit: int = 200


def statuses() -> tuple[str, ...]:
    """The statuses a resource can be in, in the order the reconciler defines them."""
    from flowkit.reconcile import ResourceStatus

    return tuple(status.value for status in ResourceStatus)


def _store(backend: Backend) -> Resources | None:
    from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
    from flowkit.reconcile import Resources

    # Resources() is handed no reconcilers: reading needs none, and kinds are not checked.
    return Resources(backend) if isinstance(backend, SQLAlchemyBackend) else None


def _tables_missing(store: Resources) -> bool:
    names = (store.tables.resources.name, store.tables.operations.name)

    def missing(conn: sa.Connection) -> bool:
        inspector = sa.inspect(conn)
        return not all(inspector.has_table(name) for name in names)

    return store.backend.read(missing, "the resource tables")


def _no_tables(store: Resources) -> str:
    return "this database has no resource tables (%s, %s): nothing here was reconciled" % (
        store.tables.resources.name,
        store.tables.operations.name,
    )


_NOT_SQL = "resources are kept in a SQL database, and this dashboard's backend is not one"


def _resource(found: Resource, mask_keys: Collection[str]) -> dict[str, Any]:
    from flowkit.reconcile._values import resource_json

    data = resource_json(found)
    if mask_keys:
        data["facts"] = mask_values(data["facts"], mask_keys)
    for key in ("reason", "last_error"):
        if data[key] is not None:
            data[key] = clip(data[key], "error")
    return data


def _operation(op: Operation) -> dict[str, Any]:
    from flowkit.reconcile._values import operation_json

    data = operation_json(op)
    if data["error"] is not None:
        data["error"] = clip(data["error"], "error")
    return data


def list_resources(backend: Backend, which: ResourceFilter, *, mask_keys: Collection[str] = ()) -> dict[str, Any]:
    """The resources page's data: ``{"resources": [...], "counts": {status: n}, "total", "note"}``.

    ``resources`` (at most ``which.limit``, by kind and id) are what
    ``/api/resources`` answers.  ``counts`` are per status over the kind
    filter alone (every status is there, also at 0), ``total`` their sum;
    ``note`` says why there can be none (no resource tables, not a SQL
    backend), else None.
    """
    empty = {"resources": [], "counts": dict.fromkeys(statuses(), 0), "total": 0}
    store = _store(backend)
    if store is None:
        return {**empty, "note": _NOT_SQL}
    try:
        counts = store.counts(which.kind)
        found = store.list(which.kind, which.status, limit=which.limit)
    except StorageFailure:
        if _tables_missing(store):
            return {**empty, "note": _no_tables(store)}
        raise
    return {
        "resources": [_resource(r, mask_keys) for r in found],
        "counts": {status.value: count for status, count in counts.items()},
        "total": sum(counts.values()),
        "note": None,
    }


def resource_view(backend: Backend, kind: str, resource_id: str, *, mask_keys: Collection[str] = ()) -> dict[str, Any]:
    """The ``/api/resources/{kind}/{id}`` answer: the resource with its ``operations``, oldest first.

    NotFound when there is no such resource (or nowhere one could be).
    """
    store = _store(backend)
    if store is None:
        raise NotFound("no resource %s/%s: %s" % (kind, resource_id, _NOT_SQL))
    try:
        found = store.get(kind, resource_id)
        history = store.operations(kind, resource_id)
    except StorageFailure:
        if _tables_missing(store):
            raise NotFound("no resource %s/%s: %s" % (kind, resource_id, _no_tables(store))) from None
        raise
    data = _resource(found, mask_keys)
    data["operations"] = [_operation(op) for op in history]
    return data
