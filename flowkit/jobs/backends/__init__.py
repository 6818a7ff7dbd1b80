"""Choose a job board: ``fetch("my-board", {"board": "sql"}, persistence=backend)``.

``conf["board"]`` is the kind:

``"memory"``
    jobs in this process (tests, single-process apps).
``"sql"``
    jobs in a SQL database through SQLAlchemy.  ``conf["url"]`` names it; when
    absent the board uses the database of ``persistence`` (a
    :class:`~flowkit.persistence.backends.impl_sqlalchemy.SQLAlchemyBackend`),
    else the SQLite file ``flowkit.db`` in the working directory.
``"redis"``
    jobs in Redis; ``conf["url"]`` defaults to ``redis://127.0.0.1:6379/0``.

Common options: ``lease_ttl`` (seconds, default 30), ``max_details_bytes``
(the largest job ``details`` accepted, as UTF-8 JSON; default 1 MiB).  SQL: ``poll_interval``
(the longest ``wait()`` sleeps between reads, default 0.5), ``table_prefix``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from flowkit.jobs.base import JobBoard
from flowkit.persistence._sql import DEFAULT_SQLITE_URL
from flowkit.persistence.base import Backend

__all__ = ["fetch", "backend", "KINDS", "DEFAULT_REDIS_URL", "DEFAULT_SQLITE_URL"]

#: The board kinds ``fetch`` knows.
KINDS = ("memory", "sql", "redis")

#: Where the Redis board connects when the conf names no URL.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_OPTIONS = {
    "memory": ("lease_ttl", "max_details_bytes"),
    "sql": ("lease_ttl", "max_details_bytes", "poll_interval", "table_prefix"),
    "redis": ("lease_ttl", "max_details_bytes"),
}


def fetch(board_name: str, conf: Mapping[str, Any] | str, *, persistence: Backend | None = None) -> JobBoard:
    """A job board named ``board_name`` as ``conf`` describes (a dict, or just the kind).

    The board name namespaces jobs: boards with different names on one
    database or Redis never see each other's jobs.  Unknown kinds and
    options raise ValueError.
    """
    if isinstance(conf, str):
        conf = {"board": conf}
    kind = conf.get("board")
    if kind not in KINDS:
        raise ValueError("unknown job board kind %r (known: %s)" % (kind, ", ".join(KINDS)))
    unknown = set(conf) - {"board", "url"} - set(_OPTIONS[kind])
    if unknown:
        raise ValueError(
            "unknown option(s) %s for a %s job board (known: url, %s)"
            % (", ".join(sorted(unknown)), kind, ", ".join(_OPTIONS[kind]))
        )
    options: dict[str, Any] = {key: conf[key] for key in _OPTIONS[kind] if key in conf}
    url = conf.get("url")
    if kind == "memory":
        from flowkit.jobs.backends.impl_memory import MemoryJobBoard

        return MemoryJobBoard(board_name, persistence=persistence, **options)
    if kind == "sql":
        from flowkit.jobs.backends.impl_sql import SQLJobBoard

        return SQLJobBoard(board_name, url, persistence=persistence, **options)
    from flowkit.jobs.backends.impl_redis import RedisJobBoard

    return RedisJobBoard(board_name, url or DEFAULT_REDIS_URL, persistence=persistence, **options)


@contextlib.contextmanager
def backend(
    board_name: str, conf: Mapping[str, Any] | str, *, persistence: Backend | None = None
) -> Iterator[JobBoard]:
    """``with backend(name, conf) as board:`` a board from :func:`fetch`, connected, closed on exit.

    TaskFlow's context manager of that name.
    """
    board = fetch(board_name, conf, persistence=persistence)
    try:
        board.connect()
        yield board
    finally:
        board.close()
