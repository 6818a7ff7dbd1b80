"""Read-only commands and ``SQLAlchemyBackend(read_only=True)``: nothing is created, nothing is written.

``flowkit logbooks``, ``flowkit show``, ``flowkit graph --flow-detail`` and ``flowkit jobs list``
on a mistyped path say "no database at PATH" and create no file; on a 0-byte (or foreign) file
they say "not a flowkit database" and leave it as it was; on a server they create no table.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowkit.cli import main
from flowkit.engines import load_from_factory
from flowkit.exceptions import InvalidState, StorageFailure
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend, normalize_url
from flowkit.persistence.models import LogBook
from tests.persistence.conftest import MYSQL_URL, POSTGRES_URL, drop_tables, server_url, unique_prefix
from tests.support import Const

FAKE_UUID = "00000000-0000-0000-0000-000000000000"


def make_pair() -> Any:
    """A two-task flow (module level, so a stored run can be drawn again)."""
    return linear_flow.Flow("pair").add(
        Const(name="a", provides="x", inject={"value": 1}), Const(name="b", inject={"value": 2})
    )


def _read_only_commands(url: str) -> list[list[str]]:
    return [
        ["logbooks", "--backend", url],
        ["show", FAKE_UUID, "--backend", url],
        ["graph", "--flow-detail", FAKE_UUID, "--backend", url],
        ["jobs", "list", "--persistence", url],
        ["plan", FAKE_UUID, "--backend", url],
        ["resume", FAKE_UUID, "--dry-run", "--backend", url],
    ]


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize(
    "command", range(6), ids=["logbooks", "show", "graph", "jobs-list", "plan", "resume-dry-run"]
)
def test_a_mistyped_path_is_reported_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: int
) -> None:
    typo = tmp_path / "flowkti.db"
    argv = _read_only_commands("sqlite:///%s" % typo)[command]
    assert main(argv) == 2
    assert capsys.readouterr().err == "flowkit: no database at %s\n" % (typo,)
    assert _listing(tmp_path) == []  # no database, no -wal/-shm, no lock directory


@pytest.mark.parametrize(
    "command", range(6), ids=["logbooks", "show", "graph", "jobs-list", "plan", "resume-dry-run"]
)
def test_an_empty_file_is_not_a_flowkit_database_and_stays_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: int
) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    argv = _read_only_commands("sqlite:///%s" % empty)[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "flowkit: not a flowkit database (schema version none): %s has no flowkit tables flowkit_*\n" % (
        empty,
    )
    assert empty.stat().st_size == 0
    assert _listing(tmp_path) == ["empty.db"]


def test_a_file_that_is_not_sqlite_is_not_a_flowkit_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n" * 200)
    before = notes.read_bytes()
    assert main(["logbooks", "--backend", "sqlite:///%s" % notes]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowkit: not a flowkit database (cannot read a schema version from %s: " % (notes,))
    assert "file is not a database" in err
    assert notes.read_bytes() == before


def test_an_older_schema_is_reported_with_its_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from alembic import command
    from alembic.config import Config

    from flowkit.persistence._sql.store import MIGRATIONS

    path = tmp_path / "old.db"
    engine = sa.create_engine("sqlite:///%s" % path)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        config.attributes["connection"] = conn
        config.attributes["table_prefix"] = "flowkit_"
        command.upgrade(config, "0001")  # the logbook tables, before the job board's migration
    engine.dispose()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["logbooks", "--backend", "sqlite:///%s" % path]) == 2
    err = capsys.readouterr().err
    assert "is at schema version 0001, older than this flowkit's 0006" in err
    assert "opening it for writing upgrades it" in err
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_read_only_commands_read_a_flowkit_database_without_changing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "flows.db"
    url = "sqlite:///%s" % path
    with fetch(url) as backend:
        engine = load_from_factory(make_pair, backend=backend)
        engine.run()
        uuid = engine.flow_detail.uuid
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["logbooks", "--backend", url]) == 0
    assert uuid in capsys.readouterr().out
    assert main(["show", uuid, "--backend", url]) == 0
    assert "SUCCESS" in capsys.readouterr().out
    assert main(["graph", "--flow-detail", uuid, "--backend", url]) == 0
    assert 'label="a\\nSUCCESS"' in capsys.readouterr().out
    assert main(["jobs", "list", "--persistence", url]) == 0
    assert capsys.readouterr().out == "no unfinished jobs (--all lists finished ones too)\n"
    assert main(["plan", uuid, "--backend", url]) == 0
    assert "outcome if nothing fails: SUCCESS" in capsys.readouterr().out
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_a_read_only_backend_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "flows.db"
    url = "sqlite:///%s" % path
    with fetch(url) as writer, writer.get_connection() as conn:
        conn.save_logbook(LogBook(name="kept"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    backend = SQLAlchemyBackend(url, read_only=True)
    try:
        conn = backend.get_connection()
        assert [book.name for book in conn.get_logbooks()] == ["kept"]
        with pytest.raises(InvalidState, match=r"cannot write .*logbook 'new'.* was opened read-only"):
            conn.save_logbook(LogBook(name="new"))
        with pytest.raises(InvalidState, match="opened read-only"):
            conn.clear_all()
        conn.close()  # the refused write is not kept to be refused again
        # The file itself is opened read-only: even SQL that bypasses the backend cannot write.
        with pytest.raises(sa.exc.OperationalError, match="readonly"), backend.engine.begin() as raw:
            raw.execute(sa.text("DELETE FROM flowkit_logbooks"))
    finally:
        backend.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


SERVERS = [pytest.param("postgresql", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]


def _server(kind: str) -> str:
    # skips, or fails under CI=true, when the server is unreachable
    if kind == "postgresql":
        return server_url(POSTGRES_URL, "PostgreSQL", "FLOWKIT_TEST_POSTGRES_URL")
    return server_url(MYSQL_URL, "MySQL", "FLOWKIT_TEST_MYSQL_URL")


def _tables_with(url: str, prefix: str) -> list[str]:
    engine = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool)
    try:
        return sorted(name for name in sa.inspect(engine).get_table_names() if name.startswith(prefix))
    finally:
        engine.dispose()


@pytest.mark.parametrize("server", SERVERS)
def test_a_server_without_the_schema_gets_no_tables(server: str) -> None:
    url = _server(server)
    prefix = unique_prefix()
    backend = SQLAlchemyBackend(url, table_prefix=prefix, read_only=True)
    try:
        conn = backend.get_connection()
        with pytest.raises(StorageFailure, match=r"not a flowkit database \(schema version none\)") as raised:
            list(conn.get_logbooks())
        assert prefix in str(raised.value)
        with pytest.raises(StorageFailure, match="schema version none"):
            conn.upgrade()
        with pytest.raises(InvalidState, match="opened read-only"):
            conn.save_logbook(LogBook(name="new"))
    finally:
        backend.close()
        leftover = _tables_with(url, prefix)
        drop_tables(url, prefix)
    assert leftover == []


@pytest.mark.parametrize("server", SERVERS)
def test_a_read_only_server_session_refuses_writes(server: str) -> None:
    url = _server(server)
    prefix = unique_prefix()
    try:
        with SQLAlchemyBackend(url, table_prefix=prefix) as writer, writer.get_connection() as conn:
            conn.save_logbook(LogBook(name="kept"))
        backend = SQLAlchemyBackend(url, table_prefix=prefix, read_only=True)
        try:
            assert [book.name for book in backend.get_connection().get_logbooks()] == ["kept"]
            # Not just the backend: the server session itself is read-only.
            with pytest.raises(sa.exc.DBAPIError, match="(?i)read.only"), backend.engine.begin() as raw:
                raw.execute(sa.text("DELETE FROM %slogbooks" % prefix))
        finally:
            backend.close()
        with SQLAlchemyBackend(url, table_prefix=prefix) as writer:
            assert [book.name for book in writer.get_connection().get_logbooks()] == ["kept"]
    finally:
        drop_tables(url, prefix)

