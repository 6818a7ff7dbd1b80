"""Flow-detail locks for the SQL backend, each dropped when its holder dies.

- SQLite file: an exclusive ``flock`` on ``<db>.locks/<flow-detail-uuid>.lock``;
  the kernel drops it when the process exits, however it exits.
- PostgreSQL: ``pg_try_advisory_lock`` on a session held open for the run; the
  server drops it when the session ends (including a killed client).
- MySQL/MariaDB: ``GET_LOCK(name, 0)`` on a session held open, likewise.

A session lock can also end while its holder lives on (an operator's
``pg_terminate_backend`` or ``KILL``, an idle timeout, a network cut), and then
another engine may take it.  So the holder writes through the lock's own
session (:attr:`SessionFlowLock.connection`): a write commits only on a
session that still holds the lock, and a session that ended has rolled back
whatever it had not committed.  That fences every write at no extra cost: no
statement checks the lock, the transaction itself cannot outlive it.

The same database-level primitives (blocking variants) serialize concurrent
schema upgrades and the storing of signals; see :func:`database_lock`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from flowkit.exceptions import FlowDetailLocked, LockLost
from flowkit.persistence.base import FlowLock

__all__ = ["FileFlowLock", "SessionFlowLock", "database_lock", "lock_key", "mysql_lock_name", "upgrade_lock"]


def lock_key(name: str) -> int:
    """A signed 64-bit key for ``name`` (what ``pg_advisory_lock`` takes)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def mysql_lock_name(name: str) -> str:
    """The ``GET_LOCK`` name for ``name`` (MySQL lock names are at most 64 characters)."""
    return "flowkit-" + hashlib.blake2b(name.encode("utf-8"), digest_size=20).hexdigest()


class FileFlowLock(FlowLock):
    """An exclusive ``flock`` on a sidecar file, excluding other processes and other engines here."""

    def __init__(self, path: str, what: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise FlowDetailLocked(
                        "%s is being run by another engine (lock file %s is held); wait for it to "
                        "finish or suspend it before running it again" % (what, path)
                    ) from None
                raise
            # The previous holder unlinks the file when it releases; if that
            # happened between our open() and flock(), we locked an orphan
            # inode that a third engine cannot see, so start over.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd: int | None = fd
        self._path = path

    def release(self) -> None:
        fd = self._fd
        if fd is None:
            return
        self._fd = None
        # Unlink while still holding the lock so no one can lock this inode afterwards.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        os.close(fd)


class SessionFlowLock(FlowLock):
    """A server-side named lock held by a database session opened for the run.

    The holder's writes go through :attr:`connection` under :attr:`mutex`
    (see the module docs); once a write finds the session gone, :attr:`lost`
    says why and the lock refuses every later write.
    """

    def __init__(self, engine: sa.Engine, name: str, what: str) -> None:
        #: Names the flow detail, for messages.
        self.what = what
        #: Held around each use of :attr:`connection` (a session serves one statement at a time).
        self.mutex = threading.Lock()
        #: Set when the session was found gone: the error every later write raises.
        self.lost: LockLost | None = None
        conn = engine.connect()
        dialect = engine.dialect.name
        try:
            if dialect == "postgresql":
                self._release_sql = sa.text("SELECT pg_advisory_unlock(:k)")
                self._params: dict[str, Any] = {"k": lock_key(name)}
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), self._params).scalar()
            elif dialect in ("mysql", "mariadb"):
                self._release_sql = sa.text("SELECT RELEASE_LOCK(:n)")
                self._params = {"n": mysql_lock_name(name)}
                got = conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), self._params).scalar()
            else:  # pragma: no cover - the backend only builds this lock for those two
                raise ValueError("no session lock for dialect %r" % (dialect,))
            # Leave no transaction open: the lock belongs to the session, and an
            # idle-in-transaction session would hold back vacuum for the whole run.
            conn.commit()
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            raise FlowDetailLocked(
                "%s is being run by another engine (its database lock is held by another session); "
                "wait for it to finish or suspend it before running it again" % (what,)
            )
        self._conn: sa.Connection | None = conn

    @property
    def connection(self) -> sa.Connection | None:
        """The session holding the lock (None once released or lost); use it under :attr:`mutex`."""
        return None if self.lost is not None else self._conn

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._conn is None

    def alive(self) -> bool:
        """Whether the session still answers (so it still holds the lock); call under :attr:`mutex`.

        A session lock is dropped only with its session or by this object's
        :meth:`release`, so a session that answers a query still holds it.
        """
        conn = self._conn
        if conn is None or self.lost is not None:
            return False
        try:
            raw: Any = conn.connection.dbapi_connection
            raw.rollback()
            cursor = raw.cursor()
            try:
                cursor.execute("SELECT 1")
                cursor.fetchall()
            finally:
                cursor.close()
            raw.rollback()
            return True
        except Exception:  # any failure to answer means the session is unusable
            return False

    def mark_lost(self, error: LockLost) -> None:
        """Record that the session is gone; every later write raises ``error``."""
        self.lost = error

    def release(self) -> None:
        with self.mutex:
            conn = self._conn
            if conn is None:
                return
            self._conn = None
            if self.lost is not None:
                # The session ended and the server dropped the lock with it.
                conn.invalidate()
                conn.close()
                return
            try:
                conn.execute(self._release_sql, self._params)
                conn.commit()
            except sa.exc.SQLAlchemyError:
                # The session is gone (e.g. the database restarted), and the server
                # dropped the lock with it: nothing left to release.
                conn.invalidate()
            finally:
                conn.close()


@contextlib.contextmanager
def upgrade_lock(conn: sa.Connection, name: str) -> Iterator[None]:
    """Hold a database-wide lock around a schema upgrade on ``conn`` (see :func:`database_lock`)."""
    with database_lock(conn, name, 300.0, "another process's schema upgrade"):
        yield


@contextlib.contextmanager
def database_lock(conn: sa.Connection, name: str, timeout: float, holder: str) -> Iterator[None]:
    """Hold the database-wide lock ``name`` on ``conn`` around the transactions run inside.

    PostgreSQL and MySQL use a blocking session lock (so a second process
    waits, then sees what the first committed); SQLite needs nothing here
    because flowkit's writes run in ``BEGIN IMMEDIATE`` transactions, which
    exclude every other writer until they commit.  Enter it outside any
    transaction.  MySQL gives up after ``timeout`` seconds with TimeoutError
    naming ``holder`` (what it waited for); PostgreSQL waits as long as the
    holder's session lives.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        key = lock_key(name)
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
    elif dialect in ("mysql", "mariadb"):
        lock_name = mysql_lock_name(name)
        got = conn.execute(sa.text("SELECT GET_LOCK(:n, :t)"), {"n": lock_name, "t": timeout}).scalar()
        conn.commit()
        if not got:
            raise TimeoutError("waited %g s for %s (lock %s)" % (timeout, holder, lock_name))
        try:
            yield
        finally:
            conn.rollback()
            conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": lock_name})
            conn.commit()
    else:
        yield
