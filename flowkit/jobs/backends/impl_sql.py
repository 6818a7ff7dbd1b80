"""A job board in SQL (SQLite, PostgreSQL, MySQL/MariaDB), beside the logbook.

Tables (created by migration ``0002`` with the logbook's, same prefix)::

    <prefix>jobs       id, uuid, board, name, details, book_uuid, book_name, priority,
                       created_at, idempotency_key, resources, state, owner, token,
                       expires_at, cancel            UNIQUE (board, idempotency_key)
                       attempts, last_error, failed_by, due_at   (migration 0003)
                       parked, park_reason, woken, outcome       (migration 0005)
    <prefix>job_locks  (board, resource) PK, holder, holder_token, holder_expires

How each guarantee is kept:

- A claim is one conditional ``UPDATE ... SET state='CLAIMED', token=token+1
  WHERE uuid=? AND (state='UNCLAIMED' OR expires_at <= now)``: of concurrent
  claimers the database lets exactly one match (the others re-check the
  WHERE against the committed row: PostgreSQL's read-committed re-check,
  InnoDB's locking read, SQLite's single writer).
- In the same transaction the claim takes each resource row with
  ``UPDATE job_locks SET holder=... WHERE holder IS NULL OR holder_expires
  <= now OR holder=<this job>`` in sorted key order (no deadlock between
  claimers); if one is held the whole claim rolls back.
- Renew, consume, abandon, trash and cancel are conditional UPDATEs on the
  owner and token, releasing the job's resource rows in the same
  transaction.
- Fencing: when the persistence backend shares this database, every logbook
  flush through :meth:`SQLJobBoard.fenced_backend` first reads the job row
  ``FOR UPDATE`` (PostgreSQL, MySQL; SQLite's write transaction already
  excludes everyone) inside the flush's own transaction and writes nothing
  unless the claim is current.  A competing claim therefore commits either
  before the check (and the flush is refused) or after the flush.
- ``post(connection=conn)`` writes the job, its resource rows and its
  logbook through the caller's connection, in the caller's transaction.

- Due times: a job is claimable when ``due_at <= now``, or when ``due_at``
  is NULL and it is not parked (a job parked until woken has a NULL due
  time).  :meth:`SQLJobBoard.next_due` is one ``MIN(due_at)`` over the
  (board, state, due_at) index.  A wake sets ``woken`` on a claimed job, and
  the owner's park reads it in its own conditional UPDATE, so a wake racing
  a park is never lost.

``wait()`` and ``Job.wait()`` poll: SQL has no portable notification, so a
waiter reads the board every ``poll_interval`` seconds (default 0.5; at the
next lease expiry or due time if that comes sooner, on the board's clock,
and at once when that clock jumps).  Each read looks only at claimable rows
and two indexed minimums, whatever the number of waiting jobs.  That bounds
the delay between a post and a waiting conductor noticing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa

from flowkit import exceptions as exc
from flowkit.clock import Clock
from flowkit.jobs.base import (
    _CLAIM_WINDOW,
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_DETAILS_BYTES,
    CancelRequest,
    Claim,
    FailureRecord,
    FencedBackend,
    Job,
    JobBoard,
    JobPriority,
    JobState,
    JobStatus,
    Posting,
    _clip_error,
)
from flowkit.persistence._sql import DEFAULT_SQLITE_URL
from flowkit.persistence._sql.jobs_schema import JobTables, make_job_tables
from flowkit.persistence._sql.schema import DEFAULT_TABLE_PREFIX
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend, normalize_url
from flowkit.persistence.base import Backend
from flowkit.persistence.models import LogBook

__all__ = ["SQLJobBoard", "JobTables", "make_job_tables", "DEFAULT_POLL_INTERVAL"]

#: Longest time ``wait()`` goes without reading the board.
DEFAULT_POLL_INTERVAL = 0.5

_PRIORITIES = list(JobPriority)
_T = TypeVar("_T")

# Deadlock / serialization failure codes worth one more try (MySQL, PostgreSQL).
_RETRY_CODES = {"1213", "1205", "40P01", "40001"}


_UNCLAIMED = JobState.UNCLAIMED.value
_CLAIMED = JobState.CLAIMED.value
_TRASHED = JobState.TRASHED.value

# What every give-back (abandon, fail, trash, restore, cancel) and claim resets: the job is not parked.
_UNPARKED: dict[str, Any] = {"parked": 0, "park_reason": None, "woken": 0}


def _rows_of(stmt: Any, conn: sa.Connection) -> list[Any]:
    return list(conn.execute(stmt).mappings())


class _SQLFencedBackend(FencedBackend):
    """Fencing inside the logbook flush's own transaction (the board and logbook share a database)."""

    board: SQLJobBoard

    def transaction_check(self) -> Callable[[Any], None]:
        """Read the job row in the flush's transaction; refuse the flush unless the claim is current."""
        return self.board._guard_for(self.claim, self.saw)


class SQLJobBoard(JobBoard):
    """Jobs in SQL tables next to the logbook; see the module docs.

    ``url`` names the database; when None the board uses ``persistence``'s
    database (a :class:`~flowkit.persistence.backends.impl_sqlalchemy.SQLAlchemyBackend`), else ``sqlite:///flowkit.db``.
    When ``persistence`` is None the board's own database keeps the logbooks.
    """

    # The key columns are VARCHAR(190): what a unique index on utf8mb4 takes in MySQL.
    max_key_chars = 190
    takes_connection = True

    def __init__(
        self,
        name: str,
        url: str | sa.URL | None = None,
        *,
        persistence: Backend | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        clock: Clock | Callable[[], float] | None = None,
        max_details_bytes: int = DEFAULT_MAX_DETAILS_BYTES,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        table_prefix: str | None = None,
    ) -> None:
        super().__init__(
            name, persistence=persistence, lease_ttl=lease_ttl, clock=clock, max_details_bytes=max_details_bytes
        )
        if len(name) > 190:
            raise ValueError("a SQL job board's name is at most 190 characters")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive, got %r" % (poll_interval,))
        self.poll_interval = float(poll_interval)
        shared = isinstance(persistence, SQLAlchemyBackend) and (
            url is None
            or (
                normalize_url(url).render_as_string(hide_password=False)
                == persistence.url.render_as_string(hide_password=False)
                and table_prefix in (None, persistence.table_prefix)
            )
        )
        self._owns_db = not shared
        if shared:
            assert isinstance(persistence, SQLAlchemyBackend)
            self.db = persistence
        else:
            prefix = table_prefix if table_prefix is not None else DEFAULT_TABLE_PREFIX
            self.db = SQLAlchemyBackend(url or DEFAULT_SQLITE_URL, table_prefix=prefix)
        if self.persistence is None:
            self.persistence = self.db
        #: True when the board and the logbook share a database (fencing in the flush's transaction).
        self.shares_logbook = self.persistence is self.db
        self.tables = make_job_tables(self.db.table_prefix)
        self._ready = False
        self._closed = threading.Event()
        self._waiters: set[threading.Event] = set()
        self._waiters_lock = threading.Lock()
        self._guard_sql: tuple[str, tuple[str, ...] | None] | None = None

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine of the board's database (for :meth:`begin`)."""
        return self.db.engine

    def connect(self) -> SQLJobBoard:
        """Create or upgrade the tables (idempotent, safe across processes); returns the board."""
        if not self._ready:
            self.db.upgrade()
            self._ready = True
        return self

    def close(self) -> None:
        """Stop waiters; close the database if the board opened it."""
        self._closed.set()
        with self._waiters_lock:
            for waiter in self._waiters:
                waiter.set()
        if self._owns_db:
            self.db.close()

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A connection in a write transaction, for ``post(..., connection=conn)`` with your own writes.

        Commits when the block ends, rolls back if it raises.  On SQLite the
        transaction takes the write lock up front (``BEGIN IMMEDIATE``).
        """
        self.connect()
        with self.engine.connect().execution_options(flowkit_write=True) as conn, conn.begin():
            yield conn

    # -- transactions ---------------------------------------------------------------------

    def _write(self, fn: Callable[[sa.Connection], _T], what: str) -> _T:
        self.connect()
        for attempt in range(5):
            try:
                return self.db.write_now(fn, what)
            except exc.StorageFailure as failure:
                orig = getattr(failure.__cause__, "orig", None)
                code = getattr(orig, "sqlstate", None) or str(getattr(orig, "args", [""])[0] or "")
                if attempt < 4 and str(code) in _RETRY_CODES:
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, fn: Callable[[sa.Connection], _T], what: str) -> _T:
        self.connect()
        return self.db.read(fn, what)

    def _where(self, uuid: str) -> Any:
        t = self.tables.jobs
        return sa.and_(t.c.uuid == uuid, t.c.board == self.name)

    def _row(self, conn: sa.Connection, uuid: str) -> Any:
        row = conn.execute(sa.select(self.tables.jobs).where(self._where(uuid))).mappings().first()
        if row is None:
            raise exc.NotFound("no job %s on board %r" % (uuid, self.name))
        return row

    @staticmethod
    def _live(row: Any, now: float) -> JobState:
        state = JobState(row["state"])
        if state is JobState.CLAIMED and row["expires_at"] <= now:
            return JobState.UNCLAIMED
        return state

    def _job(self, row: Any) -> Job:
        return Job(
            self,
            uuid=row["uuid"],
            name=row["name"],
            details=json.loads(row["details"]) if row["details"] else {},
            book_uuid=row["book_uuid"],
            book_name=row["book_name"],
            priority=_PRIORITIES[row["priority"]],
            created_on=datetime.datetime.fromtimestamp(row["created_at"], datetime.timezone.utc),
            idempotency_key=row["idempotency_key"],
            resources=json.loads(row["resources"]) if row["resources"] else (),
        )

    # -- posting ----------------------------------------------------------------------------

    def _insert_ignoring(self, table: sa.Table) -> Any:
        dialect = self.db.dialect
        if dialect in ("sqlite", "postgresql"):
            from sqlalchemy.dialects import postgresql, sqlite

            insert: Any = sqlite.insert if dialect == "sqlite" else postgresql.insert
            return insert(table).on_conflict_do_nothing()
        if dialect in ("mysql", "mariadb"):
            return sa.insert(table).prefix_with("IGNORE")
        raise exc.JobFailure("the SQL job board does not support the %s dialect" % (dialect,))

    def _post_rows(self, conn: sa.Connection, row: dict[str, Any], book: LogBook | None) -> Any:
        """Write the job (unless its idempotency key exists) and, if it is new, its logbook; return the job row."""
        t = self.tables.jobs
        conn.execute(self._insert_ignoring(t), [row])
        if row["idempotency_key"] is not None:
            stored = (
                conn.execute(sa.select(t).where(t.c.board == self.name, t.c.idempotency_key == row["idempotency_key"]))
                .mappings()
                .first()
            )
            assert stored is not None, "an insert that was ignored leaves the conflicting row"
            if stored["uuid"] != row["uuid"]:
                return stored
        keys = json.loads(row["resources"])
        if keys:
            conn.execute(
                self._insert_ignoring(self.tables.locks),
                [{"board": self.name, "resource": key, "holder": None} for key in keys],
            )
        if book is not None and self.shares_logbook:
            self.db.write_logbook(conn, book)
        return row

    def _post(self, posting: Posting, connection: Any) -> Job:
        """Write the job; with ``connection``, inside the caller's transaction.

        See :meth:`~flowkit.jobs.base.JobBoard.post`.
        """
        name, book, idempotency_key = posting.name, posting.book, posting.idempotency_key
        prio, keys, encoded = posting.priority, posting.resources, posting.details_json
        row = {
            "uuid": str(uuidlib.uuid4()),
            "board": self.name,
            "name": name,
            "details": encoded,
            "book_uuid": book.uuid if book is not None else None,
            "book_name": book.name if book is not None else None,
            "priority": prio.rank,
            "created_at": self.clock(),
            "idempotency_key": idempotency_key,
            "resources": json.dumps(list(keys)),
            "state": _UNCLAIMED,
            "owner": None,
            "token": 0,
            "expires_at": None,
            "cancel": None,
            "attempts": 0,
            "last_error": None,
            "failed_by": None,
            "due_at": posting.due_at,
            "parked": 0,
            "park_reason": None,
            "woken": 0,
            "outcome": None,
        }
        self.connect()
        if book is not None and not self.shares_logbook:
            if connection is not None:
                raise exc.JobFailure(
                    "post(connection=...) with a logbook needs board %r and its logbooks in one database" % (self.name,)
                )
            if idempotency_key is None or not self._existing_key(idempotency_key):
                assert self.persistence is not None
                with self.persistence.get_connection() as conn:
                    conn.save_logbook(book)
                    conn.flush()
        if connection is not None:
            if not isinstance(connection, sa.Connection):
                raise TypeError("post(connection=...) takes a SQLAlchemy Connection, got %r" % (connection,))
            if book is not None:
                self.db.forget([fd.uuid for fd in book])
            return self._job(self._post_rows(connection, row, book))
        return self._job(self._write(lambda conn: self._post_rows(conn, row, book), "post job %r" % (name,)))

    def _existing_key(self, key: str) -> bool:
        t = self.tables.jobs

        def read(conn: sa.Connection) -> bool:
            found = conn.execute(sa.select(t.c.uuid).where(t.c.board == self.name, t.c.idempotency_key == key))
            return found.first() is not None

        return self._read(read, "idempotency key %r" % (key,))

    # -- reading ----------------------------------------------------------------------------

    def get_job(self, job_uuid: str) -> Job:
        """The job ``job_uuid``; NotFound if absent."""
        return self._job(self._read(lambda conn: self._row(conn, job_uuid), "job %s" % (job_uuid,)))

    def _open_rows(self, conn: sa.Connection, include_final: bool = False) -> list[Any]:
        t = self.tables.jobs
        stmt = sa.select(t).where(t.c.board == self.name)
        if not include_final:
            stmt = stmt.where(t.c.state.in_([_UNCLAIMED, _CLAIMED]))
        return list(conn.execute(stmt.order_by(t.c.priority, t.c.id)).mappings())

    def iterjobs(
        self, only_unclaimed: bool = False, ensure_fresh: bool = False, *, include_final: bool = False
    ) -> Iterator[Job]:
        """Jobs not yet final (or all), by priority then age (see :meth:`~flowkit.jobs.base.JobBoard.iterjobs`)."""
        rows = self._read(
            functools.partial(self._open_rows, include_final=include_final), "the jobs of board %r" % (self.name,)
        )
        now = self.clock()
        return iter([self._job(r) for r in rows if not only_unclaimed or self._live(r, now) is JobState.UNCLAIMED])

    def failures_of(self, job: Job | str) -> FailureRecord:
        """The job's failed attempts."""
        uuid = self._uuid_of(job)
        row = self._read(lambda conn: self._row(conn, uuid), "job %s" % (uuid,))
        return FailureRecord(
            int(row["attempts"] or 0),
            row["last_error"],
            tuple(json.loads(row["failed_by"])) if row["failed_by"] else (),
            row["due_at"],
        )

    def _due(self, now: float) -> Any:
        t = self.tables.jobs
        return sa.or_(t.c.due_at <= now, sa.and_(t.c.due_at.is_(None), t.c.parked == 0))

    def status_of(self, job: Job | str) -> JobStatus:
        """The job's state, due time, parking and outcome."""
        uuid = self._uuid_of(job)
        row = self._read(lambda conn: self._row(conn, uuid), "job %s" % (uuid,))
        state = self._live(row, self.clock())
        waiting = state is JobState.UNCLAIMED
        return JobStatus(
            state,
            row["due_at"] if waiting else None,
            bool(row["parked"]) and waiting,
            row["park_reason"],
            row["outcome"],
            row["owner"] if row["state"] == _CLAIMED else None,
            float(row["expires_at"]) if row["state"] == _CLAIMED and row["expires_at"] is not None else None,
        )

    def next_due(self) -> float | None:
        """The earliest due time of an unclaimed job not due yet (one indexed MIN); None if none."""
        return self._read(lambda conn: self._next_due(conn, self.clock()), "the next due job of board %r" % self.name)

    def _next_due(self, conn: sa.Connection, now: float) -> float | None:
        t = self.tables.jobs
        found = conn.execute(
            sa.select(sa.func.min(t.c.due_at)).where(t.c.board == self.name, t.c.state == _UNCLAIMED, t.c.due_at > now)
        ).scalar()
        return None if found is None else float(found)

    @property
    def parked_count(self) -> int:
        """How many jobs are parked now (one COUNT: a claim clears ``parked``)."""
        t = self.tables.jobs
        stmt = (
            sa.select(sa.func.count())
            .select_from(t)
            .where(t.c.board == self.name, t.c.state == _UNCLAIMED, t.c.parked != 0)
        )
        found = self._read(lambda conn: conn.execute(stmt).scalar(), "the parked jobs of board %r" % (self.name,))
        return int(found or 0)

    def state_of(self, job: Job | str) -> JobState:
        """The job's state now."""
        uuid = self._uuid_of(job)
        row = self._read(lambda conn: self._row(conn, uuid), "job %s" % (uuid,))
        return self._live(row, self.clock())

    def find_owner(self, job: Job | str) -> str | None:
        """The owner of the job's live claim, or None."""
        uuid = self._uuid_of(job)
        row = self._read(lambda conn: self._row(conn, uuid), "job %s" % (uuid,))
        return row["owner"] if self._live(row, self.clock()) is JobState.CLAIMED else None

    # -- claims -------------------------------------------------------------------------------

    def claim(self, job: Job | str, who: str, *, ttl: float | None = None) -> Claim:
        """Lease the job to ``who`` (see :meth:`~flowkit.jobs.base.JobBoard.claim`)."""
        seconds = self._ttl(ttl)
        uuid = self._uuid_of(job)
        t, locks = self.tables.jobs, self.tables.locks

        def claim(conn: sa.Connection) -> Claim:
            now = self.clock()
            expires = now + seconds
            done = conn.execute(
                sa.update(t)
                .where(
                    self._where(uuid),
                    sa.or_(t.c.state == _UNCLAIMED, sa.and_(t.c.state == _CLAIMED, t.c.expires_at <= now)),
                    self._due(now),
                )
                .values(state=_CLAIMED, owner=who, token=t.c.token + 1, expires_at=expires, **_UNPARKED)
            )
            row = self._row(conn, uuid)
            if done.rowcount != 1:
                state = self._live(row, now)
                if state is JobState.CLAIMED:
                    raise exc.UnclaimableJob(
                        "job %s (%r) is claimed by %r until %.3f" % (uuid, row["name"], row["owner"], row["expires_at"])
                    )
                if state is JobState.UNCLAIMED:
                    raise self._not_due(
                        uuid, row["name"], row["due_at"], now, int(row["attempts"] or 0), row["last_error"]
                    )
                raise exc.UnclaimableJob("job %s (%r) is %s" % (uuid, row["name"], state.value))
            token = int(row["token"])
            busy = []
            for key in sorted(json.loads(row["resources"] or "[]")):
                taken = conn.execute(
                    sa.update(locks)
                    .where(
                        locks.c.board == self.name,
                        locks.c.resource == key,
                        sa.or_(locks.c.holder.is_(None), locks.c.holder_expires <= now, locks.c.holder == uuid),
                    )
                    .values(holder=uuid, holder_token=token, holder_expires=expires)
                )
                if taken.rowcount != 1:
                    busy.append(key)
            if busy:
                # Raising rolls back the claim and every resource taken above.
                raise exc.UnclaimableJob(
                    "job %s (%r) needs resource(s) %s held by another claimed job"
                    % (uuid, row["name"], ", ".join(busy))
                )
            return Claim(uuid, who, token, expires)

        return self._write(claim, "claim job %s for %r" % (uuid, who))

    def _claim_candidates(self) -> Iterator[Job]:
        """The claimable jobs, by priority then post order, read a window at a time.

        ``claim_next`` usually claims one of the first few, so this reads
        one claim window (8 rows) per query, keyset on priority and id,
        rather than every open job of the board.
        """
        t = self.tables.jobs
        after: tuple[int, int] | None = None  # (priority, id) of the last job read
        while True:
            now = self.clock()
            claimable = sa.or_(t.c.state == _UNCLAIMED, sa.and_(t.c.state == _CLAIMED, t.c.expires_at <= now))
            stmt = sa.select(t).where(t.c.board == self.name, claimable, self._due(now))
            if after is not None:
                stmt = stmt.where(sa.or_(t.c.priority > after[0], sa.and_(t.c.priority == after[0], t.c.id > after[1])))
            stmt = stmt.order_by(t.c.priority, t.c.id).limit(_CLAIM_WINDOW)
            rows: list[Any] = self._read(functools.partial(_rows_of, stmt), "claimable jobs")
            if not rows:
                return
            after = (rows[-1]["priority"], rows[-1]["id"])
            for row in rows:
                yield self._job(row)

    @staticmethod
    def _lost(claim: Claim, row: Any, now: float) -> exc.LeaseLost:
        if row["state"] == _CLAIMED and int(row["token"]) == claim.token:
            return exc.LeaseLost(
                "the claim of %r on job %s (token %d) expired %.3fs ago"
                % (claim.owner, claim.job_uuid, claim.token, now - row["expires_at"])
            )
        state = SQLJobBoard._live(row, now)
        return exc.LeaseLost(
            "the claim of %r on job %s (token %d) is gone: the job is %s with token %d"
            % (claim.owner, claim.job_uuid, claim.token, state.value, int(row["token"]))
        )

    def renew(self, claim: Claim, *, ttl: float | None = None) -> Claim:
        """Extend a current claim (see :meth:`~flowkit.jobs.base.JobBoard.renew`)."""
        seconds = self._ttl(ttl)
        t, locks = self.tables.jobs, self.tables.locks
        uuid = claim.job_uuid

        def renew(conn: sa.Connection) -> Claim:
            now = self.clock()
            expires = now + seconds
            done = conn.execute(
                sa.update(t)
                .where(self._where(uuid), t.c.state == _CLAIMED, t.c.token == claim.token, t.c.expires_at > now)
                .values(expires_at=expires)
            )
            if done.rowcount != 1:
                raise self._lost(claim, self._row(conn, uuid), now)
            conn.execute(
                sa.update(locks)
                .where(locks.c.board == self.name, locks.c.holder == uuid, locks.c.holder_token == claim.token)
                .values(holder_expires=expires)
            )
            return dataclasses.replace(claim, expires_at=expires)

        return self._write(renew, "renew the claim on job %s" % (uuid,))

    def ensure_current(self, claim: Claim) -> CancelRequest | None:
        """LeaseLost unless ``claim`` is current; the pending cancel request, or None."""
        row = self._read(lambda conn: self._row(conn, claim.job_uuid), "job %s" % (claim.job_uuid,))
        return self._check_row(claim, row)

    def _check_row(self, claim: Claim, row: Any) -> CancelRequest | None:
        now = self.clock()
        if row is None:
            raise exc.LeaseLost("the claim of %r on job %s: the job is gone" % (claim.owner, claim.job_uuid))
        if row["state"] != _CLAIMED or int(row["token"]) != claim.token or row["expires_at"] <= now:
            raise self._lost(claim, row, now)
        return None if row["cancel"] is None else CancelRequest(claim.job_uuid, row["cancel"] == "revert")

    def _finish(
        self,
        job: Job | str,
        who: str,
        token: int | None,
        action: str,
        values: dict[str, Any],
        failure: str | None = None,
    ) -> None:
        uuid = self._uuid_of(job)
        t = self.tables.jobs

        def finish(conn: sa.Connection) -> None:
            where = [self._where(uuid), t.c.state == _CLAIMED, t.c.owner == who]
            if token is not None:
                where.append(t.c.token == token)
            # Ordered: MySQL evaluates SET left to right, and "state" reads "cancel".
            ordered = list(values.items()) + [("owner", None), ("expires_at", None)]
            if failure is not None:
                # Read in this transaction; the UPDATE below writes only if ``who`` still owns the job.
                found = conn.execute(sa.select(t.c.failed_by).where(self._where(uuid))).first()
                failed_by = json.loads(found[0]) if found is not None and found[0] else []
                if who not in failed_by:
                    failed_by.append(who)
                ordered += [
                    ("attempts", t.c.attempts + 1),
                    ("last_error", _clip_error(failure)),
                    ("failed_by", json.dumps(failed_by)),
                ]
            done = conn.execute(sa.update(t).where(*where).ordered_values(*ordered))
            if done.rowcount != 1:
                row = self._row(conn, uuid)
                now = self.clock()
                holder = "%r (token %d)" % (row["owner"], int(row["token"])) if row["state"] == _CLAIMED else "nobody"
                raise exc.NotOwner(
                    "%r cannot %s job %s (%r): it is %s, claimed by %s"
                    % (who, action, uuid, row["name"], self._live(row, now).value, holder)
                )
            self._release(conn, uuid)

        self._write(finish, "%s job %s" % (action, uuid))

    def _release(self, conn: sa.Connection, uuid: str) -> None:
        locks = self.tables.locks
        conn.execute(
            sa.update(locks)
            .where(locks.c.board == self.name, locks.c.holder == uuid)
            .values(holder=None, holder_token=None, holder_expires=None)
        )

    def consume(self, job: Job | str, who: str, *, token: int | None = None, outcome: str | None = None) -> None:
        """COMPLETE (CANCELLED if a cancel was requested), ``outcome`` recorded; owner only."""
        ended = self._check_outcome(outcome)
        t = self.tables.jobs
        state = sa.case(
            (t.c.cancel.is_not(None), JobState.CANCELLED.value),
            else_=JobState.COMPLETE.value,
        )
        self._finish(job, who, token, "consume", {"state": state, "cancel": None, "outcome": ended})

    def park(
        self,
        job: Job | str,
        who: str,
        *,
        due: float | None,
        token: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Back to UNCLAIMED until ``due`` (None: until woken), no failure counted; owner only."""
        when = self._check_due(due)
        t = self.tables.jobs
        # Read in the same UPDATE as the ownership check: a wake committed before it makes the job due now.
        due_at = sa.case((t.c.woken != 0, self.clock()), else_=sa.literal(when, sa.Double))
        values = {
            "state": _UNCLAIMED,
            "due_at": due_at,
            "parked": 1,
            "park_reason": None if reason is None else _clip_error(reason),
            "woken": 0,
        }
        self._finish(job, who, token, "park", values)

    def wake(self, job: Job | str) -> bool:
        """Make a parked job due now (see :meth:`~flowkit.jobs.base.JobBoard.wake`)."""
        uuid = self._uuid_of(job)
        t = self.tables.jobs

        def wake(conn: sa.Connection) -> bool:
            now = self.clock()
            woken = conn.execute(
                sa.update(t)
                .where(
                    self._where(uuid),
                    t.c.state == _UNCLAIMED,
                    t.c.parked != 0,
                    sa.or_(t.c.due_at.is_(None), t.c.due_at > now),
                )
                .values(due_at=now)
            )
            if woken.rowcount == 1:
                return True
            # Claimed: keep the wake for the owner's park.
            conn.execute(sa.update(t).where(self._where(uuid), t.c.state == _CLAIMED).values(woken=1))
            row = self._row(conn, uuid)
            return row["state"] == _UNCLAIMED and bool(row["parked"])

        return self._write(wake, "wake job %s" % (uuid,))

    def abandon(self, job: Job | str, who: str, *, token: int | None = None) -> None:
        """Back to UNCLAIMED; owner only."""
        self._finish(job, who, token, "abandon", {"state": _UNCLAIMED, "due_at": None, **_UNPARKED})

    def fail(self, job: Job | str, who: str, error: str, *, token: int | None = None, delay: float = 0.0) -> None:
        """Back to UNCLAIMED after ``delay``, the failure recorded; owner only."""
        due = self.clock() + self._check_delay(delay)
        self._finish(job, who, token, "fail", {"state": _UNCLAIMED, "due_at": due, **_UNPARKED}, failure=error)

    def trash(self, job: Job | str, who: str, *, token: int | None = None, error: str | None = None) -> None:
        """TRASHED (the failure recorded, with ``error``); owner only."""
        values = {"state": _TRASHED, "cancel": None, "due_at": None, **_UNPARKED}
        self._finish(job, who, token, "trash", values, failure=error)

    def restore(self, job: Job | str) -> JobState:
        """TRASHED -> UNCLAIMED with a fresh count (see :meth:`~flowkit.jobs.base.JobBoard.restore`)."""
        uuid = self._uuid_of(job)
        t = self.tables.jobs

        def restore(conn: sa.Connection) -> JobState:
            done = conn.execute(
                sa.update(t)
                .where(self._where(uuid), t.c.state == _TRASHED)
                .values(
                    state=_UNCLAIMED, attempts=0, failed_by=None, due_at=None, owner=None, expires_at=None, **_UNPARKED
                )
            )
            if done.rowcount != 1:
                row = self._row(conn, uuid)
                raise self._not_restorable(uuid, row["name"], self._live(row, self.clock()))
            return JobState.UNCLAIMED

        return self._write(restore, "restore job %s" % (uuid,))

    # -- cancellation ---------------------------------------------------------------------------

    def cancel(self, job: Job | str, *, revert: bool = True) -> JobState:
        """Cancel the job (see :meth:`~flowkit.jobs.base.JobBoard.cancel`)."""
        uuid = self._uuid_of(job)
        t = self.tables.jobs

        def cancel(conn: sa.Connection) -> JobState:
            now = self.clock()
            ended = conn.execute(
                sa.update(t)
                .where(
                    self._where(uuid),
                    sa.or_(t.c.state == _UNCLAIMED, sa.and_(t.c.state == _CLAIMED, t.c.expires_at <= now)),
                )
                .values(state=JobState.CANCELLED.value, owner=None, expires_at=None, cancel=None, **_UNPARKED)
            )
            if ended.rowcount == 1:
                self._release(conn, uuid)
                return JobState.CANCELLED
            asked = conn.execute(
                sa.update(t)
                .where(self._where(uuid), t.c.state == _CLAIMED)
                .values(cancel="revert" if revert else "suspend")
            )
            if asked.rowcount == 1:
                return JobState.CLAIMED
            return self._live(self._row(conn, uuid), now)

        return self._write(cancel, "cancel job %s" % (uuid,))

    def cancel_requested(self, job: Job | str) -> CancelRequest | None:
        """The pending cancel request, or None."""
        uuid = self._uuid_of(job)
        row = self._read(lambda conn: self._row(conn, uuid), "job %s" % (uuid,))
        if row["cancel"] is None:
            return None
        return CancelRequest(uuid, row["cancel"] == "revert")

    # -- waiting ----------------------------------------------------------------------------------

    def _claimable(self) -> tuple[list[Job], float | None]:
        """The claimable jobs, and the board-clock time something may next become claimable (None: nothing is due)."""
        t, locks = self.tables.jobs, self.tables.locks

        def read(conn: sa.Connection) -> tuple[list[Any], set[str], list[float]]:
            now = self.clock()
            claimable = sa.or_(t.c.state == _UNCLAIMED, sa.and_(t.c.state == _CLAIMED, t.c.expires_at <= now))
            rows = list(
                conn.execute(
                    sa.select(t).where(t.c.board == self.name, claimable, self._due(now)).order_by(t.c.priority, t.c.id)
                ).mappings()
            )
            held = {
                r[0]
                for r in conn.execute(
                    sa.select(locks.c.resource).where(
                        locks.c.board == self.name, locks.c.holder.is_not(None), locks.c.holder_expires > now
                    )
                )
            }
            expiry = conn.execute(
                sa.select(sa.func.min(t.c.expires_at)).where(
                    t.c.board == self.name, t.c.state == _CLAIMED, t.c.expires_at > now
                )
            ).scalar()
            times = [float(when) for when in (expiry, self._next_due(conn, now)) if when is not None]
            return rows, held, times

        rows, held, times = self._read(read, "the jobs of board %r" % (self.name,))
        jobs = [self._job(r) for r in rows if not (held & set(json.loads(r["resources"] or "[]")))]
        return jobs, (min(times) if times else None)

    def wait(self, timeout: float | None = None) -> Iterator[Job]:
        """Poll until some job is claimable and return those jobs; NotFound on timeout (see module docs)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        jumped = threading.Event()  # set by a jump of the clock, or by close()
        with self._waiters_lock:
            self._waiters.add(jumped)
        unsubscribe = self.clock.on_change(jumped.set)
        try:
            while True:
                jumped.clear()
                jobs, next_time = self._claimable()
                if jobs:
                    return iter(jobs)
                delay = self.poll_interval
                until = self.clock.timeout(next_time)
                if until is not None:
                    delay = min(delay, until)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise exc.NotFound("no claimable job on board %r within %ss" % (self.name, timeout))
                    delay = min(delay, left)
                jumped.wait(delay)
                if self._closed.is_set():
                    raise exc.NotFound("board %r was closed while waiting for jobs" % (self.name,))
        finally:
            unsubscribe()
            with self._waiters_lock:
                self._waiters.discard(jumped)

    def wait_for_job(self, job: Job | str, timeout: float | None = None) -> bool:
        """Poll until the job is final; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.state_of(job).final:
            delay = self.poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                delay = min(delay, left)
            if self._closed.wait(delay):
                return False
        return True

    # -- fencing ------------------------------------------------------------------------------------

    def fenced_backend(self, backend: Backend, claim: Claim) -> Backend:
        """``backend`` fenced by ``claim``: inside each flush's transaction when it is this board's database."""
        if backend is self.db:
            self.connect()
            return _SQLFencedBackend(backend, self, claim)
        return FencedBackend(backend, self, claim)

    def _guard_for(self, claim: Claim, saw: Callable[[CancelRequest | None], None]) -> Callable[[Any], None]:
        if self._guard_sql is None:
            t = self.tables.jobs
            stmt = sa.select(t.c.state, t.c.token, t.c.expires_at, t.c.cancel).where(
                t.c.uuid == sa.bindparam("job_uuid"), t.c.board == sa.bindparam("board_name")
            )
            if self.db.dialect != "sqlite":
                # SQLite's write transaction (BEGIN IMMEDIATE) already excludes every other writer.
                stmt = stmt.with_for_update()
            self._guard_sql = self.db.driver_sql(stmt)
        sql, order = self._guard_sql
        params = {"job_uuid": claim.job_uuid, "board_name": self.name}
        args: Any = tuple(params[k] for k in order) if order is not None else params

        def guard(cursor: Any) -> None:
            cursor.execute(sql, args)
            found = cursor.fetchone()
            row = None if found is None else dict(zip(("state", "token", "expires_at", "cancel"), found))
            saw(self._check_row(claim, row))

        return guard

    def __repr__(self) -> str:
        return "<SQLJobBoard %r %s>" % (self.name, self.db.describe_url())
