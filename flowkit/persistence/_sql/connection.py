"""The connection half of the SQL backend: buffered writes, reads, flow locks.

See ``flowkit.persistence._sql.store`` for how a write travels; this
module turns records into rows (through :mod:`flowkit.persistence._sql.schema`)
and rows back into records, and hands batches to the store's group commit.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from flowkit import exceptions as exc
from flowkit.persistence import codec
from flowkit.persistence._integrity import mark_unreadable
from flowkit.persistence._signals import resend
from flowkit.persistence._sql import schema
from flowkit.persistence._sql.locks import SessionFlowLock
from flowkit.persistence._sql.store import SQLStore
from flowkit.persistence.base import Connection, FlowLock
from flowkit.persistence.models import (
    AtomDetail,
    FlowDetail,
    LogBook,
    atom_detail_from_data,
    flow_detail_from_data,
    logbook_from_data,
)
from flowkit.states import EXECUTE, PENDING, Intention, State

__all__ = ["SQLAlchemyConnection"]

_STATES = frozenset(s.value for s in State)
_INTENTIONS = frozenset(i.value for i in Intention)
# Column value -> member (an empty column reads as the default), for get_atom_states:
# a lookup per row instead of calling the enum, which costs more than reading the row.
_STATE_OF: dict[Any, State] = {**{s.value: s for s in State}, None: PENDING, "": PENDING}
_INTENTION_OF: dict[Any, Intention] = {**{i.value: i for i in Intention}, None: EXECUTE, "": EXECUTE}


class SQLAlchemyConnection(Connection):
    """Reads and (buffered) writes through a ``SQLStore``.

    Reads flush this connection's buffer first, so a connection always
    reads its own writes.
    """

    writes_immediately = False

    def __init__(self, backend: SQLStore) -> None:
        self._backend = backend
        self._guard = threading.RLock()
        self._books: dict[str, LogBook] = {}
        self._flows: dict[str, FlowDetail] = {}
        self._atoms: dict[str, AtomDetail] = {}
        # Flow details whose state and meta only are to be written (update_flow_state).
        self._states: dict[str, FlowDetail] = {}
        # What fence() gave: run inside every flush's transaction before any row.
        self._precondition: Callable[[Any], None] | None = None
        # The session lock taken through this connection: while it is held,
        # flushes write through its session (see flowkit.persistence._sql.locks).
        self._session_lock: SessionFlowLock | None = None
        # Set once a flush found that lock gone: this connection writes nothing more.
        self._lost: exc.LockLost | None = None

    @property
    def backend(self) -> SQLStore:
        """The backend this connection belongs to."""
        return self._backend

    # -- schema -------------------------------------------------------------------

    def upgrade(self) -> None:
        """Create or migrate the schema (alembic); idempotent and safe across processes."""
        self._backend.upgrade()

    def validate(self) -> None:
        """Raise StorageFailure unless the database is reachable and its schema current."""
        self._backend.ensure_schema()
        current, head = self._backend.schema_revisions()
        if current != head:
            raise exc.StorageFailure(
                "the logbook schema (tables %s*) in %s is at revision %s, not %s; call upgrade()"
                % (
                    self._backend.table_prefix,
                    self._backend.describe_url(),
                    ", ".join(sorted(current)) or "none",
                    ", ".join(sorted(head)),
                )
            )

    # -- writes ---------------------------------------------------------------------

    def flush(self) -> None:
        """Commit every buffered write in one transaction; StorageFailure if it fails.

        On failure nothing of the batch is written and the buffer is kept, so
        the next flush (e.g. once the database is back) writes it.  The
        precondition given to :meth:`fence` runs first in that transaction;
        what it raises refuses the flush the same way.
        """
        with self._guard:
            if not (self._books or self._flows or self._states or self._atoms):
                return
            if self._backend.read_only:
                # Refused for good: keeping the buffer would only refuse it again at close().
                records = [*self._books.values(), *self._flows.values(), *self._states.values(), *self._atoms.values()]
                shown = ", ".join(_name_record(r) for r in records[:3])
                what = "write %s%s" % (shown, " and %d more" % (len(records) - 3) if len(records) > 3 else "")
                self._clear_buffer()
                self._backend._refuse_write(what)
            if self._lost is not None:
                self._refuse()
            lock = self._session_lock
            if lock is not None and lock.released:
                self._session_lock = lock = None
            self._backend.ensure_schema()
            books, flows, atoms, describe = self._rows()
            try:
                self._backend.commit(books, flows, atoms, describe, precondition=self._precondition, lock=lock)
            except exc.LockLost as lost:
                self._lost = lost
                self._refuse()
            self._clear_buffer()

    def _clear_buffer(self) -> None:
        self._books.clear()
        self._flows.clear()
        self._states.clear()
        self._atoms.clear()

    def _refuse(self) -> None:
        # What was buffered was refused for good: another engine may own the
        # flow detail now, so dropping it is all that is left to do with it.
        assert self._lost is not None
        self._clear_buffer()
        again = exc.LockLost(str(self._lost))
        raise again from self._lost.__cause__

    def fence(self, precondition: Callable[[Any], None]) -> None:
        """Run ``precondition(cursor)`` inside every later flush's transaction.

        See :meth:`~flowkit.persistence.base.Connection.fence`.
        """
        with self._guard:
            self._precondition = precondition

    @property
    def pending(self) -> bool:
        """Whether writes wait in the buffer for :meth:`flush`."""
        return bool(self._books or self._flows or self._states or self._atoms)

    def _rows(
        self,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], Callable[[], str]]:
        parents = self._backend._atom_parent
        flow_parents = self._backend._flow_parent
        states = self._states
        book_rows: list[dict[str, Any]] = []
        flow_rows: list[dict[str, Any]] = []
        atom_rows: list[dict[str, Any]] = []
        written: set[str] = set()
        current: Any = None
        try:
            for current in self._books.values():
                book_rows.append(schema.logbook_row(current))
            for fd in self._flows.values():
                # A later update_flow_state of another record of this flow detail has its newer state.
                current = states.get(fd.uuid, fd)
                book_uuid, position = flow_parents[fd.uuid]
                flow_rows.append(schema.flow_row(current, book_uuid, position))
                for index, current in enumerate(fd):
                    uuid = current.uuid
                    written.add(uuid)
                    atom_rows.append(schema.atom_row(current, fd.uuid, index))
                    parents.setdefault(uuid, (fd.uuid, index))
            for uuid, current in states.items():
                if uuid not in self._flows:
                    flow_rows.append(schema.flow_row(current, *flow_parents[uuid]))
            for current in self._atoms.values():
                if current.uuid not in written:
                    atom_rows.append(schema.atom_row(current, *parents[current.uuid]))
        except (TypeError, ValueError, RecursionError) as error:
            raise exc.StorageFailure("could not encode %s as JSON: %s" % (_name_record(current), error)) from error
        atoms = list(self._atoms.values())
        flows = [*self._flows.values(), *(fd for uuid, fd in states.items() if uuid not in self._flows)]

        def describe() -> str:
            # Built only when a write fails: names what was being written, and where.
            parts = []
            if book_rows:
                parts.append("logbook %s" % ", ".join("%r (%s)" % (r["name"], r["uuid"]) for r in book_rows[:3]))
            for fd in flows[:3]:
                parts.append(
                    "flow detail %r (%s) state %s with %d atom details" % (fd.name, fd.uuid, fd.state, len(fd))
                )
            if atoms:
                shown = ", ".join("%r (%s) -> %s" % (ad.name, ad.uuid, ad.state) for ad in atoms[:4])
                more = " and %d more" % (len(atoms) - 4) if len(atoms) > 4 else ""
                owners = sorted({parents.get(ad.uuid, ("?", 0))[0] for ad in atoms})
                parts.append("atom details %s%s of flow detail %s" % (shown, more, ", ".join(owners)))
            return "; ".join(parts) or "nothing"

        return book_rows, flow_rows, atom_rows, describe

    def _known_flow(self, fd_uuid: str) -> tuple[str, int] | None:
        found = self._backend._flow_parent.get(fd_uuid)
        if found is not None:
            return found
        t = self._backend.tables

        def lookup(conn: sa.Connection) -> tuple[str, int] | None:
            row = conn.execute(
                sa.select(t.flows.c.parent_uuid, t.flows.c.position).where(t.flows.c.uuid == fd_uuid)
            ).first()
            return None if row is None else (row[0], row[1])

        self._backend.ensure_schema()
        found = self._backend.read(lookup, "flow detail %s" % fd_uuid)
        if found is not None:
            self._backend._flow_parent[fd_uuid] = found
        return found

    def save_logbook(self, book: LogBook) -> LogBook:
        """Store ``book``, its flow details and their atom details, durably, now."""
        with self._guard:
            book.updated_at = _utcnow()
            self._books[book.uuid] = book
            parents = self._backend._flow_parent
            for index, fd in enumerate(book):
                parents.setdefault(fd.uuid, (book.uuid, index))
                self._flows[fd.uuid] = fd
                self._states.pop(fd.uuid, None)
            self.flush()
        return book

    def create_logbook(self, book: LogBook) -> bool:
        """Insert ``book`` with its flow and atom details in one transaction, unless its uuids are taken.

        Plain inserts, not the upserts of :meth:`save_logbook`: of two
        transactions inserting the same uuid, the database lets one commit and
        fails the other on the primary key (SQLite takes its write lock first,
        so the second one finds the row), which is then answered with False.
        """
        self.flush()
        self._backend.ensure_schema()
        t = self._backend.tables
        book.updated_at = _utcnow()
        try:
            books, flows, atoms = schema.logbook_rows(book)
        except (TypeError, ValueError, RecursionError) as error:
            raise exc.StorageFailure("could not encode %s as JSON: %s" % (_name_record(book), error)) from error
        if self._backend.dialect in ("mysql", "mariadb"):
            self._backend._check_row_sizes(books, flows, atoms)
        flow_uuids = [fd.uuid for fd in book]

        def taken(conn: sa.Connection) -> bool:
            if conn.execute(sa.select(t.logbooks.c.uuid).where(t.logbooks.c.uuid == book.uuid)).first() is not None:
                return True
            if not flow_uuids:
                return False
            return conn.execute(sa.select(t.flows.c.uuid).where(t.flows.c.uuid.in_(flow_uuids))).first() is not None

        def insert(conn: sa.Connection) -> bool:
            if taken(conn):
                return False
            for table, rows in ((t.logbooks, books), (t.flows, flows), (t.atoms, atoms)):
                if rows:
                    conn.execute(sa.insert(table), rows)
            return True

        what = "create %s" % (_name_record(book),)
        try:
            created = self._backend.write_now(insert, what)
        except exc.StorageFailure as failure:
            # Another transaction inserted the same uuid between our check and
            # our insert, and committed first.
            if isinstance(failure.__cause__, sa.exc.IntegrityError) and self._backend.read(taken, what):
                return False
            raise
        if created:
            for index, fd in enumerate(book):
                self._backend._flow_parent[fd.uuid] = (book.uuid, index)
                for position, ad in enumerate(fd):
                    self._backend._atom_parent[ad.uuid] = (fd.uuid, position)
        return created

    def _check_saved(self, flow_detail: FlowDetail) -> None:
        """NotFound unless ``flow_detail`` is buffered here or stored; hold the guard."""
        uuid = flow_detail.uuid
        if uuid not in self._flows and uuid not in self._states and self._known_flow(uuid) is None:
            raise exc.NotFound("flow detail %r (%s) was never saved in a logbook" % (flow_detail.name, uuid))

    def update_flow_details(self, flow_detail: FlowDetail) -> FlowDetail:
        """Buffer the flow detail (state, meta) and all its atom details until :meth:`flush`."""
        with self._guard:
            self._check_saved(flow_detail)
            self._flows[flow_detail.uuid] = flow_detail
            self._states.pop(flow_detail.uuid, None)
        return flow_detail

    def update_flow_state(self, flow_detail: FlowDetail) -> FlowDetail:
        """Buffer the flow detail's state and meta (not its atom details) until :meth:`flush`."""
        with self._guard:
            uuid = flow_detail.uuid
            if self._flows.get(uuid) is flow_detail:
                return flow_detail  # its whole write is buffered already, and reads this record at flush
            self._check_saved(flow_detail)
            self._states[uuid] = flow_detail
        return flow_detail

    def update_atom_details(self, atom_detail: AtomDetail) -> AtomDetail:
        """Buffer one atom detail until :meth:`flush` (the engine's hot path: no I/O here)."""
        uuid = atom_detail.uuid
        if uuid not in self._backend._atom_parent and not self._pending_atom(atom_detail):
            t = self._backend.tables

            def lookup(conn: sa.Connection) -> tuple[str, int] | None:
                row = conn.execute(
                    sa.select(t.atoms.c.parent_uuid, t.atoms.c.position).where(t.atoms.c.uuid == uuid)
                ).first()
                return None if row is None else (row[0], row[1])

            self._backend.ensure_schema()
            found = self._backend.read(lookup, "atom detail %s" % uuid)
            if found is None:
                raise exc.NotFound("atom detail %r (%s) belongs to no saved flow detail" % (atom_detail.name, uuid))
            self._backend._atom_parent[uuid] = found
        if self._backend.checks_value_size:
            self._check_value_size(atom_detail)
        with self._guard:
            self._atoms[uuid] = atom_detail
        return atom_detail

    def _check_value_size(self, atom_detail: AtomDetail) -> None:
        # Before the atom's outcome is accepted, so that a result the server
        # cannot take fails the atom (and the flow reverts) instead of every
        # later flush.  Only backends with a limit a result can reach pay the
        # extra encoding (MySQL/MariaDB: max_allowed_packet).
        limit = self._backend.max_value_bytes
        for field in ("results", "revert_results"):
            value = getattr(atom_detail, field)
            if value is None or isinstance(value, (bool, int, float)):
                continue
            try:
                text = json.dumps(value)
            except (TypeError, ValueError, RecursionError):
                continue  # reported as not JSON data where the row is built
            if len(text) * 2 <= limit:
                continue
            size = self._backend.sent_size(text)
            if size > limit:
                owner = self._backend._atom_parent.get(atom_detail.uuid, ("?", 0))[0]
                raise exc.ResultNotStorable(
                    "atom %r (%s) of flow detail %s returned a result of %d bytes as stored (%d as JSON), more "
                    "than %s can hold in one value (%d bytes); return a smaller result, e.g. store the data "
                    "elsewhere and return where it is"
                    % (atom_detail.name, atom_detail.uuid, owner, size, len(text), self._backend.describe_url(), limit)
                )

    def _pending_atom(self, atom_detail: AtomDetail) -> bool:
        # An atom added to a flow detail that is buffered but not flushed yet.
        with self._guard:
            for fd in self._flows.values():
                if fd.find(atom_detail.uuid) is atom_detail:
                    return True
        return False

    def destroy_logbook(self, book_uuid: str) -> None:
        """Delete logbook ``book_uuid`` and everything in it; NotFound if absent."""
        self.flush()
        self._backend.ensure_schema()
        t = self._backend.tables

        def delete(conn: sa.Connection) -> list[str]:
            if conn.execute(sa.select(t.logbooks.c.uuid).where(t.logbooks.c.uuid == book_uuid)).first() is None:
                raise exc.NotFound("no logbook with uuid %r" % (book_uuid,))
            flows = [r[0] for r in conn.execute(sa.select(t.flows.c.uuid).where(t.flows.c.parent_uuid == book_uuid))]
            # Children first, explicitly: SQLite enforces ON DELETE CASCADE only
            # with its foreign_keys pragma, which an engine passed in may lack.
            if flows:
                conn.execute(sa.delete(t.signals).where(t.signals.c.flow_uuid.in_(flows)))
                conn.execute(sa.delete(t.atoms).where(t.atoms.c.parent_uuid.in_(flows)))
                conn.execute(sa.delete(t.flows).where(t.flows.c.parent_uuid == book_uuid))
            conn.execute(sa.delete(t.logbooks).where(t.logbooks.c.uuid == book_uuid))
            return flows

        self._backend.forget(self._backend.write_now(delete, "delete logbook %s" % book_uuid))

    def clear_all(self) -> None:
        """Delete every logbook (and drop this connection's unflushed writes)."""
        with self._guard:
            self._clear_buffer()
        self._backend.ensure_schema()
        t = self._backend.tables

        def delete(conn: sa.Connection) -> None:
            conn.execute(sa.delete(t.signals))
            conn.execute(sa.delete(t.atoms))
            conn.execute(sa.delete(t.flows))
            conn.execute(sa.delete(t.logbooks))

        self._backend.write_now(delete, "delete every logbook")
        self._backend.forget(None)

    # -- signals -----------------------------------------------------------------------
    #
    # Written at once, each in its own transaction on the store's writer, never
    # through this connection's buffer: a signal comes from outside the run,
    # so it neither waits for the engine's next flush nor makes its writes
    # durable early.  The transactions that store signals hold one
    # database-wide lock (SQLite: its write lock), so they commit in the order
    # of their ids and a poller of signals_after() never sees a larger id
    # before a smaller one.

    def send_signal(
        self,
        flow_uuid: str,
        name: str,
        value: Any,
        idempotency_key: str | None = None,
        sent_at: float | None = None,
    ) -> bool:
        """Store signal ``name`` of flow detail ``flow_uuid`` in a transaction of its own (see the base class)."""
        backend = self._backend
        what = "signal %r of flow detail %s" % (name, flow_uuid)
        try:
            text = None if value is None else codec.encode(value)
        except (TypeError, ValueError, RecursionError) as error:
            raise ValueError("the value of %s is not JSON data: %s" % (what, error)) from error
        row = {
            "flow_uuid": flow_uuid,
            "name": name,
            "value": text,
            "idempotency_key": idempotency_key,
            "sent_at": time.time() if sent_at is None else float(sent_at),
        }
        backend.ensure_schema()
        if backend.dialect in ("mysql", "mariadb"):
            backend._check_row_sizes([row])
        t = backend.tables
        stored_sql = sa.select(t.signals.c.idempotency_key, t.signals.c.sent_at).where(
            t.signals.c.flow_uuid == flow_uuid, t.signals.c.name == name
        )

        def insert(conn: sa.Connection) -> tuple[Any, ...] | bool:
            stored = conn.execute(stored_sql).first()
            if stored is not None:
                return tuple(stored)
            if conn.execute(sa.select(t.flows.c.uuid).where(t.flows.c.uuid == flow_uuid)).first() is None:
                raise exc.NotFound(
                    "no flow detail with uuid %r in %s to send signal %r to" % (flow_uuid, backend.describe_url(), name)
                )
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(t.signals).values(**row))
            except sa.exc.IntegrityError:
                # Another sender stored it first (the unique constraint) or the
                # flow detail went (the foreign key): read which, once that
                # transaction is over and its rows are visible.
                return False
            return True

        outcome = backend.write_now(insert, "store %s" % (what,), serialize="flowkit-signals:" + backend.table_prefix)
        if outcome is True:
            return True
        if outcome is False:
            found = backend.read(lambda conn: conn.execute(stored_sql).first(), what)
            if found is None:
                raise exc.NotFound(
                    "no flow detail with uuid %r in %s to send signal %r to (it was deleted)"
                    % (flow_uuid, backend.describe_url(), name)
                )
            outcome = tuple(found)
        stored_key, stored_at = outcome
        return resend(flow_uuid, name, idempotency_key, stored_key, stored_at)

    def get_signals(self, flow_uuid: str, names: Iterable[str] | None = None) -> dict[str, Any]:
        """``{name: value}`` of flow detail ``flow_uuid``'s signals (only ``names``, if given), in one query."""
        backend = self._backend
        backend.ensure_schema()
        t = backend.tables
        query = sa.select(t.signals.c.name, t.signals.c.value).where(t.signals.c.flow_uuid == flow_uuid)
        if names is not None:
            wanted = list(names)
            if not wanted:
                return {}
            query = query.where(t.signals.c.name.in_(wanted))
        rows = backend.read(lambda conn: conn.execute(query).all(), "the signals of flow detail %s" % (flow_uuid,))
        found: dict[str, Any] = {}
        for name, text in rows:
            try:
                found[name] = None if text is None else json.loads(text)
            except (TypeError, ValueError, RecursionError) as error:
                raise exc.CorruptLogbook(
                    "signal %r: invalid JSON: %s" % (name, error),
                    table=t.signals.name,
                    uuid=flow_uuid,
                    column="value",
                    flow_detail=flow_uuid,
                ) from error
        return found

    def signals_after(self, seq: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        """``(seq, flow detail uuid, name)`` of the signals numbered above ``seq``, in order, at most ``limit``."""
        backend = self._backend
        backend.ensure_schema()
        s = backend.tables.signals
        query = sa.select(s.c.id, s.c.flow_uuid, s.c.name).where(s.c.id > seq).order_by(s.c.id).limit(limit)
        rows = backend.read(lambda conn: conn.execute(query).all(), "the signals after %d" % (seq,))
        return [(int(row[0]), row[1], row[2]) for row in rows]

    # -- reads -------------------------------------------------------------------------

    def _prepare_read(self) -> None:
        if self._lost is not None:
            # Refused for good (see _refuse); reads show what the database holds.
            with self._guard:
                self._clear_buffer()
        else:
            self.flush()
        self._backend.ensure_schema()

    def _books_where(self, conn: sa.Connection, where: Any, lazy: bool) -> list[LogBook]:
        t = self._backend.tables
        books = [
            self._book_from_row(row)
            for row in conn.execute(sa.select(t.logbooks).where(where).order_by(t.logbooks.c.created_at)).mappings()
        ]
        if lazy or not books:
            return books
        by_uuid = {b.uuid: b for b in books}
        flow_where = t.flows.c.parent_uuid.in_(list(by_uuid)) if len(by_uuid) < 500 else sa.true()
        for fd, book_uuid in self._flows_where(conn, flow_where, lazy):
            book = by_uuid.get(book_uuid)
            if book is not None:
                book.add(fd)
        return books

    def _flows_where(
        self, conn: sa.Connection, where: Any, lazy: bool, salvage: bool = False
    ) -> list[tuple[FlowDetail, str]]:
        t = self._backend.tables
        rows = conn.execute(
            sa.select(t.flows).where(where).order_by(t.flows.c.parent_uuid, t.flows.c.position)
        ).mappings()
        found = [(self._flow_from_row(row), row["parent_uuid"]) for row in rows]
        if lazy or not found:
            return found
        atom_rows = conn.execute(
            sa.select(t.atoms)
            .join(t.flows, t.atoms.c.parent_uuid == t.flows.c.uuid)
            .where(where)
            .order_by(t.atoms.c.parent_uuid, t.atoms.c.position)
        ).mappings()
        self._attach_atoms([fd for fd, _ in found], atom_rows, salvage)
        return found

    # Decoding a row names where a bad value is: table, uuid, column and, for
    # an atom detail, the atom and its flow detail (CorruptLogbook).

    def _book_from_row(self, row: Mapping[Any, Any]) -> LogBook:
        try:
            return logbook_from_data(schema.row_data(row, schema.LOGBOOK_JSON))
        except exc.CorruptLogbook as bad:
            raise bad.located(self._backend.tables.logbooks.name) from bad

    def _flow_from_row(self, row: Mapping[Any, Any]) -> FlowDetail:
        try:
            fd = flow_detail_from_data(schema.row_data(row, schema.FLOW_JSON))
        except exc.CorruptLogbook as bad:
            raise bad.located(self._backend.tables.flows.name) from bad
        self._backend._flow_parent[fd.uuid] = (row["parent_uuid"], row["position"])
        return fd

    def _atom_from_row(self, row: Mapping[Any, Any]) -> AtomDetail:
        try:
            return atom_detail_from_data(schema.row_data(row, schema.ATOM_JSON))
        except exc.CorruptLogbook as bad:
            name = row.get("name")
            raise bad.located(
                self._backend.tables.atoms.name,
                atom=name if isinstance(name, str) else None,
                flow_detail=row.get("parent_uuid"),
            ) from bad

    def _attach_atoms(
        self, flows: list[FlowDetail], atom_rows: Iterable[Mapping[Any, Any]], salvage: bool = False
    ) -> None:
        by_uuid = {fd.uuid: fd for fd in flows}
        atom_parents = self._backend._atom_parent
        for row in atom_rows:
            owner = by_uuid.get(row["parent_uuid"])
            if owner is not None:
                try:
                    owner.add(self._atom_from_row(row))
                except exc.CorruptLogbook as bad:
                    if not salvage:
                        raise
                    mark_unreadable(owner, _placeholder(row), bad)
                atom_parents[row["uuid"]] = (row["parent_uuid"], row["position"])

    def _book_tree(self, conn: sa.Connection, book_uuid: str) -> LogBook | None:
        rows = self._backend.tree_rows(conn, book_uuid)
        if not rows["books"]:
            return None
        book = self._book_from_row(rows["books"][0])
        flows = [self._flow_from_row(row) for row in rows["flows"]]
        self._attach_atoms(flows, rows["atoms"])
        for fd in flows:
            book.add(fd)
        return book

    def get_logbook(self, book_uuid: str, lazy: bool = False) -> LogBook:
        """The logbook ``book_uuid`` (with its flow and atom details unless ``lazy``)."""
        self._prepare_read()
        t = self._backend.tables
        book: LogBook | None
        if lazy:
            found = self._backend.read(
                lambda conn: self._books_where(conn, t.logbooks.c.uuid == book_uuid, True), "logbook %s" % book_uuid
            )
            book = found[0] if found else None
        else:
            book = self._backend.read(lambda conn: self._book_tree(conn, book_uuid), "logbook %s" % book_uuid)
        if book is None:
            raise exc.NotFound("no logbook with uuid %r in %s" % (book_uuid, self._backend.describe_url()))
        return book

    def get_logbooks(self, lazy: bool = False) -> Iterator[LogBook]:
        """Every logbook, oldest first."""
        self._prepare_read()
        yield from self._backend.read(lambda conn: self._books_where(conn, sa.true(), lazy), "every logbook")

    def get_flows_for_book(self, book_uuid: str, lazy: bool = False) -> Iterator[FlowDetail]:
        """The flow details of logbook ``book_uuid``; NotFound if there is no such logbook."""
        self._prepare_read()
        t = self._backend.tables

        def read(conn: sa.Connection) -> list[tuple[FlowDetail, str]] | None:
            if conn.execute(sa.select(t.logbooks.c.uuid).where(t.logbooks.c.uuid == book_uuid)).first() is None:
                return None
            return self._flows_where(conn, t.flows.c.parent_uuid == book_uuid, lazy)

        found = self._backend.read(read, "the flow details of logbook %s" % book_uuid)
        if found is None:
            raise exc.NotFound("no logbook with uuid %r in %s" % (book_uuid, self._backend.describe_url()))
        for fd, _ in found:
            yield fd

    def get_flow_details(self, fd_uuid: str, lazy: bool = False, *, salvage: bool = False) -> FlowDetail:
        """The flow detail ``fd_uuid`` (with its atom details unless ``lazy``).

        A row that cannot be decoded raises
        :class:`~flowkit.exceptions.CorruptLogbook` naming the table, uuid,
        column and atom.  With ``salvage``, an undecodable *atom* row comes
        back instead as a fresh PENDING atom detail with the row's uuid and
        name, and the problem is recorded in the flow detail's
        ``meta["unreadable"]``: ``load_from_detail`` refuses to resume it
        unless ``repair=True``, which re-runs that atom and overwrites the row.
        """
        self._prepare_read()
        t = self._backend.tables
        found = self._backend.read(
            lambda conn: self._flows_where(conn, t.flows.c.uuid == fd_uuid, lazy, salvage), "flow detail %s" % fd_uuid
        )
        if not found:
            raise exc.NotFound("no flow detail with uuid %r in %s" % (fd_uuid, self._backend.describe_url()))
        return found[0][0]

    def has_flow_detail(self, fd_uuid: str) -> bool:
        """Whether flow detail ``fd_uuid`` is stored; no round trip for one this process read or wrote."""
        return self._known_flow(fd_uuid) is not None

    def get_atom_details(self, ad_uuid: str) -> AtomDetail:
        """The atom detail ``ad_uuid``."""
        self._prepare_read()
        t = self._backend.tables

        def read(conn: sa.Connection) -> Mapping[Any, Any] | None:
            return conn.execute(sa.select(t.atoms).where(t.atoms.c.uuid == ad_uuid)).mappings().first()

        row = self._backend.read(read, "atom detail %s" % ad_uuid)
        if row is None:
            raise exc.NotFound("no atom detail with uuid %r in %s" % (ad_uuid, self._backend.describe_url()))
        return self._atom_from_row(row)

    def get_atom_states(self, fd_uuid: str) -> dict[str, tuple[str, Any, Any]]:
        """``{atom name: (atom detail uuid, state, intention)}`` of flow detail ``fd_uuid``.

        Reads four columns of each atom row: an engine asks this as it starts
        a run, and decoding the whole flow detail (results, meta, failures)
        cost more than the rest of a fresh flow's run start.
        """
        self._prepare_read()
        t = self._backend.tables
        a = t.atoms.c

        def read(conn: sa.Connection) -> list[Any] | None:
            if conn.execute(sa.select(t.flows.c.uuid).where(t.flows.c.uuid == fd_uuid)).first() is None:
                return None
            return list(conn.execute(sa.select(a.name, a.uuid, a.state, a.intention).where(a.parent_uuid == fd_uuid)))

        rows = self._backend.read(read, "the atom states of flow detail %s" % fd_uuid)
        if rows is None:
            raise exc.NotFound("no flow detail with uuid %r in %s" % (fd_uuid, self._backend.describe_url()))
        found: dict[str, tuple[str, Any, Any]] = {}
        state_of = _STATE_OF.get
        intention_of = _INTENTION_OF.get
        for name, uuid, state, intention in rows:
            known_state = state_of(state)
            known_intention = intention_of(intention)
            if known_state is None or known_intention is None:
                column, value = ("state", state) if known_state is None else ("intention", intention)
                raise exc.CorruptLogbook(
                    "unknown %s %r" % (column, value),
                    table=t.atoms.name,
                    uuid=uuid,
                    column=column,
                    atom=name,
                    flow_detail=fd_uuid,
                )
            found[name] = (uuid, known_state, known_intention)
        return found

    # -- locks and lifetime ------------------------------------------------------------

    def lock_flow(self, flow_detail: FlowDetail) -> FlowLock:
        """One engine per flow detail, across processes; released if the holder dies."""
        what = "flow detail %r (%s)" % (flow_detail.name, flow_detail.uuid)
        if self._lost is not None:
            # Its in-memory records may be behind what the new owner wrote.
            raise exc.LockLost(
                "%s: this connection lost its lock on a flow detail before (%s); resume with a new engine"
                % (what, self._lost)
            )
        lock = self._backend.lock_flow(flow_detail, what)
        if lock is None:
            return super().lock_flow(flow_detail)
        if isinstance(lock, SessionFlowLock):
            with self._guard:
                # Whatever was buffered before the lock was taken is written under it.
                self._session_lock = lock
        return lock

    def close(self) -> None:
        """Flush what is buffered; the backend keeps the database connections."""
        self.flush()


def _name_record(record: Any) -> str:
    if isinstance(record, AtomDetail):
        return "atom detail %r (%s)" % (record.name, record.uuid)
    if isinstance(record, FlowDetail):
        return "flow detail %r (%s)" % (record.name, record.uuid)
    if isinstance(record, LogBook):
        return "logbook %r (%s)" % (record.name, record.uuid)
    return "a record"


def _placeholder(row: Mapping[Any, Any]) -> AtomDetail:
    """A fresh atom detail standing for an undecodable row: same uuid (so a write replaces the row) and name."""
    name = row.get("name")
    atom_type = row.get("atom_type")
    detail = AtomDetail(
        name=name if isinstance(name, str) else str(row["uuid"]),
        uuid=str(row["uuid"]),
        atom_type=atom_type if atom_type in ("task", "retry") else "task",
    )
    if detail.atom_type == "retry":
        detail.results = []
    return detail


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
