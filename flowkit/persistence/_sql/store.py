"""The SQL store: engine, writer connection, group commit, compiled statements.

:class:`SQLStore` owns a SQLAlchemy engine and one *writer* connection; the
logbook backend (:class:`~flowkit.persistence.backends.impl_sqlalchemy.SQLAlchemyBackend`
is a :class:`SQLStore`) and the SQL job board, which shares its database,
both write through it.

How a write travels (the engine's hot path):

1. ``update_atom_details(ad)`` on a connection
   (:mod:`~flowkit.persistence._sql.connection`) only remembers ``ad`` (keyed
   by uuid, so two updates between durability points cost one row).
2. ``flush()`` turns everything remembered into rows
   (:mod:`~flowkit.persistence._sql.schema`) and hands them to
   :meth:`SQLStore.commit`, which upserts them in ONE transaction on the
   writer connection (group commit).  If several connections flush at once,
   whichever holds the writer commits every waiting batch in the same
   transaction and the others just wait for it.
3. A failed flush raises :class:`~flowkit.exceptions.StorageFailure`, rolls
   the transaction back whole (nothing half-written) and keeps the buffer,
   so a later flush writes it once the database is back.

A job board's post writes a whole logbook inside its own transaction through
:meth:`SQLStore.write_logbook`, which builds and upserts the same rows.

SQLite specifics: WAL journal, ``synchronous=NORMAL`` (``durability="full"``:
``FULL``, i.e. an fsync per commit), a busy timeout, every write in
``BEGIN IMMEDIATE`` (a deferred transaction that later wants to write fails
at once with "database is locked" instead of waiting), and one writer
connection per backend guarded by a lock.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy import event

from flowkit import exceptions as exc
from flowkit._imports import missing_extra
from flowkit.persistence._sql import schema
from flowkit.persistence._sql._libpq import PreparedStatements
from flowkit.persistence._sql.locks import FileFlowLock, SessionFlowLock, database_lock, upgrade_lock
from flowkit.persistence.base import DEFAULT_MAX_RESULT_BYTES, Backend, FlowLock, check_max_result_bytes
from flowkit.persistence.models import FlowDetail, LogBook

__all__ = ["SQLStore", "DURABILITIES", "MIGRATIONS", "normalize_url"]

#: ``durability=`` values: "normal" survives a process crash, "full" also a power loss.
DURABILITIES = ("normal", "full")

#: The alembic script location of the logbook and job schema.
MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")

# Plain schemes map to maintained drivers (psycopg 3, PyMySQL).
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

_T = TypeVar("_T")

# The kinds of rows a batch holds, in the order they are written (parents first).
_KINDS = ("books", "flows", "atoms")

# A parameter of a statement compiled for psycopg: %(name)s.
_NAMED_PARAMETER = re.compile(r"%\((\w+)\)s")

# A PostgreSQL batch up to this many characters commits inside its pipeline
# (one round trip); a larger one after it (see _commit_raw).  Well under the
# smallest send buffer a TCP socket starts with (16 KiB), so the kernel takes
# such a batch whole and nothing is left unsent.
_PIPELINE_COMMIT_CHARS = 8 * 1024

# A PostgreSQL batch of up to this many rows of one kind (and no precondition)
# is written as one multi-row upsert in autocommit: a single statement is its
# own transaction, so the server reads one message and answers once (see
# _commit_raw).  A step of a linear flow writes two atom rows.
_ONE_STATEMENT_ROWS = 64
# ... and up to this many characters of text: one protocol message holds at
# most 1 GB, a limit each value is checked against, not their sum.
_ONE_STATEMENT_CHARS = 16 << 20

# Lock sessions (PostgreSQL, MySQL) kept open once released, for the next runs to take.
_IDLE_LOCK_SESSIONS = 4

# Room left in a MySQL statement for its SQL text and the other columns of the row.
_STATEMENT_HEADROOM = 64 * 1024

# What PostgreSQL takes in one field or one protocol message (1 GB), less headroom.
_POSTGRES_MAX_VALUE = (1 << 30) - _STATEMENT_HEADROOM
#: A statement compiled for the backend's driver: its SQL and, for positional paramstyles, its parameter order.
_Compiled = tuple[str, tuple[str, ...] | None]


def normalize_url(url: str | sa.URL) -> sa.URL:
    """``url`` with the driver flowkit uses when none is named (and utf8mb4 on MySQL)."""
    parsed = sa.make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        # The server default (often latin1 or 3-byte utf8) cannot hold every str a task returns.
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def _is_memory_sqlite(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


class _Upsert(NamedTuple):
    """One multi-row upsert ready to send (see SQLStore._one_statement)."""

    sql: str  # with psycopg's %s placeholders
    name: bytes  # what it is prepared as on a session
    prepared_sql: bytes  # with libpq's $n placeholders
    values: list[Any]


# (sql, name, prepared_sql, a row's parameters in order): the statement of _Upsert for some number of rows.
_MultiRow = tuple[str, bytes, bytes, Callable[[dict[str, Any]], tuple[Any, ...]]]


class _Batch:
    """Rows one connection wants committed, and the outcome once they are."""

    __slots__ = ("books", "flows", "atoms", "describe", "precondition", "refused", "done", "error")

    def __init__(
        self,
        books: list[dict[str, Any]],
        flows: list[dict[str, Any]],
        atoms: list[dict[str, Any]],
        describe: Callable[[], str],
        precondition: Callable[[Any], None] | None = None,
    ) -> None:
        self.books = books
        self.flows = flows
        self.atoms = atoms
        self.describe = describe
        self.precondition = precondition
        # What the precondition raised: this batch is left out of the group's transaction.
        self.refused: BaseException | None = None
        self.done = False
        self.error: BaseException | None = None


def _switch_to_wal(cursor: Any, timeout: float) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another process holds the lock it needs.

    Switching a file to WAL needs an exclusive lock, and SQLite answers
    "database is locked" at once, without its busy handler, when another
    connection is switching it or writing; so wait here, up to ``timeout``.
    Once the file is in WAL mode the pragma is a no-op that takes no lock.
    """
    import sqlite3

    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


class SQLStore(Backend):
    """A SQL database as flowkit writes it: engine, writer, group commit, schema, flow locks.

    Everything the logbook backend and the SQL job board share; the options
    are those of :class:`~flowkit.persistence.backends.impl_sqlalchemy.SQLAlchemyBackend`,
    which adds the connections.  ``read_only`` refuses every write (see there).
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | sa.Engine,
        *,
        durability: str = "normal",
        table_prefix: str = schema.DEFAULT_TABLE_PREFIX,
        create_schema: bool = True,
        busy_timeout: float = 60.0,
        max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES,
        read_only: bool = False,
    ) -> None:
        self.max_result_bytes = check_max_result_bytes(max_result_bytes)
        if durability not in DURABILITIES:
            raise ValueError("durability must be one of %s, got %r" % (", ".join(map(repr, DURABILITIES)), durability))
        self.durability = durability
        self.table_prefix = schema.check_table_prefix(table_prefix)
        self.tables = schema.make_tables(table_prefix)
        self._create_schema = create_schema
        #: True when this backend only reads (see the class docstring).
        self.read_only = bool(read_only)
        self._busy_timeout = float(busy_timeout)
        if isinstance(url_or_engine, sa.Engine):
            self.engine = url_or_engine
            self._owns_engine = False
            self.url = url_or_engine.url
            if self.engine.dialect.name == "sqlite":
                self._install_sqlite_events(self.engine)
                # Pooled connections opened before the events lack the pragmas.
                self.engine.dispose(close=False)
        else:
            self.url = normalize_url(url_or_engine)
            try:
                self.engine = self._create_engine(self.url)
            except ImportError as error:
                raise missing_extra(error, "a %s logbook" % (self.url.get_backend_name(),)) from error
            self._owns_engine = True
        self.dialect = self.engine.dialect.name
        #: Whether a commit sends BEGIN and COMMIT itself (psycopg: see _commit_raw).
        self._commit_by_statements = self.dialect == "postgresql" and self.engine.dialect.driver == "psycopg"
        self.memory = _is_memory_sqlite(self.url)
        self._lock_engine: sa.Engine | None = None
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Batch] = []
        self._writer: sa.Connection | None = None
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._closed = False
        self._max_value: int | None = None
        self._max_packet: int | None = None
        # The SQLite file the writer has open: (st_dev, st_ino) of it and of its -wal.
        self._file_id: tuple[int, int] | None = None
        self._wal_id: tuple[int, int] | None = None
        self._file_path = ""
        self._file_broken: exc.StorageFailure | None = None
        #: Write transactions committed so far (group commit makes this smaller than the flushes).
        self.commits = 0
        # Where each stored record hangs (uuid -> (parent uuid, position)), so an
        # atom update needs no read before its write.
        self._flow_parent: dict[str, tuple[str, int]] = {}
        self._atom_parent: dict[str, tuple[str, int]] = {}
        self._upserts = {
            name: self._make_upsert(table, keep)
            for name, table, keep in (
                ("books", self.tables.logbooks, ("uuid", "created_at")),
                ("flows", self.tables.flows, ("uuid", "parent_uuid", "position")),
                ("atoms", self.tables.atoms, ("uuid", "parent_uuid", "position")),
            )
        }
        self._hot_sql: dict[str, _Compiled] | None = None
        if all(stmt is not None for stmt in self._upserts.values()):
            self._hot_sql = {kind: self.driver_sql(stmt) for kind, stmt in self._upserts.items()}
        # A row's parameters in the order of a positional driver's statement, taken in C.
        self._row_params = {
            kind: operator.itemgetter(*order)
            for kind, (_sql, order) in (self._hot_sql or {}).items()
            if order is not None and len(order) > 1
        }
        # (kind, rows) -> the multi-row upsert of that many rows (see _multi_row_sql).
        self._multi_row: dict[tuple[str, int], _MultiRow] = {}
        # Those upserts as prepared on each psycopg session.
        self._prepared = PreparedStatements()
        self._tree_sql = {kind: self.driver_sql(stmt) for kind, stmt in _tree_selects(self.tables).items()}
        dbapi = self.engine.dialect.loaded_dbapi
        # What a dead server or a failed statement raises on the driver's own cursor.
        self._db_errors: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError, dbapi.Error, OSError)

    def driver_sql(self, stmt: Any) -> _Compiled:
        """``(sql, order)``: ``stmt`` compiled for this backend's driver, to run on its own cursor.

        ``order`` names the parameters in the order a positional paramstyle
        takes them; None means the driver takes them by name.  For hot paths
        that skip SQLAlchemy's per-execution work.
        """
        compiled = stmt.compile(dialect=self.engine.dialect)
        return str(compiled), tuple(compiled.positiontup) if compiled.positional else None

    # -- engine set-up --------------------------------------------------------------

    def _create_engine(self, url: sa.URL) -> sa.Engine:
        backend = url.get_backend_name()
        if backend == "sqlite":
            args: dict[str, Any] = {"check_same_thread": False, "timeout": self._busy_timeout}
            if self.read_only and not _is_memory_sqlite(url):
                engine = sa.create_engine(url, creator=_read_only_sqlite(str(url.database), args))
            elif _is_memory_sqlite(url):
                # One shared connection: each new connection would be a new, empty database.
                engine = sa.create_engine(url, connect_args=args, poolclass=sa.pool.StaticPool)
            else:
                engine = sa.create_engine(url, connect_args=args)
            self._install_sqlite_events(engine)
            return engine
        if backend in ("postgresql", "mysql", "mariadb"):
            # pre_ping: after an outage, pooled connections are dead; find out before using one.
            connect_args: dict[str, Any] = {"connect_timeout": 10}
            if self.read_only:
                # The server refuses writes too, whatever a caller does with the engine.
                if backend == "postgresql":
                    connect_args["options"] = "-c default_transaction_read_only=on"
                else:
                    connect_args["init_command"] = "SET SESSION TRANSACTION READ ONLY"
            return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        return sa.create_engine(url, pool_pre_ping=True)

    def _install_sqlite_events(self, engine: sa.Engine) -> None:
        synchronous = "FULL" if self.durability == "full" else "NORMAL"
        busy_ms = int(self._busy_timeout * 1000)
        memory = _is_memory_sqlite(engine.url)
        read_only = self.read_only

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, record: Any) -> None:
            # Let SQLAlchemy's begin() (below) issue BEGIN, instead of pysqlite's
            # implicit deferred BEGIN before the first DML statement.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            try:
                # The busy timeout first: switching a new file to WAL needs the
                # write lock, which another process may be holding (an upgrade).
                cursor.execute("PRAGMA busy_timeout=%d" % busy_ms)
                # A reader changes nothing about the file: not even its journal mode.
                if not memory and not read_only:
                    _switch_to_wal(cursor, busy_ms / 1000.0)
                if not read_only:
                    cursor.execute("PRAGMA synchronous=%s" % synchronous)
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            # Writers take the write lock up front, so they wait (busy_timeout)
            # rather than fail when another process is writing.
            if conn.get_execution_options().get("flowkit_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

    def _make_upsert(self, table: sa.Table, keep: tuple[str, ...]) -> Any:
        update = [c.name for c in table.columns if c.name not in keep]
        if self.dialect in ("sqlite", "postgresql"):
            from sqlalchemy.dialects import postgresql, sqlite

            insert: Any = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
            stmt = insert(table)
            return stmt.on_conflict_do_update(index_elements=["uuid"], set_={c: stmt.excluded[c] for c in update})
        if self.dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert as my_insert

            my_stmt = my_insert(table)
            return my_stmt.on_duplicate_key_update({c: my_stmt.inserted[c] for c in update})
        return None  # generic: update, then insert what did not exist

    # -- public -------------------------------------------------------------------

    def _refuse_closed(self) -> None:
        if self._closed:
            raise exc.StorageFailure("the logbook backend for %s is closed" % (self.describe_url(),))

    def describe_url(self) -> str:
        """The database URL without its password, for messages."""
        return self.url.render_as_string(hide_password=True)

    @property
    def max_value_bytes(self) -> int:
        """The largest value (a result or failure as UTF-8 JSON) one atom detail can hold, in bytes.

        MySQL/MariaDB: the server's ``max_allowed_packet`` less 64 KiB for the
        rest of the statement (read from the server once).  The MySQL driver
        escapes quotes and backslashes on the way, so what it sends can be
        larger than the JSON: :meth:`~flowkit.persistence._sql.connection.SQLAlchemyConnection.update_atom_details`
        checks that size and raises ResultNotStorable when it does not fit.
        PostgreSQL: 1 GB (what one field and one protocol message can hold)
        less 64 KiB.  SQLite: its ``SQLITE_LIMIT_LENGTH`` (1 GB by default).
        """
        if self._max_value is None:
            if self.dialect in ("mysql", "mariadb"):
                self._max_value = self.max_packet_bytes() - _STATEMENT_HEADROOM
            elif self.dialect == "sqlite":
                self._max_value = self.read(_sqlite_length_limit, "SQLite's length limit")
            else:
                self._max_value = _POSTGRES_MAX_VALUE
        return self._max_value

    @property
    def checks_value_size(self) -> bool:
        """Whether a result can reach :attr:`max_value_bytes` in practice (MySQL/MariaDB), so writes check it."""
        return self.dialect in ("mysql", "mariadb")

    def max_packet_bytes(self) -> int:
        """MySQL/MariaDB: the server's ``max_allowed_packet`` (the largest statement it takes)."""
        if self._max_packet is None:
            query = sa.text("SELECT @@max_allowed_packet")
            self._max_packet = self.read(lambda conn: int(conn.execute(query).scalar_one()), "max_allowed_packet")
        return self._max_packet

    def sent_size(self, text: str) -> int:
        """How many bytes the driver sends for ``text`` as a statement parameter (its escaped UTF-8)."""
        data = text.encode("utf-8")
        if self.dialect not in ("mysql", "mariadb"):
            return len(data)
        # PyMySQL escapes these with a backslash (the server's default sql_mode).
        return len(data) + sum(data.count(c) for c in (b"\\", b'"', b"'", b"\0", b"\n", b"\r", b"\x1a"))

    def close(self) -> None:
        """Close the writer connection and, if this backend created it, the engine's pool."""
        self._closed = True
        with self._write_lock:
            self._drop_writer(invalidate=False)
        if self._lock_engine is not None:
            self._lock_engine.dispose()
            self._lock_engine = None
        if self._owns_engine:
            self.engine.dispose()

    # -- schema ---------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Upgrade the schema once per backend if ``create_schema`` is on (read-only: check it)."""
        if self._schema_ready:
            return
        if self.read_only:
            self._check_schema()
            return
        if not self._create_schema:
            return
        self.upgrade()

    def upgrade(self) -> None:
        """Run the alembic migrations to head; serialized across processes by a database lock.

        On a read-only backend this only checks that the schema is current
        (StorageFailure naming what it found if not), so a reader that calls
        it (a job board's ``connect()``) works on a current database.
        """
        from alembic import command
        from alembic.config import Config

        if self.read_only:
            self._check_schema()
            return

        with self._schema_lock:
            try:
                with self._write_lock:
                    if self.memory:
                        conn = self._get_writer()
                        own = False
                    else:
                        conn = self.engine.connect().execution_options(flowkit_write=True)
                        own = True
                    try:
                        with upgrade_lock(conn, "flowkit-upgrade:" + self.table_prefix):
                            with conn.begin():
                                config = Config()
                                config.set_main_option("script_location", MIGRATIONS)
                                config.attributes["connection"] = conn
                                config.attributes["table_prefix"] = self.table_prefix
                                command.upgrade(config, "head")
                    finally:
                        if own:
                            conn.close()
            except sa.exc.SQLAlchemyError as error:
                if self.memory:
                    self._drop_writer()
                raise exc.StorageFailure(
                    "could not create or upgrade the logbook schema (tables %s*) in %s: %s"
                    % (self.table_prefix, self.describe_url(), error)
                ) from error
            self._schema_ready = True

    def _check_schema(self) -> None:
        # Read-only: report a missing or foreign schema instead of creating one.
        where = self.describe_url()
        if self.dialect == "sqlite" and not self.memory:
            path = os.path.abspath(str(self.url.database))
            if not os.path.exists(path):
                raise exc.StorageFailure("no database at %s" % (path,))
            where = path
        try:
            current, head = self.schema_revisions()
        except exc.StorageFailure as failure:
            raise exc.StorageFailure(
                "not a flowkit database (cannot read a schema version from %s: %s)"
                % (where, _short(failure.__cause__) if failure.__cause__ is not None else failure)
            ) from failure
        if not current:
            raise exc.StorageFailure(
                "not a flowkit database (schema version none): %s has no flowkit tables %s*"
                % (where, self.table_prefix)
            )
        if current != head:
            from alembic.script import ScriptDirectory

            known = {rev.revision for rev in ScriptDirectory(MIGRATIONS).walk_revisions()}
            found = ", ".join(sorted(current))
            if current <= known:
                raise exc.StorageFailure(
                    "the flowkit database %s (tables %s*) is at schema version %s, older than this flowkit's %s; "
                    "opening it for writing upgrades it (any flowkit writer does on first use, or "
                    "SQLAlchemyConnection.upgrade())" % (where, self.table_prefix, found, ", ".join(sorted(head)))
                )
            raise exc.StorageFailure(
                "the flowkit database %s (tables %s*) is at schema version %s, which this flowkit does not know "
                "(its newest is %s); was it written by a newer flowkit?"
                % (where, self.table_prefix, found, ", ".join(sorted(head)))
            )
        self._schema_ready = True

    def _refuse_write(self, what: str) -> None:
        if self.read_only:
            raise exc.InvalidState(
                "cannot %s: the logbook backend for %s was opened read-only" % (what, self.describe_url())
            )

    def schema_revisions(self) -> tuple[set[str], set[str]]:
        """``(current, head)`` alembic revisions of this backend's tables."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        head = set(ScriptDirectory(MIGRATIONS).get_heads())

        def current(conn: sa.Connection) -> set[str]:
            context = MigrationContext.configure(conn, opts={"version_table": self.table_prefix + "alembic_version"})
            return set(context.get_current_heads())

        return self.read(current, "the schema version"), head

    # -- writing ----------------------------------------------------------------------

    def _get_writer(self) -> sa.Connection:
        # Called with _write_lock held.
        if self._writer is None:
            self._writer = self.engine.connect().execution_options(flowkit_write=True)
            if self.dialect == "sqlite" and not self.memory:
                # The file this connection has just opened: a later commit that
                # finds another file (or none) at the path went nowhere durable.
                # Resolved once: the file opened is the one the path named then.
                self._file_path = self._database_path()
                try:
                    self._file_id = _identity(self._file_path)
                except OSError:
                    self._file_id = None
                self._wal_id = None
        return self._writer

    def _database_path(self) -> str:
        return os.path.abspath(str(self.url.database))

    def _check_file(self) -> None:
        """StorageFailure if the SQLite file the writer has open is no longer the one at its path."""
        path = self._file_path
        problem = None
        try:
            now = _identity(path)
        except FileNotFoundError:
            problem = "was deleted"
        else:
            if now != self._file_id:
                problem = "was replaced by another file"
        if problem is None:
            # In WAL mode the last commits live in the -wal file until a checkpoint.
            try:
                wal = _identity(path + "-wal")
            except FileNotFoundError:
                if self._wal_id is not None:
                    problem = "lost its -wal file"
            else:
                if self._wal_id is None:
                    self._wal_id = wal
                elif wal != self._wal_id:
                    problem = "had its -wal file replaced"
        if problem is None:
            return
        self._file_broken = exc.StorageFailure(
            "the SQLite database %s %s while this process had it open: what was written since is not "
            "durable, so nothing more is written through this backend (restore the file and resume the "
            "flows from what it holds)" % (path, problem)
        )
        raise self._file_broken

    def _drop_writer(self, invalidate: bool = True) -> None:
        # Called with _write_lock held.  After an error the connection may be
        # half-dead (e.g. the server went away); never reuse it.
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            if invalidate:
                writer.invalidate()
            writer.close()
        except sa.exc.SQLAlchemyError:
            pass

    def commit(
        self,
        books: list[dict[str, Any]],
        flows: list[dict[str, Any]],
        atoms: list[dict[str, Any]],
        describe: Callable[[], str],
        precondition: Callable[[Any], None] | None = None,
        lock: SessionFlowLock | None = None,
    ) -> None:
        """Upsert rows durably in one transaction, shared with concurrent callers' rows.

        Group commit: a caller queues its batch and then takes the writer; the
        taker commits every queued batch in one transaction, so callers that
        were waiting find theirs done and return without a commit of their own.

        ``precondition(cursor)``, if given, runs first inside that transaction
        on the DBAPI cursor; if it raises a
        :class:`~flowkit.exceptions.FlowkitError` this batch is left out (the
        others still commit) and the error is raised here (see
        :meth:`flowkit.persistence.base.Connection.flush`).

        ``lock``, if given, is the flow lock the writer holds: the rows are
        written through the lock's own session instead (not grouped with
        others), so they commit only while the lock is held.  If that session
        turns out to be gone, :class:`~flowkit.exceptions.LockLost` is raised,
        now and for every later write under that lock.
        """
        if self.read_only:
            self._refuse_write("write %s" % (describe(),))
        if self.dialect in ("mysql", "mariadb"):
            self._check_row_sizes(books, flows, atoms)
        batch = _Batch(books, flows, atoms, describe, precondition)
        if lock is not None:
            self._commit_locked(batch, lock)
            return
        with self._queue_lock:
            self._queue.append(batch)
        with self._write_lock:
            if batch.done:
                if batch.error is not None:
                    raise batch.error
                return
            with self._queue_lock:
                group, self._queue = self._queue, []
            try:
                self._commit_group(group)
                error: BaseException | None = None
            except exc.StorageFailure as failure:
                error = failure
            for other in group:
                other.done = True
                if error is None and other.refused is not None and other is not batch:
                    other.error = other.refused
                if other is not batch and error is not None:
                    # Every batch in the failed transaction failed; each caller
                    # gets a failure naming its own rows.
                    other.error = exc.StorageFailure(
                        "could not write %s to %s: %s" % (other.describe(), self.describe_url(), error.__cause__)
                    )
                    other.error.__cause__ = error.__cause__
            if error is not None:
                if len(group) > 1:
                    raise exc.StorageFailure(
                        "could not write %s to %s: %s" % (batch.describe(), self.describe_url(), error.__cause__)
                    ) from error.__cause__
                raise error
            if batch.refused is not None:
                raise batch.refused

    def _check_row_sizes(self, *kinds: list[dict[str, Any]]) -> None:
        # MySQL refuses a statement over max_allowed_packet and drops the
        # session with it (a flow lock too): refuse such a row before sending.
        budget: int | None = None
        for rows in kinds:
            for row in rows:
                chars = sum(len(v) for v in row.values() if isinstance(v, str))
                # 4 bytes a character at most, doubled by escaping at most.
                if chars * 8 + _STATEMENT_HEADROOM <= 1 << 20:
                    continue
                if budget is None:
                    budget = self.max_packet_bytes() - _STATEMENT_HEADROOM
                size = sum(self.sent_size(v) for v in row.values() if isinstance(v, str))
                if size > budget:
                    raise exc.StorageFailure(
                        "could not write %s to %s (nothing was written): its row takes %d bytes as sent, more than "
                        "the server takes in one statement (max_allowed_packet %d bytes, less 64 KiB for the rest)"
                        % (_describe_row(row), self.describe_url(), size, budget + _STATEMENT_HEADROOM)
                    )

    @staticmethod
    def _check_preconditions(cursor: Any, group: list[_Batch]) -> list[_Batch]:
        # The batches whose precondition lets them through.
        live = []
        for b in group:
            b.refused = None
            if b.precondition is not None:
                try:
                    b.precondition(cursor)
                except exc.FlowkitError as refused:
                    b.refused = refused
                    continue
            live.append(b)
        return live

    def _commit_locked(self, batch: _Batch, lock: SessionFlowLock) -> None:
        with lock.mutex:
            if lock.lost is not None:
                again = exc.LockLost(str(lock.lost))
                raise again from lock.lost.__cause__
            conn = lock.connection
            if conn is None:
                raise exc.InvalidState("the lock of %s was released; nothing is written under it" % (lock.what,))
            self._commit_group([batch], lock)
        if batch.refused is not None:
            raise batch.refused

    def _commit_group(self, group: list[_Batch], lock: SessionFlowLock | None = None) -> None:
        # With ``lock``: through its session, else through the shared writer (called with _write_lock held).
        if self._file_broken is not None:
            raise self._file_broken
        try:
            if lock is not None:
                assert lock.connection is not None
                self._write_group(lock.connection, group)
            else:
                reused = self._writer
                try:
                    self._write_group(self._get_writer(), group)
                except self._db_errors as error:
                    if reused is None or not self._disconnected(error, reused):
                        raise
                    # The writer sat idle through an outage (an engine writes
                    # through its lock's session): once more on a new
                    # connection.  Safe even if the first COMMIT went through:
                    # the upserts are idempotent and the preconditions run again.
                    self._drop_writer()
                    self._write_group(self._get_writer(), group)
            self.commits += 1
            if lock is None and self._file_id is not None:
                self._check_file()
        except self._db_errors as error:
            describe = group[0].describe() if len(group) == 1 else "; ".join(b.describe() for b in group)
            if lock is None:
                self._drop_writer()
            elif not lock.alive():
                lost = exc.LockLost(
                    "could not write %s to %s: the database session holding the lock of %s ended (%s); "
                    "another engine may be running it now, so this engine stops and writes nothing more "
                    "(resume the flow detail with a new engine; it reads what was committed)"
                    % (describe, self.describe_url(), lock.what, _short(error))
                )
                lock.mark_lost(lost)
                raise lost from error
            raise exc.StorageFailure(
                "could not write %s to %s (nothing of it was written): %s"
                % (describe, self.describe_url(), _short(error))
            ) from error
        for b in group:
            if b.refused is not None:
                continue
            for row in b.flows:
                self._flow_parent[row["uuid"]] = (row["parent_uuid"], row["position"])
            for row in b.atoms:
                self._atom_parent[row["uuid"]] = (row["parent_uuid"], row["position"])

    def _write_group(self, conn: sa.Connection, group: list[_Batch]) -> None:
        # Two commit paths, both kept because each is the only one somewhere.
        # The driver-cursor path (_commit_raw) serves the dialects with a native
        # upsert (SQLite, PostgreSQL, MySQL); the Core path below serves the
        # others (update, then insert) and is the statements write_logbook runs
        # in a caller's transaction.  Measured with
        # ``python -m benchmarks.persistence --commit-paths`` (one changed atom
        # per durable commit, best of 7 interleaved rounds, a shared 2-core
        # machine): SQLite 65-111 us through the cursor against 188-439 us
        # through Core (2.7-4x, in every run), which is the engine's per-step
        # cost; PostgreSQL and MySQL within noise of each other (Core/cursor
        # 0.68-1.07 over four runs), their commit dominated by the server.
        if self._hot_sql is not None:
            self._commit_raw(conn, group)
            return
        with conn.begin():
            if any(b.precondition is not None for b in group):
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    group = self._check_preconditions(cursor, group)
                finally:
                    cursor.close()
            self._upsert_all(
                conn,
                [row for b in group for row in b.books],
                [row for b in group for row in b.flows],
                [row for b in group for row in b.atoms],
            )

    def _disconnected(self, error: BaseException, conn: sa.Connection) -> bool:
        # Whether ``error`` says the connection is gone (not that a statement failed).
        if isinstance(error, sa.exc.DBAPIError):
            return bool(error.connection_invalidated)
        try:
            raw = conn.connection.dbapi_connection
        except sa.exc.SQLAlchemyError:
            return True
        return bool(self.engine.dialect.is_disconnect(error, raw, None))  # type: ignore[arg-type]

    def _commit_raw(self, conn: sa.Connection, group: list[_Batch]) -> None:
        # The hot path.  The upserts are SQLAlchemy Core statements compiled
        # once for this dialect; running them on the driver's cursor skips
        # SQLAlchemy's per-execution machinery, which costs more than the
        # SQLite commit itself (a flush per atom makes that the engine's
        # dominant cost).  SQLAlchemy never sees a transaction on this
        # connection: each one is committed or rolled back here.
        #
        # With psycopg (PostgreSQL), on a connection that is idle (on a broken
        # one the first statement fails as a disconnect and the caller retries):
        #
        # - a batch of one kind of rows, few enough and without a
        #   precondition (a step: one atom's SUCCESS, the next one's
        #   RUNNING) is ONE multi-row upsert, which the server commits as its
        #   own transaction: one message each way.  As BEGIN, the upserts and
        #   COMMIT in a pipeline, psycopg sent five messages and the server
        #   woke for each (``python -m benchmarks.floors``).  It runs prepared
        #   on libpq (:mod:`~flowkit.persistence._sql._libpq`), which needs no
        #   autocommit switch; through a cursor if it cannot;
        # - anything else is BEGIN, the upserts and COMMIT as statements in
        #   one pipeline.  psycopg's own transaction (its commit() inside a
        #   pipeline) waits for the server more than once.
        #
        # Both cursor paths switch the connection to autocommit for the while.
        #
        # Except for a large batch: psycopg (3.3) stops flushing its output
        # buffer once the last queued command is handed to libpq, so a COMMIT
        # inside the pipeline can leave the tail of a large parameter unsent
        # and then wait for a reply the server, still reading, never sends
        # (both sides wait for ever; from 16 MB on loopback, much less on a
        # slow link).  Leaving the pipeline flushes everything first, so a
        # large batch commits after it, for one more round trip.  Other
        # drivers keep their own commit.
        assert self._hot_sql is not None
        raw: Any = conn.connection.dbapi_connection
        statements = self._commit_by_statements
        idle = statements and raw.info.transaction_status == 0  # on a broken connection BEGIN says why
        one = self._one_statement(group) if idle else None
        try:
            if one is not None and self._prepared.execute(raw, one.name, one.prepared_sql, one.values):
                return  # libpq's own statement, outside psycopg's transaction handling
            if idle:
                raw.autocommit = True
            with contextlib.closing(raw.cursor()) as cursor:
                if one is not None:
                    cursor.execute(one.sql, one.values)
                else:
                    self._commit_statements(raw, cursor, group, statements)
        except BaseException:
            try:
                raw.rollback()
            except Exception:  # the connection may be dead; it is dropped by the caller
                pass
            raise
        finally:
            if idle and raw.autocommit:
                try:
                    raw.autocommit = False
                except Exception:
                    pass

    def _commit_statements(self, raw: Any, cursor: Any, group: list[_Batch], statements: bool) -> None:
        # One transaction of an upsert per kind of rows (see _commit_raw).
        assert self._hot_sql is not None
        commit_inside = self.dialect != "postgresql" or _batch_chars(group) <= _PIPELINE_COMMIT_CHARS
        with _pipeline(raw):
            if self.dialect == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            elif statements:
                cursor.execute("BEGIN")
            if any(b.precondition is not None for b in group):
                group = self._check_preconditions(cursor, group)
            for kind in _KINDS:
                rows = [row for b in group for row in getattr(b, kind)]
                if not rows:
                    continue
                sql, order = self._hot_sql[kind]
                if order is not None:
                    cursor.executemany(sql, list(map(self._row_params[kind], rows)))
                else:
                    cursor.executemany(sql, rows)
            if commit_inside:
                _commit(raw, cursor, statements)
        if not commit_inside:
            _commit(raw, cursor, statements)
        if statements and cursor.statusmessage != "COMMIT":
            # PostgreSQL answers COMMIT with ROLLBACK, and no error, for a
            # transaction a failed statement aborted.  The pipeline raises
            # that statement's error first; this is in case it did not:
            # nothing rolled back may pass for committed.
            raise self.engine.dialect.dbapi.OperationalError(  # type: ignore[union-attr]
                "PostgreSQL answered %r to COMMIT: nothing was written" % (cursor.statusmessage,)
            )

    def _one_statement(self, group: list[_Batch]) -> _Upsert | None:
        # ``group`` as one multi-row upsert, or None if it needs a
        # transaction: more than one kind of rows, a precondition, too many
        # rows or characters, or one record twice (an upsert may not touch a
        # row twice).
        found = None
        for b in group:
            if b.precondition is not None:
                return None
            for kind in _KINDS:
                rows = getattr(b, kind)
                if rows:
                    if found is not None and found != kind:
                        return None
                    found = kind
        if found is None:
            return None
        rows = [row for b in group for row in getattr(b, found)]
        count = len(rows)
        if count > 1 and (
            count > _ONE_STATEMENT_ROWS
            or len({row["uuid"] for row in rows}) < count
            or _batch_chars(group) > _ONE_STATEMENT_CHARS
        ):
            return None
        shape = self._multi_row.get((found, count))
        if shape is None:
            shape = self._multi_row[(found, count)] = self._multi_row_sql(found, count)
        sql, name, prepared_sql, params = shape
        return _Upsert(sql, name, prepared_sql, list(itertools.chain.from_iterable(map(params, rows))))

    def _multi_row_sql(self, kind: str, count: int) -> _MultiRow:
        # The upsert of ``count`` rows of ``kind``, made from the one-row
        # statement (its VALUES tuple repeated): with psycopg's %s and with
        # libpq's $n placeholders, the name it is prepared under, and a row's
        # parameters in the order it takes them.
        assert self._hot_sql is not None
        sql = self._hot_sql[kind][0]
        start = sql.index(" VALUES (") + len(" VALUES ")
        end = sql.index(") ON CONFLICT ", start) + 1
        values = sql[start:end]
        names = _NAMED_PARAMETER.findall(values)
        positional = sql[:start] + ", ".join([_NAMED_PARAMETER.sub("%s", values)] * count) + sql[end:]
        numbered = iter(range(1, len(names) * count + 1))
        prepared = re.sub("%s", lambda _: "$%d" % next(numbered), positional)
        name = ("flowkit_%s_%s_%d" % (self.table_prefix, kind, count)).encode("ascii")
        return positional, name, prepared.encode("utf-8"), operator.itemgetter(*names)

    def tree_rows(self, conn: sa.Connection, book_uuid: str) -> dict[str, list[dict[str, Any]]]:
        """The rows of logbook ``book_uuid``, its flow details and their atom details, in ``conn``'s transaction.

        ``{"books": [row] or [], "flows": rows by position, "atoms": rows by
        flow and position}``.  Loading a logbook to resume it is what a
        conductor does for every job, so this is a hot path too: the three
        queries are compiled once and run on the driver's cursors (psycopg 3
        sends them in one pipeline), with no SQLAlchemy statement building
        or result processing.
        """
        raw: Any = conn.connection.dbapi_connection
        cursors = [raw.cursor() for _ in _KINDS]
        try:
            with _pipeline(raw):
                for kind, cursor in zip(_KINDS, cursors):
                    sql, order = self._tree_sql[kind]
                    cursor.execute(sql, (book_uuid,) * len(order) if order is not None else {"book_uuid": book_uuid})
            found: dict[str, list[dict[str, Any]]] = {}
            for kind, cursor in zip(_KINDS, cursors):
                names = [column[0] for column in cursor.description]
                found[kind] = [dict(zip(names, row)) for row in cursor.fetchall()]
            return found
        finally:
            for cursor in cursors:
                cursor.close()

    def write_logbook(self, conn: sa.Connection, book: LogBook) -> None:
        """Upsert ``book``, its flow details and their atom details through ``conn``, in its transaction.

        For a caller that writes a logbook atomically with rows of its own (a
        job board's post writes the job and its logbook in one transaction).
        The rows are the ones a connection's flush writes, upserted by the
        same statements.  Nothing is remembered about where the records hang:
        the caller's transaction may still roll back.
        """
        self._upsert_all(conn, *schema.logbook_rows(book))

    def _upsert_all(
        self, conn: sa.Connection, books: list[dict[str, Any]], flows: list[dict[str, Any]], atoms: list[dict[str, Any]]
    ) -> None:
        # Parents before children: the foreign keys are checked per statement.
        for kind, rows in (("books", books), ("flows", flows), ("atoms", atoms)):
            if rows:
                self._upsert(conn, kind, rows)

    def _upsert(self, conn: sa.Connection, kind: str, rows: list[dict[str, Any]]) -> None:
        stmt = self._upserts[kind]
        if stmt is not None:
            conn.execute(stmt, rows)
            return
        table = {"books": self.tables.logbooks, "flows": self.tables.flows, "atoms": self.tables.atoms}[kind]
        for row in rows:
            values = {k: v for k, v in row.items() if k not in ("uuid", "position", "created_at")}
            done = conn.execute(sa.update(table).where(table.c.uuid == row["uuid"]).values(**values))
            if not done.rowcount:
                conn.execute(sa.insert(table).values(**row))

    def write_now(self, fn: Callable[[sa.Connection], _T], what: str, *, serialize: str | None = None) -> _T:
        """Run ``fn(conn)`` in its own write transaction (deletes, signals: not the hot path).

        With ``serialize``, the transaction runs under the database-wide lock
        of that name (:func:`~flowkit.persistence._sql.locks.database_lock`):
        such transactions commit one after the other across processes, so
        rows they insert become visible in the order of their autoincrement
        ids.
        """
        self._refuse_write(what)
        with self._write_lock:
            try:
                conn = self._get_writer()
                if serialize is None:
                    with conn.begin():
                        return fn(conn)
                with database_lock(conn, serialize, self._busy_timeout, "another writer"):
                    with conn.begin():
                        return fn(conn)
            except (sa.exc.SQLAlchemyError, TimeoutError) as error:
                self._drop_writer()
                raise exc.StorageFailure(
                    "could not %s in %s (nothing was changed): %s" % (what, self.describe_url(), _short(error))
                ) from error

    # -- reading ---------------------------------------------------------------------

    def read(self, fn: Callable[[sa.Connection], _T], what: str) -> _T:
        """Run ``fn(conn)`` in one read transaction (one consistent snapshot)."""
        try:
            if self.memory:
                # One shared connection: reads queue behind the writer.
                with self._write_lock:
                    conn = self._get_writer()
                    with conn.begin():
                        return fn(conn)
            with self.engine.connect() as conn, conn.begin():
                return fn(conn)
        except sa.exc.SQLAlchemyError as error:
            if self.memory:
                with self._write_lock:
                    self._drop_writer()
            raise exc.StorageFailure(
                "could not read %s from %s: %s" % (what, self.describe_url(), _short(error))
            ) from error

    def forget(self, flow_uuids: Iterable[str] | None) -> None:
        """Drop cached parents (all of them when ``flow_uuids`` is None)."""
        if flow_uuids is None:
            self._flow_parent.clear()
            self._atom_parent.clear()
            return
        gone = set(flow_uuids)
        for uuid in gone:
            self._flow_parent.pop(uuid, None)
        for uuid, (parent, _) in list(self._atom_parent.items()):
            if parent in gone:
                self._atom_parent.pop(uuid, None)

    # -- locks -------------------------------------------------------------------------

    def lock_flow(self, flow_detail: FlowDetail, what: str) -> FlowLock | None:
        """The cross-process lock for ``flow_detail``; None where a process lock is enough."""
        self._refuse_write("lock %s to run it" % (what,))
        if self.memory:
            return None
        if self.dialect == "sqlite":
            database = os.path.abspath(str(self.url.database))
            return FileFlowLock(os.path.join(database + ".locks", flow_detail.uuid + ".lock"), what)
        if self.dialect in ("postgresql", "mysql", "mariadb"):
            if self._lock_engine is None:
                # A session per held lock, from a pool of its own: a run holds
                # it for its whole length, so runs must not drain the backend's
                # pool, and none waits for another's session (no limit).  A
                # released session is kept for the next run (up to
                # _IDLE_LOCK_SESSIONS of them): opening one costs 5-6 ms on
                # PostgreSQL here (a server process each) and its step
                # statement is prepared again.  A kept session is pinged when
                # taken, so one that died while idle is replaced, not failed on.
                self._lock_engine = sa.create_engine(
                    self.engine.url,
                    pool_size=_IDLE_LOCK_SESSIONS,
                    max_overflow=-1,
                    pool_pre_ping=True,
                    connect_args={"connect_timeout": 10},
                )
            try:
                return SessionFlowLock(self._lock_engine, self.table_prefix + flow_detail.uuid, what)
            except sa.exc.SQLAlchemyError as error:
                raise exc.StorageFailure(
                    "could not take the lock of %s in %s: %s" % (what, self.describe_url(), _short(error))
                ) from error
        return None


def _read_only_sqlite(database: str, args: dict[str, Any]) -> Callable[[], Any]:
    """A connection factory opening ``database`` with ``mode=ro``: SQLite then never creates or writes the file."""
    import sqlite3
    import urllib.parse

    uri = "file:%s?mode=ro" % (urllib.parse.quote(os.path.abspath(database)),)

    def connect() -> Any:
        return sqlite3.connect(uri, uri=True, **args)

    return connect


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _batch_chars(group: list[_Batch]) -> int:
    # The characters of text the batches send (JSON text is ASCII: about their bytes).
    total = 0
    for b in group:
        for rows in (b.books, b.flows, b.atoms):
            for row in rows:
                for value in row.values():
                    if type(value) is str:
                        total += len(value)
    return total


def _describe_row(row: dict[str, Any]) -> str:
    kind = "atom detail" if "intention" in row else "flow detail" if "parent_uuid" in row else "logbook"
    return "%s %r (%s)" % (kind, row.get("name"), row.get("uuid"))


def _sqlite_length_limit(conn: sa.Connection) -> int:
    import sqlite3

    raw: Any = conn.connection.dbapi_connection
    getlimit = getattr(raw, "getlimit", None)
    if getlimit is None:  # Python < 3.11: SQLite's compiled-in default
        return 1_000_000_000
    return int(getlimit(getattr(sqlite3, "SQLITE_LIMIT_LENGTH", 0)))


def _commit(raw: Any, cursor: Any, statements: bool) -> None:
    """Commit the transaction _commit_raw began: a COMMIT statement if it began with one, else the driver's commit."""
    if not statements:
        raw.commit()
        return
    cursor.execute("COMMIT")


def _pipeline(raw: Any) -> contextlib.AbstractContextManager[Any]:
    # psycopg 3 queues what runs inside and sends it in one go; other drivers run each statement at once.
    return raw.pipeline() if hasattr(raw, "pipeline") else contextlib.nullcontext()


def _tree_selects(t: schema.Tables) -> dict[str, Any]:
    # The three queries of SQLStore.tree_rows, all on one bound parameter.
    book: Any = sa.bindparam("book_uuid")
    return {
        "books": sa.select(t.logbooks).where(t.logbooks.c.uuid == book),
        "flows": sa.select(t.flows).where(t.flows.c.parent_uuid == book).order_by(t.flows.c.position),
        "atoms": sa.select(t.atoms)
        .join(t.flows, t.atoms.c.parent_uuid == t.flows.c.uuid)
        .where(t.flows.c.parent_uuid == book)
        .order_by(t.atoms.c.parent_uuid, t.atoms.c.position),
    }


def _short(error: BaseException) -> str:
    """The driver's message without SQLAlchemy's statement dump and help links."""
    orig = getattr(error, "orig", None)
    if orig is not None:
        return "%s: %s" % (type(orig).__name__, str(orig).strip().splitlines()[0] if str(orig).strip() else "")
    return "%s: %s" % (type(error).__name__, str(error).splitlines()[0] if str(error) else "")
