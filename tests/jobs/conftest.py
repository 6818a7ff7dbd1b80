"""Servers for the job board tests: PostgreSQL, MySQL (as in tests/persistence) and Redis.

Redis comes from ``FLOWKIT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).  An
unreachable server skips its tests with the reason, except under ``CI=true``, where it fails
them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit.jobs.backends.impl_memory import MemoryJobBoard
from flowkit.jobs.backends.impl_redis import RedisJobBoard
from flowkit.jobs.backends.impl_sql import SQLJobBoard
from flowkit.jobs.base import JobBoard
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from tests.persistence.conftest import mysql_url, postgres_url, server_url  # noqa: F401  (fixtures)
from tests.support import unavailable

REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_redis_reason: dict[str, str | None] = {}


@pytest.fixture
def redis_url() -> str:
    """The Redis test server's URL (skips or fails when unreachable)."""
    if REDIS_URL not in _redis_reason:
        try:
            import redis

            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
            try:
                client.ping()
            finally:
                client.close()
            _redis_reason[REDIS_URL] = None
        except Exception as error:
            _redis_reason[REDIS_URL] = "%s: %s" % (
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
    reason = _redis_reason[REDIS_URL]
    if reason is not None:
        message = "Redis at %s is unreachable (%s); set FLOWKIT_TEST_REDIS_URL to a reachable server" % (
            REDIS_URL,
            reason,
        )
        unavailable(message)
    return REDIS_URL


@pytest.fixture(params=["memory", "sql", pytest.param("redis", marks=pytest.mark.redis)])
def any_board(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobBoard]:
    """A fresh board of each kind (memory, SQL, Redis), its logbook an SQLite file."""
    persistence = SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "logbooks.db"))
    made: JobBoard
    if request.param == "memory":
        made = MemoryJobBoard("b", persistence=persistence)
    elif request.param == "sql":
        made = SQLJobBoard("b", persistence=persistence)
    else:
        url = request.getfixturevalue("redis_url")
        made = RedisJobBoard("test-%s" % uuid.uuid4().hex[:12], url, persistence=persistence)
    try:
        yield made
    finally:
        if isinstance(made, RedisJobBoard):
            made.clear()
        made.close()
        persistence.close()
