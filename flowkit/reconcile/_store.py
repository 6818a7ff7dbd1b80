"""The service side: create resources, set their targets and read them back, in the logbook's database.

:class:`Resources` keeps the ``<prefix>resources`` rows (migration 0006) in
the database of a :class:`~flowkit.persistence.backends.impl_sqlalchemy.SQLAlchemyBackend`.
Every write takes ``connection=``: a SQLAlchemy ``Connection`` whose open
transaction receives the change, so a service's own row and the target change
commit (or roll back) together; without it each call is its own transaction.
A call only records what is wanted and returns: the reconciler's driver
(``flowkit.reconcile._driver``) does the work.

Kinds and states are checked against the kind's registered
:class:`~flowkit.reconcile.Reconciler` before anything is written; facts must
be JSON of at most ``max_facts_bytes``.  Rows are read back as data only: a
row names no code, and a row that cannot be decoded is reported, not run.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa

from flowkit import exceptions as exc
from flowkit.clock import Clock, as_clock
from flowkit.persistence._sql.resources_schema import MAX_ID_CHARS, ResourceTables, make_resource_tables
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.reconcile._rules import Reconciler, ReconcilerRegistry, default_reconcilers
from flowkit.reconcile._values import Operation, Resource, ResourceStatus

__all__ = ["Resources", "DEFAULT_MAX_FACTS_BYTES", "KEEP"]

_T = TypeVar("_T")

#: The largest facts document (bytes of its JSON) a resource keeps unless told otherwise: 1 MiB.
DEFAULT_MAX_FACTS_BYTES = 1 << 20

# The longest error text stored about a resource or an operation.
MAX_ERROR_CHARS = 2000


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


#: ``set_target(..., rollback=KEEP)`` (the default) leaves the rollback state as it is.
KEEP: Any = _Keep()


def clip(text: str | None) -> str | None:
    """``text`` cut to MAX_ERROR_CHARS (None stays None)."""
    if text is None or len(text) <= MAX_ERROR_CHARS:
        return text
    return text[: MAX_ERROR_CHARS - 20] + " ... (%d chars)" % len(text)


def _is_json(value: Any, where: str) -> None:
    """Raise TypeError naming ``where`` unless ``value`` is plain JSON (dict with str keys, list, scalar)."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("%s: %r is not JSON (NaN and infinities are refused)" % (where, value))
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _is_json(item, "%s[%d]" % (where, index))
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("%s: key %r is not a string, so the facts are not JSON" % (where, key))
            _is_json(item, "%s[%r]" % (where, key))
        return
    raise TypeError("%s: a %s is not JSON" % (where, type(value).__name__))


class Resources:
    """Resources kept toward a target state, stored beside the logbooks (see the module docs).

    ``backend`` is the logbook backend (or its URL); the resources go in its
    database, under its table prefix.  ``reconcilers`` is where kinds are
    looked up (default: ``default_reconcilers``);
    ``clock`` stamps ``created_at``/``updated_at``.
    """

    def __init__(
        self,
        backend: SQLAlchemyBackend | str,
        *,
        reconcilers: ReconcilerRegistry | None = None,
        clock: Clock | Callable[[], float] | None = None,
        max_facts_bytes: int = DEFAULT_MAX_FACTS_BYTES,
    ) -> None:
        if isinstance(backend, str):
            backend = SQLAlchemyBackend(backend)
            self._owns = True
        else:
            self._owns = False
        if not isinstance(backend, SQLAlchemyBackend):
            raise TypeError("Resources need a SQLAlchemyBackend (or its URL), got %r" % (backend,))
        if isinstance(max_facts_bytes, bool) or not isinstance(max_facts_bytes, int) or max_facts_bytes < 4:
            raise ValueError("max_facts_bytes must be an int of at least 4, got %r" % (max_facts_bytes,))
        self.backend = backend
        self.reconcilers = reconcilers if reconcilers is not None else default_reconcilers
        self.clock: Clock = as_clock(clock)
        self.max_facts_bytes = max_facts_bytes
        self.tables: ResourceTables = make_resource_tables(backend.table_prefix)
        self._ready = False

    # -- plumbing ---------------------------------------------------------------------------------

    def _connect(self) -> None:
        if not self._ready:
            self.backend.ensure_schema()
            self._ready = True

    def close(self) -> None:
        """Close the backend if these resources opened it (from a URL)."""
        if self._owns:
            self.backend.close()

    def __enter__(self) -> Resources:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A connection in a write transaction, for your own writes plus ``connection=conn`` calls.

        Commits when the block ends, rolls back if it raises.  On SQLite the
        transaction takes the write lock up front (``BEGIN IMMEDIATE``).
        """
        self._connect()
        with self.backend.engine.connect().execution_options(flowkit_write=True) as conn, conn.begin():
            yield conn

    def _write(self, connection: Any, fn: Callable[[sa.Connection], _T], what: str) -> _T:
        self._connect()
        if connection is None:
            return self.backend.write_now(fn, what)
        if not isinstance(connection, sa.Connection):
            raise TypeError("connection= takes a SQLAlchemy Connection, got %r" % (connection,))
        return fn(connection)

    def _read(self, connection: Any, fn: Callable[[sa.Connection], _T], what: str) -> _T:
        self._connect()
        if connection is None:
            return self.backend.read(fn, what)
        if not isinstance(connection, sa.Connection):
            raise TypeError("connection= takes a SQLAlchemy Connection, got %r" % (connection,))
        return fn(connection)

    def _where(self, kind: str, resource_id: str) -> Any:
        t = self.tables.resources
        return sa.and_(t.c.kind == kind, t.c.id == resource_id)

    def row(self, conn: sa.Connection, kind: str, resource_id: str, *, for_update: bool = False) -> Any:
        """The resource's row (locked for the transaction with ``for_update``); NotFound if absent."""
        stmt = sa.select(self.tables.resources).where(self._where(kind, resource_id))
        if for_update and conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update()
        found = conn.execute(stmt).mappings().first()
        if found is None:
            raise exc.NotFound("no resource %s/%s" % (kind, str(resource_id)[:MAX_ID_CHARS]))
        return found

    def reconciler(self, kind: str) -> Reconciler:
        """The kind's reconciler; :class:`~flowkit.exceptions.UnknownKind` if none is registered."""
        return self.reconcilers.get(kind)

    def _check_id(self, kind: str, resource_id: object) -> str:
        if not isinstance(resource_id, str) or not resource_id or len(resource_id) > MAX_ID_CHARS:
            raise ValueError(
                "a %s resource's id must be a non-empty string of at most %d characters, got %r"
                % (kind, MAX_ID_CHARS, resource_id if not isinstance(resource_id, str) else resource_id[:80])
            )
        if "\x00" in resource_id:
            raise ValueError("a %s resource's id must not contain NUL" % (kind,))
        return resource_id

    def encode_facts(self, kind: str, resource_id: str, facts: Any) -> str:
        """``facts`` as the JSON stored; TypeError/ValueError naming the resource if not JSON or too big."""
        where = "facts of %s/%s" % (kind, resource_id)
        _is_json(facts, where)
        text = json.dumps(facts, sort_keys=True, allow_nan=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
        if size > self.max_facts_bytes:
            raise ValueError("%s are %d bytes of JSON, more than the %d allowed" % (where, size, self.max_facts_bytes))
        return text

    # -- the service side -----------------------------------------------------------------------

    def create(
        self,
        kind: str,
        resource_id: str,
        *,
        target: str | None = None,
        current: str | None = None,
        rollback: str | None = None,
        facts: Any = None,
        connection: Any = None,
    ) -> Resource:
        """Record a new resource and return it; the reconciler takes it from there.

        ``current`` defaults to the kind's initial state, ``target`` to
        ``current``.  A target no rule chain reaches makes the resource
        UNREACHABLE (with the reason) at once.  ``rollback`` is where to go
        once an operation failed ``max_errors`` times in a row.  Raises
        :class:`~flowkit.exceptions.UnknownKind`, ValueError (a state the
        kind does not have, a bad id, facts too big), TypeError (facts not
        JSON), :class:`~flowkit.exceptions.ResourceExists`; nothing is
        written then.
        """
        reconciler = self.reconciler(kind)
        resource_id = self._check_id(kind, resource_id)
        what = "resource %s/%s" % (kind, resource_id)
        current = reconciler.check_state(reconciler.initial if current is None else current, what + ": current")
        target = reconciler.check_state(current if target is None else target, what + ": target")
        if rollback is not None:
            reconciler.check_state(rollback, what + ": rollback")
        encoded = self.encode_facts(kind, resource_id, facts)
        status, reason, _ = reconciler.plan(current, target, facts)
        now = self.clock.now()
        row = {
            "kind": kind,
            "id": resource_id,
            "current_state": current,
            "target_state": target,
            "rollback_state": rollback,
            "generation": 1,
            "observed_generation": 0 if status is ResourceStatus.CONVERGING else 1,
            "errors": "{}",
            "last_error": None,
            "facts": encoded,
            "status": status.value,
            "reason": reason,
            "op_rule": None,
            "op_job": None,
            "op_generation": None,
            "created_at": now,
            "updated_at": now,
        }

        def insert(conn: sa.Connection) -> Resource:
            t = self.tables.resources
            if conn.execute(sa.select(t.c.kind).where(self._where(kind, resource_id))).first() is not None:
                raise exc.ResourceExists("%s exists already" % (what,))
            conn.execute(sa.insert(t), [row])
            return self.to_resource(row)

        return self._write(connection, insert, "create " + what)

    def set_target(
        self,
        kind: str,
        resource_id: str,
        target: str,
        *,
        rollback: str | None = KEEP,
        connection: Any = None,
    ) -> Resource:
        """Make ``target`` the resource's target (its generation goes up by one) and return it.

        An operation in flight is not interrupted: when it ends, the rules are
        asked again with the new target.  The same target again changes
        nothing.  A BROKEN resource keeps its status (``retry`` clears it).
        ``rollback`` replaces the rollback state (None: no rollback; the
        default keeps it).
        """
        reconciler = self.reconciler(kind)
        resource_id = self._check_id(kind, resource_id)
        what = "resource %s/%s" % (kind, resource_id)
        reconciler.check_state(target, what + ": target")
        if rollback is not KEEP and rollback is not None:
            reconciler.check_state(rollback, what + ": rollback")

        def change(conn: sa.Connection) -> Resource:
            row = self.row(conn, kind, resource_id, for_update=True)
            updates: dict[str, Any] = {}
            if rollback is not KEEP and rollback != row["rollback_state"]:
                updates["rollback_state"] = rollback
            if target != row["target_state"]:
                updates["target_state"] = target
                updates["generation"] = row["generation"] + 1
                if row["op_job"] is None and row["status"] != ResourceStatus.BROKEN.value:
                    facts = self.decode_facts(row)
                    status, reason, _ = reconciler.plan(row["current_state"], target, facts)
                    updates["status"] = status.value
                    updates["reason"] = reason
                    if status is not ResourceStatus.CONVERGING:
                        updates["observed_generation"] = updates["generation"]
            if not updates:
                return self.to_resource(row)
            return self.update(conn, row, updates)

        return self._write(connection, change, "set the target of " + what)

    def set_facts(self, kind: str, resource_id: str, facts: Any, *, connection: Any = None) -> Resource:
        """Replace the resource's facts; an UNREACHABLE resource is looked at again with them."""
        reconciler = self.reconciler(kind)
        resource_id = self._check_id(kind, resource_id)
        encoded = self.encode_facts(kind, resource_id, facts)

        def change(conn: sa.Connection) -> Resource:
            row = self.row(conn, kind, resource_id, for_update=True)
            updates: dict[str, Any] = {"facts": encoded}
            if row["status"] == ResourceStatus.UNREACHABLE.value and row["op_job"] is None:
                status, reason, _ = reconciler.plan(row["current_state"], row["target_state"], facts)
                updates.update(status=status.value, reason=reason)
            return self.update(conn, row, updates)

        return self._write(connection, change, "set the facts of resource %s/%s" % (kind, resource_id))

    def retry(self, kind: str, resource_id: str, *, connection: Any = None) -> Resource:
        """Clear BROKEN (or UNREACHABLE): error counts start again from zero and the rules are asked again."""
        reconciler = self.reconciler(kind)
        resource_id = self._check_id(kind, resource_id)

        def change(conn: sa.Connection) -> Resource:
            row = self.row(conn, kind, resource_id, for_update=True)
            if row["status"] not in (ResourceStatus.BROKEN.value, ResourceStatus.UNREACHABLE.value):
                raise exc.InvalidState(
                    "resource %s/%s is %s, not broken or unreachable: there is nothing to retry"
                    % (kind, resource_id, row["status"])
                )
            updates: dict[str, Any] = {"errors": "{}"}
            if row["op_job"] is None:
                status, reason, _ = reconciler.plan(row["current_state"], row["target_state"], self.decode_facts(row))
                updates.update(status=status.value, reason=reason)
                if status is not ResourceStatus.CONVERGING:
                    updates["observed_generation"] = row["generation"]
            else:
                updates.update(status=ResourceStatus.CONVERGING.value, reason=None)
            return self.update(conn, row, updates)

        return self._write(connection, change, "retry resource %s/%s" % (kind, resource_id))

    def update(self, conn: sa.Connection, row: Mapping[str, Any], updates: Mapping[str, Any]) -> Resource:
        """Write ``updates`` to the row read as ``row`` in this transaction; the resource as it is now."""
        values = {**updates, "updated_at": self.clock.now()}
        t = self.tables.resources
        done = conn.execute(sa.update(t).where(self._where(row["kind"], row["id"])).values(**values))
        if done.rowcount != 1:
            raise exc.StorageFailure("resource %s/%s changed under this transaction" % (row["kind"], row["id"]))
        return self.to_resource({**row, **values})

    # -- reading ----------------------------------------------------------------------------------

    def get(self, kind: str, resource_id: str, *, connection: Any = None) -> Resource:
        """The resource as stored now; NotFound if there is none."""
        return self._read(
            connection,
            lambda conn: self.to_resource(self.row(conn, kind, resource_id)),
            "resource %s/%s" % (kind, resource_id),
        )

    def list(
        self, kind: str | None = None, status: ResourceStatus | str | None = None, *, limit: int | None = None
    ) -> builtins.list[Resource]:
        """Resources (of ``kind``, in ``status``), by kind and id."""
        t = self.tables.resources
        stmt = sa.select(t).order_by(t.c.kind, t.c.id)
        if kind is not None:
            stmt = stmt.where(t.c.kind == kind)
        if status is not None:
            stmt = stmt.where(t.c.status == ResourceStatus(status).value)
        if limit is not None:
            stmt = stmt.limit(limit)
        return self._read(
            None, lambda conn: [self.to_resource(row) for row in conn.execute(stmt).mappings()], "resources"
        )

    def counts(self, kind: str | None = None) -> dict[ResourceStatus, int]:
        """How many resources (of ``kind``) are in each status."""
        t = self.tables.resources
        stmt = sa.select(t.c.status, sa.func.count()).group_by(t.c.status)
        if kind is not None:
            stmt = stmt.where(t.c.kind == kind)
        rows = self._read(None, lambda conn: list(conn.execute(stmt)), "resource counts")
        counts = dict.fromkeys(ResourceStatus, 0)
        for status, count in rows:
            counts[ResourceStatus(status)] = int(count)
        return counts

    def operations(self, kind: str, resource_id: str) -> builtins.list[Operation]:
        """The operations started on the resource, oldest first."""
        t = self.tables.operations
        stmt = sa.select(t).where(t.c.kind == kind, t.c.resource_id == resource_id).order_by(t.c.id)
        return self._read(
            None,
            lambda conn: [_operation(row) for row in conn.execute(stmt).mappings()],
            "operations of resource %s/%s" % (kind, resource_id),
        )

    # -- rows -------------------------------------------------------------------------------------

    def decode_facts(self, row: Mapping[str, Any]) -> Any:
        """The row's facts; CorruptLogbook naming the resource if they are not JSON."""
        return _decode(row, "facts", None)

    def to_resource(self, row: Any) -> Resource:
        """The row as a :class:`Resource` (CorruptLogbook naming it if a column cannot be read)."""
        errors = _decode(row, "errors", {})
        if not isinstance(errors, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in errors.values()
        ):
            raise exc.CorruptLogbook("resource %s/%s: errors is not a map of counts" % (row["kind"], row["id"]))
        try:
            status = ResourceStatus(row["status"])
        except ValueError:
            raise exc.CorruptLogbook(
                "resource %s/%s: unknown status %r" % (row["kind"], row["id"], str(row["status"])[:40])
            ) from None
        return Resource(
            kind=row["kind"],
            id=row["id"],
            current=row["current_state"],
            target=row["target_state"],
            rollback=row["rollback_state"],
            generation=int(row["generation"]),
            observed_generation=int(row["observed_generation"]),
            errors=errors,
            last_error=row["last_error"],
            facts=_decode(row, "facts", None),
            status=status,
            reason=row["reason"],
            operation=row["op_rule"],
            job=row["op_job"],
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
        )


def _decode(row: Mapping[str, Any], column: str, default: Any) -> Any:
    text = row[column]
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError as error:
        raise exc.CorruptLogbook(
            "resource %s/%s: %s is not JSON: %s" % (row["kind"], row["id"], column, error)
        ) from None


def _operation(row: Any) -> Operation:
    return Operation(
        seq=int(row["id"]),
        kind=row["kind"],
        resource_id=row["resource_id"],
        rule=row["rule"],
        job=row["job_uuid"],
        flow=row["flow_uuid"],
        current=row["from_state"],
        target=row["target_state"],
        leads_to=row["leads_to"],
        generation=int(row["generation"]),
        started_at=float(row["started_at"]),
        ended_at=float(row["ended_at"]) if row["ended_at"] is not None else None,
        outcome=row["outcome"],
        error=row["error"],
    )
