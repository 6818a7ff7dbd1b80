"""One prepared statement run on psycopg's libpq connection, for a durable PostgreSQL step.

A durable step on PostgreSQL is one multi-row upsert in autocommit (see
:meth:`~flowkit.persistence._sql.store.SQLStore._commit_raw`).  Through a
psycopg cursor, the client's part of it (a cursor, the query's conversion,
the parameters' adaptation, the result's bookkeeping) cost as much CPU as
the server's; this module runs the statement on the connection's
``pgconn`` (``psycopg.pq``, psycopg's public wrapper of libpq) instead:

- the statement is prepared once per session under a name of its own
  (``flowkit_<table prefix>_<kind>_<rows>``, at most 47 characters) and then
  executed by that name; a session that lost it prepares it again, and one
  where another backend on the same engine prepared it uses theirs;
- the parameters are sent as text, which the statement's own casts type:
  a str encoded as UTF-8, an int written out, None as NULL.  Any other type,
  or a session whose client encoding is not UTF-8, is not handled here
  (:func:`text_parameters` says so and the caller uses a cursor);
- libpq waits for the answer without holding the GIL (as psycopg's
  cursor does), with the connection's own lock held;
- a statement the server refuses raises the psycopg error for its SQLSTATE,
  as a cursor would; a connection that broke meanwhile is ``closed`` for
  psycopg and SQLAlchemy alike, so the caller retries on a new one.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["PreparedStatements", "text_parameters"]

# The SQLSTATE of "prepared statement does not exist" (a session that lost
# its statements, e.g. to DISCARD ALL): prepare it again, once.
_NO_SUCH_STATEMENT = "26000"
# ... and of "prepared statement already exists": another backend on the same
# SQLAlchemy engine (so on the same sessions) prepared it, under the same name
# for the same tables, so the same statement.
_ALREADY_PREPARED = "42P05"


def text_parameters(values: list[Any]) -> list[bytes | None] | None:
    """``values`` in libpq's text format, or None if one is of a type not sent this way."""
    sent: list[bytes | None] = []
    for value in values:
        kind = type(value)
        if kind is str:
            sent.append(value.encode("utf-8"))
        elif value is None:
            sent.append(None)
        elif kind is int:
            sent.append(b"%d" % value)
        else:
            return None
    return sent


class PreparedStatements:
    """Which statements each psycopg session has prepared, and running them there."""

    def __init__(self) -> None:
        # connection -> the names prepared on its session, or None if this
        # module does not run statements on it; a new session is a new
        # connection object.
        self._sessions: weakref.WeakKeyDictionary[Any, set[bytes] | None] = weakref.WeakKeyDictionary()

    def execute(self, raw: Any, name: bytes, sql: bytes, values: list[Any]) -> bool:
        """Run ``sql`` (``$n`` placeholders), prepared as ``name``, on ``raw``'s idle session.

        Returns False, having sent nothing, when ``raw`` is not a psycopg
        connection speaking UTF-8 or a value is of a type not sent as text
        here; raises the psycopg error of a statement the server refuses.
        """
        from psycopg import pq

        try:
            names = self._sessions[raw]
        except KeyError:
            usable = getattr(raw, "pgconn", None) is not None and raw.info.encoding == "utf-8"
            names = self._sessions[raw] = set() if usable else None
        if names is None:
            return False
        parameters = text_parameters(values)
        if parameters is None:
            return False
        pgconn = raw.pgconn
        with raw.lock:
            if name not in names:
                _prepare(raw, name, sql)
                names.add(name)
            result = pgconn.exec_prepared(name, parameters)
            if result.status != pq.ExecStatus.COMMAND_OK and _sqlstate(result) == _NO_SUCH_STATEMENT:
                _prepare(raw, name, sql)
                result = pgconn.exec_prepared(name, parameters)
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise _error(raw, result)
        return True


def _prepare(raw: Any, name: bytes, sql: bytes) -> None:
    from psycopg import pq

    result = raw.pgconn.prepare(name, sql)
    if result.status != pq.ExecStatus.COMMAND_OK and _sqlstate(result) != _ALREADY_PREPARED:
        raise _error(raw, result)


def _sqlstate(result: Any) -> str | None:
    from psycopg import pq

    code = result.error_field(pq.DiagnosticField.SQLSTATE)
    return code.decode("ascii") if code else None


def _error(raw: Any, result: Any) -> BaseException:
    # The psycopg error a cursor would have raised for ``result``.
    import psycopg
    from psycopg import errors

    message = (result.error_message or raw.pgconn.error_message or b"").decode("utf-8", "replace").strip()
    code = _sqlstate(result)
    cls: type[psycopg.Error] = psycopg.OperationalError
    if code:
        try:
            cls = errors.lookup(code)
        except KeyError:
            cls = psycopg.DatabaseError
    return cls(message or "PostgreSQL answered %s" % (result.status,), info=result)
