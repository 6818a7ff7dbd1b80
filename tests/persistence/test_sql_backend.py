"""What only the SQL backend promises: URLs, SQLite settings, JSON storage, errors, group commit, concurrency."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from flowkit import engines, states
from flowkit import exceptions as exc
from flowkit.patterns import linear_flow, unordered_flow
from flowkit.persistence._sql._libpq import text_parameters
from flowkit.persistence.backends import MemoryBackend, fetch
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend, normalize_url
from flowkit.persistence.base import Connection
from flowkit.persistence.models import AtomDetail, FlowDetail, LogBook, TaskDetail
from flowkit.task import Task
from tests.support import wait_until


class Echo(Task):
    """Return the task's name."""

    def execute(self) -> str:
        return self.name


def _book(atoms: int = 1) -> LogBook:
    book = LogBook(name="b")
    fd = FlowDetail(name="f")
    for i in range(atoms):
        fd.add(TaskDetail("a%d" % i))
    book.add(fd)
    return book


def _saved_atom(backend: SQLAlchemyBackend) -> tuple[Connection, AtomDetail]:
    """A connection of ``backend`` that saved a logbook of one atom detail, and that atom detail."""
    book = _book()
    conn = backend.get_connection()
    conn.save_logbook(book)
    return conn, next(iter(next(iter(book))))


def test_fetch_routes_urls(tmp_path: Path) -> None:
    with fetch({"connection": "sqlite:///%s" % (tmp_path / "x.db"), "durability": "full"}) as backend:
        assert isinstance(backend, SQLAlchemyBackend) and backend.durability == "full"
    assert isinstance(fetch("memory://"), MemoryBackend)
    with pytest.raises(ValueError, match="sqlite:///path"):
        fetch("nosuch://x")


def test_plain_schemes_use_maintained_drivers() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    mysql = normalize_url("mysql://u@h/db")
    assert mysql.drivername == "mysql+pymysql" and mysql.query["charset"] == "utf8mb4"
    assert normalize_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"


def test_durability_is_checked() -> None:
    with pytest.raises(ValueError, match="durability"):
        SQLAlchemyBackend("sqlite://", durability="fast")


@pytest.mark.parametrize(("durability", "synchronous"), [("normal", 1), ("full", 2)])
def test_sqlite_settings(tmp_path: Path, durability: str, synchronous: int) -> None:
    with SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "x.db"), durability=durability) as backend:
        with backend.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == synchronous
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000


def test_values_are_stored_as_json_text(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    book = _book()
    ad = next(iter(next(iter(book))))
    ad.results = {"k": [1, "two"]}
    with SQLAlchemyBackend("sqlite:///%s" % path) as backend:
        with backend.get_connection() as conn:
            conn.save_logbook(book)
    raw = sqlite3.connect(path)
    try:
        (results, meta) = raw.execute("SELECT results, meta FROM flowkit_atomdetails").fetchone()
    finally:
        raw.close()
    assert json.loads(results) == {"k": [1, "two"]} and json.loads(meta) == {}


@pytest.mark.mysql
def test_mysql_json_columns_hold_megabytes(
    mysql_url: str, sql_backend_factory: Callable[..., SQLAlchemyBackend]
) -> None:
    backend = sql_backend_factory(mysql_url)
    backend.upgrade()
    columns = {
        c["name"]: c["type"] for c in sa.inspect(backend.engine).get_columns(backend.table_prefix + "atomdetails")
    }
    for name in ("results", "failure", "revert_results", "revert_failure", "meta"):
        assert "LONGTEXT" in str(columns[name]).upper(), (name, columns[name])


def test_failed_write_names_what_and_keeps_it_for_the_next_flush(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with SQLAlchemyBackend("sqlite:///%s" % path, busy_timeout=0.05) as backend:
        book = _book()
        fd = next(iter(book))
        ad = next(iter(fd))
        conn = backend.get_connection()
        conn.save_logbook(book)
        ad.state = states.RUNNING
        conn.update_atom_details(ad)
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(exc.StorageFailure) as caught:
                conn.flush()
            message = str(caught.value)
            assert "'a0'" in message and fd.uuid in message and "RUNNING" in message
            assert isinstance(caught.value.__cause__, Exception)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        conn.flush()  # the database is writable again: the buffered write lands
        with backend.get_connection() as other:
            assert other.get_atom_details(ad.uuid).state == states.RUNNING


@pytest.mark.postgres
@pytest.mark.parametrize("with_flow", [False, True], ids=["atoms-only", "flow-and-atoms"])
def test_a_statement_the_server_refuses_writes_nothing_of_its_transaction(
    postgres_url: str, sql_backend_factory: Callable[..., SQLAlchemyBackend], with_flow: bool
) -> None:
    # Two atom rows alone are written as one statement; with the flow detail's
    # row beside them, as a transaction of several.  PostgreSQL answers COMMIT
    # on an aborted transaction with ROLLBACK and no error: the first row's
    # change must not pass for committed, and the connection must still
    # commit afterwards.
    backend = sql_backend_factory(postgres_url)
    book = _book(atoms=2)
    fd = next(iter(book))
    first, second = list(fd)
    conn = backend.get_connection()
    conn.save_logbook(book)
    saved = fd.state
    if with_flow:
        fd.state = states.RUNNING
        conn.update_flow_details(fd)
    first.state = states.SUCCESS
    second.name = "x" * 300  # longer than the column: refused by the server
    conn.update_atom_details(first)
    conn.update_atom_details(second)
    with pytest.raises(exc.StorageFailure) as caught:
        conn.flush()
    assert fd.uuid in str(caught.value)
    with backend.get_connection() as other:
        assert other.get_atom_details(first.uuid).state == states.PENDING
        assert other.get_atom_details(second.uuid).name == "a1"
        assert other.get_flow_details(fd.uuid).state == saved
    second.name = "a1"
    conn.flush()  # the buffered writes land, through the same backend
    with backend.get_connection() as other:
        assert other.get_atom_details(first.uuid).state == states.SUCCESS
        assert other.get_flow_details(fd.uuid).state == (states.RUNNING if with_flow else saved)


# (the SQL of) this session's id, ending another session, and whether a session is still there.
_SESSIONS = {
    "postgresql": (
        "SELECT pg_backend_pid()",
        "SELECT pg_terminate_backend(:p)",
        "SELECT count(*) FROM pg_stat_activity WHERE pid = :p",
    ),
    "mysql": ("SELECT CONNECTION_ID()", "KILL :p", "SELECT count(*) FROM information_schema.processlist WHERE id = :p"),
}


def _end_session(url: str, session: int) -> None:
    """End database session ``session`` of ``url``'s server from another one, and wait until it is gone."""
    engine = sa.create_engine(normalize_url(url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    postgres = engine.dialect.name == "postgresql"
    _which, end, present = _SESSIONS["postgresql" if postgres else "mysql"]
    try:
        # Autocommit: in a transaction, pg_stat_activity would keep showing its first snapshot.
        with engine.connect() as admin:
            ended = admin.execute(sa.text(end), {"p": session})
            if postgres:
                assert ended.scalar(), "pg_terminate_backend found no session %d" % (session,)
            wait_until(lambda: admin.execute(sa.text(present), {"p": session}).scalar() == 0, what="the session to end")
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_writer_whose_session_was_killed_while_idle_writes_on_a_new_one(
    postgres_url: str, sql_backend_factory: Callable[..., SQLAlchemyBackend]
) -> None:
    backend = sql_backend_factory(postgres_url)
    conn, ad = _saved_atom(backend)
    ad.state = states.RUNNING
    conn.update_atom_details(ad)
    conn.flush()
    _end_session(postgres_url, backend._writer.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]
    ad.state = states.SUCCESS
    conn.update_atom_details(ad)
    conn.flush()
    with backend.get_connection() as other:
        assert other.get_atom_details(ad.uuid).state == states.SUCCESS


@pytest.mark.postgres
def test_a_session_that_lost_its_prepared_statements_prepares_them_again(
    postgres_url: str, sql_backend_factory: Callable[..., SQLAlchemyBackend]
) -> None:
    # A step's upsert is prepared once per session; DISCARD ALL (a pooler
    # resetting the session, say) drops it without closing the session.
    backend = sql_backend_factory(postgres_url)
    conn, ad = _saved_atom(backend)
    ad.state = states.RUNNING
    conn.update_atom_details(ad)
    conn.flush()
    raw = backend._writer.connection.dbapi_connection  # type: ignore[union-attr]
    prepared = "SELECT count(*) FROM pg_prepared_statements WHERE starts_with(name, 'flowkit_')"
    raw.autocommit = True  # leave the session idle, as the writer keeps it
    assert raw.execute(prepared).fetchone()[0] == 1
    raw.execute("DISCARD ALL")
    assert raw.execute(prepared).fetchone()[0] == 0
    raw.autocommit = False
    ad.state, ad.results = states.SUCCESS, "done"
    conn.update_atom_details(ad)
    conn.flush()
    with backend.get_connection() as other:
        assert other.get_atom_details(ad.uuid).results == "done"


@pytest.mark.postgres
def test_two_backends_on_one_engine_write_through_the_same_session(
    postgres_url: str, sql_backend_factory: Callable[..., SQLAlchemyBackend]
) -> None:
    # The second finds the step's statement already prepared on the session
    # the first used: it uses it.
    reader = sql_backend_factory(postgres_url)  # makes the tables, drops them afterwards
    engine = sa.create_engine(normalize_url(postgres_url), pool_size=1, max_overflow=0)
    sessions, written = [], {}
    try:
        for results in ("first", "second"):
            backend = SQLAlchemyBackend(engine, table_prefix=reader.table_prefix)
            conn, ad = _saved_atom(backend)
            ad.state, ad.results = states.SUCCESS, results
            conn.update_atom_details(ad)
            conn.flush()
            sessions.append(backend._writer.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]
            written[ad.uuid] = results
            backend.close()
    finally:
        engine.dispose()
    assert sessions[0] == sessions[1]
    with reader.get_connection() as other:
        assert {uuid: other.get_atom_details(uuid).results for uuid in written} == written


@pytest.mark.postgres
def test_a_session_in_another_client_encoding_writes_text_as_the_server_reads_it(
    postgres_url: str, sql_backend_factory: Callable[..., SQLAlchemyBackend]
) -> None:
    # A step's upsert sends its text as UTF-8 only on a session that speaks
    # UTF-8; on another one the driver encodes it.  (A result is JSON, all
    # ASCII; a name is stored as it is.)
    latin1 = normalize_url(postgres_url).update_query_dict({"client_encoding": "LATIN1"})
    backend = sql_backend_factory(latin1.render_as_string(hide_password=False))
    conn, ad = _saved_atom(backend)
    ad.state, ad.name = states.SUCCESS, "déjà vu"
    conn.update_atom_details(ad)
    conn.flush()
    with backend.get_connection() as other:
        assert other.get_atom_details(ad.uuid).name == "déjà vu"
    with SQLAlchemyBackend(postgres_url, table_prefix=backend.table_prefix, create_schema=False) as utf8:
        with utf8.get_connection() as other:
            assert other.get_atom_details(ad.uuid).name == "déjà vu"


def test_step_parameters_are_sent_as_text_only_for_the_types_that_have_one() -> None:
    assert text_parameters(["é", 7, None, -1]) == ["é".encode(), b"7", None, b"-1"]
    for other in (1.5, True, b"x", {"a": 1}):
        assert text_parameters(["a", other]) is None


def test_a_released_flow_lock_session_serves_the_next_run_and_one_that_died_idle_is_replaced(
    server_url_of: str, sql_backend_factory: Callable[..., SQLAlchemyBackend]
) -> None:
    url = server_url_of
    backend = sql_backend_factory(url)
    which = _SESSIONS["postgresql" if backend.dialect == "postgresql" else "mysql"][0]

    def session_of_a_lock() -> int:
        lock = backend.lock_flow(FlowDetail(name="f"), "flow detail f")
        assert lock is not None and lock.connection is not None
        with lock.mutex:
            session = int(lock.connection.execute(sa.text(which)).scalar())  # type: ignore[arg-type]
        lock.release()
        return session

    first = session_of_a_lock()
    assert session_of_a_lock() == first  # kept open for the next run, not opened again
    _end_session(url, first)
    assert session_of_a_lock() != first
    engine = engines.load(linear_flow.Flow("f").add(Echo("a"), Echo("b")), backend=backend)
    engine.run()
    with backend.get_connection() as conn:
        assert conn.get_flow_details(engine.flow_detail.uuid).state == states.SUCCESS


def test_validate_reports_a_missing_schema(tmp_path: Path) -> None:
    with SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "x.db"), create_schema=False) as backend:
        with backend.get_connection() as conn:
            with pytest.raises(exc.StorageFailure, match="call upgrade"):
                conn.validate()
            conn.upgrade()
            conn.validate()


def test_unwritable_location_is_a_storage_failure(tmp_path: Path) -> None:
    with SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "missing-dir" / "x.db")) as backend:
        with pytest.raises(exc.StorageFailure, match="missing-dir") as caught:
            backend.get_connection().save_logbook(_book())
    assert caught.value.__cause__ is not None


def _hold_writer_while(backend: SQLAlchemyBackend, flushes: list[Callable[[], None]]) -> list[BaseException]:
    # Hold the writer as a commit in progress would; the flushes queue behind
    # it, in the order given, and then commit together.  Returns what they raised.
    errors: list[BaseException] = []

    def flush(one: Callable[[], None]) -> None:
        try:
            one()
        except BaseException as error:
            errors.append(error)

    threads = []
    with backend._write_lock:
        for queued, one in enumerate(flushes, 1):
            threads.append(threading.Thread(target=flush, args=(one,)))
            threads[-1].start()
            wait_until(lambda n=queued: len(backend._queue) >= n, "flush %d to queue behind the writer" % (queued,))
    for thread in threads:
        thread.join(30)
    return errors


def test_concurrent_flushes_share_one_commit(tmp_path: Path) -> None:
    with SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "x.db")) as backend:
        books = [_book() for _ in range(3)]
        conns = [backend.get_connection() for _ in books]
        for conn, book in zip(conns, books):
            conn.save_logbook(book)
            ad = next(iter(next(iter(book))))
            ad.state = states.SUCCESS
            conn.update_atom_details(ad)
        before = backend.commits
        assert not _hold_writer_while(backend, [conn.flush for conn in conns])
        assert backend.commits == before + 1
        with backend.get_connection() as other:
            for book in books:
                assert all(ad.state == states.SUCCESS for fd in other.get_logbook(book.uuid) for ad in fd)


@pytest.mark.postgres
def test_two_writers_of_one_atom_detail_in_one_commit_leave_the_later_write(
    postgres_url: str, sql_backend_factory: Callable[..., SQLAlchemyBackend]
) -> None:
    # A commit of one kind of rows is one multi-row upsert on PostgreSQL,
    # which may not touch a row twice; the same atom detail written by two
    # connections in one group commit must still land, as two upserts in
    # order would leave it.
    backend = sql_backend_factory(postgres_url)
    book = _book(atoms=2)
    first, second = backend.get_connection(), backend.get_connection()
    first.save_logbook(book)
    ad = next(iter(next(iter(book))))
    mine = second.get_atom_details(ad.uuid)
    ad.state, ad.results = states.SUCCESS, "first"
    first.update_atom_details(ad)
    mine.state, mine.results = states.SUCCESS, "second"
    second.update_atom_details(mine)
    before = backend.commits
    assert not _hold_writer_while(backend, [first.flush, second.flush])
    assert backend.commits == before + 1
    with backend.get_connection() as other:
        assert other.get_atom_details(ad.uuid).results == "second"


@pytest.mark.parametrize("shared", [True, False], ids=["one-backend", "backend-per-engine"])
def test_parallel_engines_on_one_sqlite_file(tmp_path: Path, shared: bool) -> None:
    url = "sqlite:///%s" % (tmp_path / "x.db")
    backends = [SQLAlchemyBackend(url)] if shared else [SQLAlchemyBackend(url) for _ in range(6)]
    try:
        backends[0].upgrade()
        errors: list[BaseException] = []
        done: list[str] = []

        def run(i: int) -> None:
            flow = unordered_flow.Flow("u%d" % i).add(*(Echo("u%d-%d" % (i, j)) for j in range(25)))
            try:
                engine = engines.load(flow, backend=backends[i % len(backends)], engine="parallel", max_workers=3)
                engine.run()
                done.append(engine.flow_detail.uuid)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        with backends[0].get_connection() as conn:
            for uuid in done:
                fd = conn.get_flow_details(uuid)
                assert fd.state == states.SUCCESS and all(ad.results == ad.name for ad in fd)
        assert len(done) == 6
    finally:
        for backend in backends:
            backend.close()


def test_linear_flow_writes_one_transaction_per_step(tmp_path: Path) -> None:
    # Group commit inside one engine: an atom's SUCCESS and its successor's
    # RUNNING travel together, so a chain of N tasks costs about N commits.
    with SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "x.db")) as backend:
        flow = linear_flow.Flow("chain").add(*(Echo("c%d" % i) for i in range(50)))
        engine = engines.load(flow, backend=backend)
        engine.prepare()
        before = backend.commits
        engine.run()
        assert backend.commits - before <= 50 + 3
