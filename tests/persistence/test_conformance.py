"""Every persistence backend passes the same contract suite (flowkit.testing.persistence)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowkit.persistence.backends import MemoryBackend
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.persistence.base import Backend
from flowkit.testing.persistence import PersistenceBackendTests


class TestMemory(PersistenceBackendTests):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        backend = MemoryBackend()
        yield backend
        backend.close()


class TestSQLiteFile(PersistenceBackendTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        backend = SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "logbook.db"))
        yield backend
        backend.close()


class TestSQLiteFullDurability(PersistenceBackendTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        backend = SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "logbook.db"), durability="full")
        yield backend
        backend.close()


class TestSQLiteMemory(PersistenceBackendTests):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        backend = SQLAlchemyBackend("sqlite://")
        yield backend
        backend.close()


@pytest.mark.postgres
class TestPostgres(PersistenceBackendTests):
    @pytest.fixture
    def backend(self, postgres_url: str, sql_backend_factory: Callable[..., SQLAlchemyBackend]) -> Backend:
        return sql_backend_factory(postgres_url)


@pytest.mark.mysql
class TestMySQL(PersistenceBackendTests):
    @pytest.fixture
    def backend(self, mysql_url: str, sql_backend_factory: Callable[..., SQLAlchemyBackend]) -> Backend:
        return sql_backend_factory(mysql_url)


class TestDirectory(PersistenceBackendTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        from flowkit.persistence.backends.impl_dir import DirBackend

        backend = DirBackend(tmp_path / "logbooks")
        yield backend
        backend.close()
