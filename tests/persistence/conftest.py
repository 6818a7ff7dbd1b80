"""Database servers and backends for the persistence tests.

PostgreSQL and MySQL come from ``FLOWKIT_TEST_POSTGRES_URL`` and
``FLOWKIT_TEST_MYSQL_URL`` (defaults: the servers on this machine).  An
unreachable server skips its tests with the reason, except under ``CI=true``,
where it fails them: CI must never pass by skipping the real databases.

Each SQL test gets its own table prefix and drops its tables afterwards, so
runs (e.g. two tox environments one after the other) never see each other's
rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend, normalize_url
from tests.support import unavailable

POSTGRES_URL = os.environ.get("FLOWKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("FLOWKIT_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

_reachable: dict[str, str | None] = {}


def _unreachable_reason(url: str) -> str | None:
    if url not in _reachable:
        engine = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reachable[url] = None
        except Exception as error:
            _reachable[url] = "%s: %s" % (type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        finally:
            engine.dispose()
    return _reachable[url]


def server_url(url: str, what: str, env: str) -> str:
    """``url`` if its server answers; else skip (fail under CI=true) naming the server and why."""
    reason = _unreachable_reason(url)
    if reason is not None:
        message = "%s at %s is unreachable (%s); set %s to a reachable server" % (
            what,
            sa.make_url(url).render_as_string(hide_password=True),
            reason,
            env,
        )
        unavailable(message)
    return url


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL test server's URL (skips or fails when unreachable)."""
    return server_url(POSTGRES_URL, "PostgreSQL", "FLOWKIT_TEST_POSTGRES_URL")


@pytest.fixture(
    params=[pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]
)
def server_url_of(request: pytest.FixtureRequest) -> str:
    """Each database server's URL in turn (PostgreSQL, then MySQL), as ``postgres_url`` and ``mysql_url`` give it."""
    return str(request.getfixturevalue("postgres_url" if request.param == "postgres" else "mysql_url"))


@pytest.fixture
def mysql_url() -> str:
    """The MySQL/MariaDB test server's URL (skips or fails when unreachable)."""
    return server_url(MYSQL_URL, "MySQL", "FLOWKIT_TEST_MYSQL_URL")


def unique_prefix() -> str:
    """A table prefix no other test uses."""
    return "t%s_" % uuid.uuid4().hex[:10]


def drop_tables(url: str, prefix: str) -> None:
    """Drop every table a backend (or job board) with ``prefix`` created in ``url``."""
    from flowkit.persistence._sql.schema import make_tables

    engine = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool)
    try:
        tables = make_tables(prefix)
        with engine.begin() as conn:
            # The reconciler's (0006) and the job board's tables (0002) first: nothing references them.
            conn.execute(sa.text("DROP TABLE IF EXISTS %sresource_operations" % prefix))
            conn.execute(sa.text("DROP TABLE IF EXISTS %sresources" % prefix))
            conn.execute(sa.text("DROP TABLE IF EXISTS %sjob_locks" % prefix))
            conn.execute(sa.text("DROP TABLE IF EXISTS %sjobs" % prefix))
            tables.metadata.drop_all(conn)
            conn.execute(sa.text("DROP TABLE IF EXISTS %salembic_version" % prefix))
    finally:
        engine.dispose()


BackendFactory = Callable[..., SQLAlchemyBackend]


@pytest.fixture
def sql_backend_factory() -> Iterator[Callable[[str], SQLAlchemyBackend]]:
    """``make(url, **options)``: a backend with a fresh table prefix, closed and dropped afterwards."""
    made: list[tuple[SQLAlchemyBackend, str, str]] = []

    def make(url: str, **options: Any) -> SQLAlchemyBackend:
        prefix = options.pop("table_prefix", None) or unique_prefix()
        backend = SQLAlchemyBackend(url, table_prefix=prefix, **options)
        made.append((backend, url, prefix))
        return backend

    yield make
    for backend, url, prefix in made:
        backend.close()
        if not url.startswith("sqlite"):
            drop_tables(url, prefix)
