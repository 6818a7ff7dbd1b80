"""SQL backend: the logbook in SQLite (the embedded default), PostgreSQL or MySQL.

``SQLAlchemyBackend("sqlite:////var/lib/app/flows.db")`` (or
``postgresql://...``, ``mysql://...``) owns a SQLAlchemy engine and one
*writer* connection; :class:`SQLAlchemyConnection` objects are cheap views
that buffer writes until a flush commits them (group commit).

This module is the backend's public face (TaskFlow's module path); the
machinery lives in ``flowkit.persistence._sql``, shared with the SQL job
board: ``store`` describes how a write travels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from flowkit.persistence._sql.connection import SQLAlchemyConnection
from flowkit.persistence._sql.locks import lock_key, mysql_lock_name
from flowkit.persistence._sql.store import DURABILITIES, SQLStore, normalize_url

__all__ = [
    "SQLAlchemyBackend",
    "SQLAlchemyConnection",
    "DURABILITIES",
    "normalize_url",
    # what names a flow detail's lock on the server (to find the session holding it)
    "lock_key",
    "mysql_lock_name",
]


class SQLAlchemyBackend(SQLStore):
    """Logbooks in a SQL database through SQLAlchemy Core.

    ``url_or_engine`` is a URL (``sqlite:///path``, ``sqlite://`` for an
    in-memory database, ``postgresql://...``, ``mysql://...``) or an
    existing :class:`sqlalchemy.Engine` (not disposed by ``close()``).
    ``durability`` picks SQLite's ``synchronous`` level ("normal": survives a
    process crash; "full": fsync on every commit, survives power loss);
    PostgreSQL and MySQL keep the server's own setting.  ``table_prefix``
    names the tables; ``create_schema`` runs :meth:`SQLAlchemyConnection.upgrade`
    on first use; ``busy_timeout`` is how long SQLite waits for another
    writer before failing; ``max_result_bytes`` caps an atom's encoded
    result (see :class:`~flowkit.persistence.base.Backend`).

    ``read_only=True`` opens the database for reading only, for tools that
    must not change it (``flowkit logbooks``, ``flowkit show``): an SQLite
    file is opened with ``mode=ro`` and never created (a missing one is
    "no database at PATH"), PostgreSQL and MySQL sessions are read-only, no
    schema is created or upgraded (a database without flowkit's tables is
    "not a flowkit database (schema version none)", one at another revision
    is reported with its revision), every write or flow lock raises
    :class:`~flowkit.exceptions.InvalidState`, and ``upgrade()`` only
    checks that the schema is current.

    TaskFlow's spelling works too: a conf dict ``{"connection": url, ...}``
    as the first argument, whose other keys are the options above (given
    both ways, they must agree); other keys raise ValueError naming them.
    """

    def __init__(self, url_or_engine: str | sa.URL | sa.Engine | Mapping[str, Any], **options: Any) -> None:
        if isinstance(url_or_engine, Mapping):
            url_or_engine, options = _from_conf(url_or_engine, options)
        super().__init__(url_or_engine, **options)

    def get_connection(self) -> SQLAlchemyConnection:
        """A connection that buffers writes until :meth:`SQLAlchemyConnection.flush`."""
        self._refuse_closed()
        return SQLAlchemyConnection(self)

    def __repr__(self) -> str:
        mode = " read-only" if self.read_only else ""
        return "<SQLAlchemyBackend %s durability=%s%s>" % (self.describe_url(), self.durability, mode)


_CONF_OPTIONS = ("durability", "table_prefix", "create_schema", "busy_timeout", "max_result_bytes", "read_only")


def _from_conf(conf: Mapping[str, Any], options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL and the options a TaskFlow-style conf dict names, merged with ``options``."""
    url = conf.get("connection")
    if not isinstance(url, str) or "://" not in url:
        raise ValueError("SQLAlchemyBackend conf needs a 'connection' URL like 'sqlite:///path', got %r" % (url,))
    unknown = sorted(set(conf) - {"connection"} - set(_CONF_OPTIONS))
    if unknown:
        raise ValueError(
            "SQLAlchemyBackend conf has unknown option(s) %s (known: connection, %s)"
            % (", ".join(map(repr, unknown)), ", ".join(_CONF_OPTIONS))
        )
    merged = dict(options)
    for key in _CONF_OPTIONS:
        if key in conf:
            if key in merged and merged[key] != conf[key]:
                raise ValueError(
                    "SQLAlchemyBackend: %r is %r in the conf but %r as an argument" % (key, conf[key], merged[key])
                )
            merged[key] = conf[key]
    return url, merged
