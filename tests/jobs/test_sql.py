"""The job board contract on SQLite, PostgreSQL and MySQL, plus what only the SQL board does."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowkit import exceptions as exc
from flowkit.jobs import backends
from flowkit.jobs.backends.impl_sql import SQLJobBoard
from flowkit.jobs.base import JobBoard, JobState
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.persistence.models import FlowDetail, LogBook, TaskDetail
from flowkit.testing.jobboards import JobBoardTests, MakeBoard
from tests.persistence.conftest import drop_tables, unique_prefix


def _factory(url: str, prefix: str) -> Iterator[MakeBoard]:
    made: list[tuple[SQLJobBoard, SQLAlchemyBackend]] = []

    def make(clock: Callable[[], float] | None = None, lease_ttl: float = 30.0) -> JobBoard:
        persistence = SQLAlchemyBackend(url, table_prefix=prefix)
        board = SQLJobBoard(
            "tests", persistence=persistence, clock=clock or time.time, lease_ttl=lease_ttl, poll_interval=0.02
        )
        made.append((board, persistence))
        return board

    yield make
    for board, persistence in made:
        board.close()
        persistence.close()


class TestSQLiteBoard(JobBoardTests):
    @pytest.fixture
    def make_board(self, tmp_path: Path) -> Iterator[MakeBoard]:
        yield from _factory("sqlite:///%s" % (tmp_path / "jobs.db"), "flowkit_")


@pytest.mark.postgres
class TestPostgresBoard(JobBoardTests):
    @pytest.fixture
    def make_board(self, postgres_url: str) -> Iterator[MakeBoard]:
        prefix = unique_prefix()
        yield from _factory(postgres_url, prefix)
        drop_tables(postgres_url, prefix)


@pytest.mark.mysql
class TestMySQLBoard(JobBoardTests):
    @pytest.fixture
    def make_board(self, mysql_url: str) -> Iterator[MakeBoard]:
        prefix = unique_prefix()
        yield from _factory(mysql_url, prefix)
        drop_tables(mysql_url, prefix)


def _book() -> LogBook:
    book = LogBook(name="order-7")
    fd = FlowDetail(name="flow")
    fd.add(TaskDetail("charge"))
    book.add(fd)
    return book


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sql_board(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLJobBoard]:
    if request.param == "sqlite":
        board = SQLJobBoard("tests", "sqlite:///%s" % (tmp_path / "jobs.db"))
        yield board.connect()
        board.close()
        return
    url = request.getfixturevalue("postgres_url")
    prefix = unique_prefix()
    board = SQLJobBoard("tests", url, table_prefix=prefix)
    yield board.connect()
    board.close()
    drop_tables(url, prefix)


def _orders(board: SQLJobBoard) -> sa.Table:
    orders = sa.Table(
        "%sorders_test" % board.db.table_prefix, sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True)
    )
    orders.create(board.engine, checkfirst=True)
    return orders


class TestTransactionalPost:
    def test_rollback_leaves_no_job_and_no_logbook(self, sql_board: SQLJobBoard) -> None:
        orders = _orders(sql_board)
        book = _book()
        with pytest.raises(RuntimeError, match="handler failed"):
            with sql_board.begin() as conn:
                conn.execute(sa.insert(orders).values(id=1))
                job = sql_board.post("charge", book=book, connection=conn, resources=["order:7"])
                assert job.book_uuid == book.uuid
                raise RuntimeError("handler failed")
        assert list(sql_board.iterjobs()) == []
        with pytest.raises(exc.NotFound):
            sql_board.get_job(job.uuid)
        with sql_board.db.get_connection() as conn2, pytest.raises(exc.NotFound):
            conn2.get_logbook(book.uuid)
        with sql_board.engine.connect() as check:
            assert check.execute(sa.select(sa.func.count()).select_from(orders)).scalar() == 0
        orders.drop(sql_board.engine)

    def test_commit_writes_job_logbook_and_own_rows_together(self, sql_board: SQLJobBoard) -> None:
        orders = _orders(sql_board)
        book = _book()
        with sql_board.begin() as conn:
            conn.execute(sa.insert(orders).values(id=1))
            job = sql_board.post("charge", book=book, details={"store": {"order": 1}}, connection=conn)
            again = sql_board.post("charge", connection=conn, idempotency_key=None)
            assert again.uuid != job.uuid
        assert sql_board.get_job(job.uuid).details == {"store": {"order": 1}}
        stored = sql_board.get_job(job.uuid).book
        assert stored is not None and [fd.name for fd in stored] == ["flow"]
        assert [ad.name for ad in list(stored)[0]] == ["charge"]
        with sql_board.engine.connect() as check:
            assert check.execute(sa.select(sa.func.count()).select_from(orders)).scalar() == 1
        orders.drop(sql_board.engine)

    def test_idempotent_post_inside_a_transaction(self, sql_board: SQLJobBoard) -> None:
        first = sql_board.post("charge", book=_book(), idempotency_key="order-7")
        with sql_board.begin() as conn:
            second = sql_board.post("charge", book=_book(), idempotency_key="order-7", connection=conn)
        assert second.uuid == first.uuid and sql_board.job_count == 1


def test_fetch_builds_each_board(tmp_path: Path) -> None:
    persistence = SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "p.db"))
    board = backends.fetch("b", {"board": "sql", "poll_interval": 0.1}, persistence=persistence)
    assert isinstance(board, SQLJobBoard) and board.db is persistence and board.shares_logbook
    job = board.post("x", book=_book())
    assert board.state_of(job) is JobState.UNCLAIMED
    board.close()
    persistence.close()
    other = backends.fetch("b", {"board": "sql", "url": "sqlite:///%s" % (tmp_path / "own.db")})
    assert isinstance(other, SQLJobBoard) and other.persistence is other.db
    other.close()
    memory = backends.fetch("b", "memory")
    assert type(memory).__name__ == "MemoryJobBoard"
    with pytest.raises(ValueError, match="unknown job board kind"):
        backends.fetch("b", {"board": "zookeeper"})
    with pytest.raises(ValueError, match="poll_interval"):
        backends.fetch("b", {"board": "memory", "poll_interval": 1})


def test_boards_with_different_names_do_not_share_jobs(tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "jobs.db")
    a, b = SQLJobBoard("a", url), SQLJobBoard("b", url)
    job = a.post("x", idempotency_key="k", resources=["r"])
    assert list(b.iterjobs()) == []
    assert b.post("x", idempotency_key="k").uuid != job.uuid
    with pytest.raises(exc.NotFound):
        b.claim(job, "w")
    a.claim(job, "w")
    b.claim(b.post("y", resources=["r"]), "w")  # the same key on another board is another resource
    a.close()
    b.close()


@pytest.mark.parametrize(
    "server",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)],
)
def test_a_board_made_before_migrations_0003_and_0005_is_upgraded(
    server: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from alembic import command
    from alembic.config import Config

    from flowkit.jobs.base import FailureRecord
    from flowkit.persistence._sql.store import MIGRATIONS, normalize_url

    if server == "sqlite":
        url, prefix = "sqlite:///%s" % (tmp_path / "old.db"), "flowkit_"
    else:
        url, prefix = request.getfixturevalue(server + "_url"), unique_prefix()
    # The schema as flowkit 0.1 left it (migrations up to 0002), with a job on it.
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", MIGRATIONS)
            config.attributes["connection"] = conn
            config.attributes["table_prefix"] = prefix
            command.upgrade(config, "0002")
            conn.execute(
                sa.text(
                    "INSERT INTO %sjobs (uuid, board, name, details, priority, created_at, resources, state, token)"
                    " VALUES ('old-job', 'tests', 'old', '{}', 2, 1.0, '[]', 'UNCLAIMED', 0)" % prefix
                )
            )
            columns = {c["name"] for c in sa.inspect(conn).get_columns(prefix + "jobs")}
            assert "attempts" not in columns
        board = SQLJobBoard("tests", url, table_prefix=prefix).connect()
        try:
            assert board.db.schema_revisions()[0] == board.db.schema_revisions()[1]
            assert board.failures_of("old-job") == FailureRecord()
            claim = board.claim("old-job", "c1")
            board.fail("old-job", "c1", "no module named 'app'", token=claim.token, delay=5.0)
            assert board.failures_of("old-job").attempts == 1
            # Migration 0005: parking and outcomes.
            assert board.wake("old-job") is False and not board.status_of("old-job").parked
            indexes = {i["name"] for i in sa.inspect(board.engine).get_indexes(prefix + "jobs")}
            assert prefix + "jobs_board_due_idx" in indexes
            fresh = board.post("new")
            claim = board.claim(fresh, "c1")
            board.park(fresh, "c1", due=None, token=claim.token, reason="signal")
            assert board.wake(fresh) is True
            claim = board.claim(fresh, "c1")
            board.consume(fresh, "c1", token=claim.token, outcome="SUCCESS")
            assert fresh.outcome == "SUCCESS"
        finally:
            board.close()
    finally:
        engine.dispose()
        if server != "sqlite":
            drop_tables(url, prefix)


def test_next_due_reads_the_due_time_index(tmp_path: Path) -> None:
    board = SQLJobBoard("tests", "sqlite:///%s" % (tmp_path / "jobs.db")).connect()
    try:
        for delay in (30.0, 10.0, 20.0):
            board.post("later", delay=delay)
        seen: list[tuple[str, Any]] = []

        def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            seen.append((statement, parameters))

        sa.event.listen(board.engine, "before_cursor_execute", record)
        try:
            due = board.next_due()
        finally:
            sa.event.remove(board.engine, "before_cursor_execute", record)
        assert due is not None and due == pytest.approx(time.time() + 10.0, abs=5.0)
        (statement, parameters), *_ = [(q, p) for q, p in seen if "min(" in q.lower()]
        with board.engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
        assert "flowkit_jobs_board_due_idx" in plan, plan
    finally:
        board.close()
