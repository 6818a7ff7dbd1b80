"""Choose a persistence backend from a URL: ``fetch({"connection": "memory://"})``.

``memory://`` keeps logbooks in this process; ``sqlite:///path``,
``postgresql://...`` (psycopg 3) and ``mysql://...`` (PyMySQL) keep them in SQL
through :class:`~flowkit.persistence.backends.impl_sqlalchemy.SQLAlchemyBackend`,
which is imported only when such a URL is used (SQLAlchemy is not loaded by
in-memory runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from flowkit.exceptions import MissingConnection, UnknownChoice
from flowkit.persistence.backends.impl_memory import MemoryBackend
from flowkit.persistence.base import Backend

__all__ = ["fetch", "backend", "Backend", "MemoryBackend", "SQLAlchemyBackend"]

_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")
_SQL_OPTIONS = ("durability", "table_prefix", "create_schema", "read_only")


def fetch(conf: Mapping[str, Any] | str) -> Backend:
    """A backend for ``conf``: a URL, or a dict whose ``"connection"`` is a URL.

    ``memory://`` keeps logbooks in this process; ``dir:///path`` (or
    ``file:///path``, or TaskFlow's ``{"connection": "dir", "path": path}``)
    in JSON files under a folder; ``sqlite:///path``,
    ``postgresql://...`` and ``mysql://...`` (optionally with a ``+driver``)
    use the SQL backend.  A conf dict may also carry ``max_result_bytes``
    (see :class:`~flowkit.persistence.base.Backend`) and the SQL backend's
    options: ``durability``, ``table_prefix``, ``create_schema``, ``read_only``.

    A conf without a ``"connection"`` raises
    :class:`~flowkit.exceptions.MissingConnection` (a KeyError, as in TaskFlow);
    a URL no backend serves, :class:`~flowkit.exceptions.UnknownChoice` (a
    :class:`~flowkit.exceptions.NotFound`, as in TaskFlow).  Both are also
    ValueErrors.
    """
    if isinstance(conf, str):
        conf = {"connection": conf}
    url = conf.get("connection")
    if url in ("dir", "file", "memory"):  # TaskFlow's spelling: the kind alone, its options beside it
        url = "%s://" % (url,)
    if not isinstance(url, str) or "://" not in url:
        if not isinstance(url, str):
            raise MissingConnection("persistence conf needs a 'connection' URL like 'memory://', got %r" % (url,))
        raise UnknownChoice("persistence conf needs a 'connection' URL like 'memory://', got %r" % (url,))
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    limit = {"max_result_bytes": conf["max_result_bytes"]} if "max_result_bytes" in conf else {}
    if scheme == "memory":
        return MemoryBackend(dict(conf), **limit)
    if scheme in ("dir", "file"):
        from flowkit.persistence.backends.impl_dir import DirBackend

        return DirBackend({**conf, "connection": url}, **limit)
    if scheme in _SQL_SCHEMES:
        from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend

        options = {key: conf[key] for key in _SQL_OPTIONS if key in conf}
        return SQLAlchemyBackend(url, **options, **limit)
    raise UnknownChoice(
        "no persistence backend for %r (known: memory://, dir:///path, sqlite:///path, postgresql://..., mysql://...)"
        % (url,)
    )


@contextlib.contextmanager
def backend(conf: Mapping[str, Any] | str) -> Iterator[Backend]:
    """``with backend(conf) as b:`` a backend from :func:`fetch`, its schema upgraded, closed on exit.

    TaskFlow's context manager of that name: the schema upgrade is a no-op
    when it is current.
    """
    fetched = fetch(conf)
    try:
        with fetched.get_connection() as conn:
            conn.upgrade()
        yield fetched
    finally:
        fetched.close()


def __getattr__(name: str) -> Any:
    # SQLAlchemyBackend is part of this module's surface but loads SQLAlchemy,
    # so it is imported on first access only.
    if name == "SQLAlchemyBackend":
        from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend

        return SQLAlchemyBackend
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
