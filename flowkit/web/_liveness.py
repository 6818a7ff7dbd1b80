"""Whether the engine that runs a flow detail is still alive, asked without disturbing it.

A flow detail that reads RUNNING or REVERTING was either being run when it was
read or was left so by an engine that died.  The difference is the flow lock
(:mod:`flowkit.persistence._sql.locks`): the holder's death drops it.  Taking
the lock to find out would make a concurrent resume fail for no reason, so
each backend is asked the way its lock can be inspected:

- SQLite file: the lock file exists only while the flock is (or was last) held;
  Linux lists every held ``flock`` in ``/proc/locks`` by device and inode;
- PostgreSQL: ``pg_locks`` shows the advisory lock while a session holds it;
- MySQL/MariaDB: ``IS_USED_LOCK`` names the session holding it.

Anything else (the memory backend, a platform without ``/proc/locks``, a
query that fails) is "cannot tell" (None), and the stored state is shown as is.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["holder_alive"]


def holder_alive(backend: Any, flow_uuid: str) -> bool | None:
    """True when an engine holds ``flow_uuid``'s lock, False when none does, None when that cannot be told."""
    dialect = getattr(backend, "dialect", None)
    if dialect is None or getattr(backend, "memory", True):
        return None
    try:
        if dialect == "sqlite":
            database = os.path.abspath(str(backend.url.database))
            return _flock_held(os.path.join(database + ".locks", flow_uuid + ".lock"))
        name = backend.table_prefix + flow_uuid
        if dialect == "postgresql":
            return _pg_lock_held(backend.engine, name)
        if dialect in ("mysql", "mariadb"):
            return _mysql_lock_held(backend.engine, name)
    except Exception:  # a probe that fails says nothing either way
        return None
    return None


def _flock_held(path: str) -> bool | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False  # a holder unlinks the file when it releases the lock
    try:
        with open("/proc/locks", encoding="ascii") as handle:
            table = handle.read()
    except OSError:
        return None
    wanted = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; blocked waiters carry "->".
        if len(fields) >= 6 and "->" not in fields[1] and fields[1] == "FLOCK" and fields[5] == wanted:
            return True
    return False


def _pg_lock_held(engine: Any, name: str) -> bool:
    import sqlalchemy as sa

    from flowkit.persistence._sql.locks import lock_key

    key = lock_key(name)
    # A bigint advisory key is stored as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
    high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    query = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND classid::bigint = :high AND objid::bigint = :low"
    )
    with engine.connect() as conn:
        return bool(conn.execute(query, {"high": high, "low": low}).scalar())


def _mysql_lock_held(engine: Any, name: str) -> bool:
    import sqlalchemy as sa

    from flowkit.persistence._sql.locks import mysql_lock_name

    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": mysql_lock_name(name)}).scalar() is not None
