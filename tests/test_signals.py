"""``flowkit.signals``: what send() refuses before storing, wake-ups in this process, the 0004 migration.

The storage contract itself (one signal per flow detail and name, keys,
ordering, races) is in the conformance suite, ``flowkit.testing.persistence``.
"""

from __future__ import annotations

import datetime
import decimal
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowkit import exceptions as exc
from flowkit import signals
from flowkit.persistence import codec
from flowkit.persistence.backends import MemoryBackend
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.testing.clock import VirtualClock
from flowkit.types.failure import Failure
from tests.persistence.conftest import drop_tables, mysql_url, postgres_url, unique_prefix  # noqa: F401  (fixtures)
from tests.support import wait_until


@pytest.fixture
def backend() -> Iterator[Backend]:
    backend = MemoryBackend()
    yield backend
    backend.close()


def saved_flow(backend: Backend) -> FlowDetail:
    book = LogBook(name="orders")
    fd = FlowDetail(name="order")
    book.add(fd)
    with backend.get_connection() as conn:
        conn.save_logbook(book)
    return fd


def _failure() -> Failure:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return Failure()


# -- what send() refuses, before anything is stored ------------------------------------------


@pytest.mark.parametrize(
    "value, error, shown",
    [
        ({"at": datetime.datetime(2026, 1, 1)}, TypeError, r"value\['at'\] is a datetime.datetime"),
        ([1, {2, 3}], TypeError, r"value\[1\] is a builtins.set"),
        ({1: "a"}, TypeError, r"has a key 1 of type int"),
        (decimal.Decimal("1.5"), TypeError, r"is a decimal.Decimal"),
        (b"bytes", TypeError, r"is a builtins.bytes"),
        ({"nested": [float("nan")]}, ValueError, r"value\['nested'\]\[0\] is nan"),
        (float("inf"), ValueError, r"value is inf"),
        ({codec.FAILURE_KEY: {}}, ValueError, "would read back as a captured Failure"),
    ],
    ids=["datetime", "set", "int-key", "decimal", "bytes", "nan", "inf", "failure-tag"],
)
def test_a_value_that_is_not_plain_json_is_refused(
    backend: Backend, value: Any, error: type[Exception], shown: str
) -> None:
    fd = saved_flow(backend)
    with pytest.raises(error, match=shown) as raised:
        signals.send(backend, fd.uuid, "approved", value)
    assert "signal 'approved' for flow detail %s" % fd.uuid in str(raised.value)
    assert signals.get(backend, fd.uuid) == {}


def test_failures_and_registered_types_are_refused_too(backend: Backend) -> None:
    # Storable as results, but a signal is plain JSON that any sender can write and any reader read.
    fd = saved_flow(backend)
    with pytest.raises(TypeError, match="Failure, which is not JSON data"):
        signals.send(backend, fd.uuid, "approved", [_failure()])
    codec.register_type(decimal.Decimal, "test-decimal", str, decimal.Decimal)
    try:
        with pytest.raises(TypeError, match="decimal.Decimal"):
            signals.send(backend, fd.uuid, "approved", decimal.Decimal("2"))
    finally:
        codec.unregister_type("test-decimal")
    assert signals.get(backend, fd.uuid) == {}


def test_values_are_stored_as_they_read_back(backend: Backend) -> None:
    fd = saved_flow(backend)
    value = {"ids": (1, 2), "ok": True, "ratio": 0.5, "who": None}
    assert signals.send(backend, fd.uuid, "approved", value) is True
    value["ids"] = (3,)  # the sender's object is not what is stored
    assert signals.get(backend, fd.uuid) == {"approved": {"ids": [1, 2], "ok": True, "ratio": 0.5, "who": None}}


def test_a_value_over_the_limit_is_refused(backend: Backend) -> None:
    fd = saved_flow(backend)
    fitting = "x" * (signals.MAX_SIGNAL_BYTES - 2)  # its two quotes make it exactly the limit
    with pytest.raises(
        ValueError,
        match=r"%d bytes as JSON, more than the %d" % (signals.MAX_SIGNAL_BYTES + 1, signals.MAX_SIGNAL_BYTES),
    ):
        signals.send(backend, fd.uuid, "big", fitting + "x")
    assert signals.send(backend, fd.uuid, "big", fitting) is True


def test_the_backends_result_limit_applies_when_smaller(backend: Backend) -> None:
    small = MemoryBackend(max_result_bytes=100)
    fd = saved_flow(small)
    with pytest.raises(ValueError, match="102 bytes as JSON, more than the 100"):
        signals.send(small, fd.uuid, "approved", "y" * 100)
    assert signals.get(small, fd.uuid) == {}


@pytest.mark.parametrize(
    "name, error",
    [("", TypeError), (None, TypeError), ("x" * 256, exc.InvalidName), ("a\x00b", exc.InvalidName)],
    ids=["empty", "none", "too-long", "nul"],
)
def test_a_bad_signal_name_is_refused(backend: Backend, name: Any, error: type[Exception]) -> None:
    fd = saved_flow(backend)
    with pytest.raises(error, match="signal name"):
        signals.send(backend, fd.uuid, name, 1)
    with backend.get_connection() as conn:
        assert conn.signals_after(0) == []


@pytest.mark.parametrize(
    "key, error, shown",
    [("", TypeError, "non-empty str"), (7, TypeError, "non-empty str"), ("k" * 256, ValueError, "256 characters")],
    ids=["empty", "int", "too-long"],
)
def test_a_bad_idempotency_key_is_refused(backend: Backend, key: Any, error: type[Exception], shown: str) -> None:
    fd = saved_flow(backend)
    with pytest.raises(error, match=shown):
        signals.send(backend, fd.uuid, "approved", 1, idempotency_key=key)
    assert signals.get(backend, fd.uuid) == {}
    assert signals.send(backend, fd.uuid, "approved", 1, idempotency_key="k" * 255) is True


def test_a_signal_to_an_unknown_flow_detail_is_not_found(backend: Backend) -> None:
    with pytest.raises(exc.NotFound, match="no-such-flow"):
        signals.send(backend, "no-such-flow", "approved")


def test_the_clock_says_when_it_was_sent(backend: Backend) -> None:
    fd = saved_flow(backend)
    clock = VirtualClock(datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc).timestamp())
    signals.send(backend, fd.uuid, "approved", clock=clock)
    clock.advance(3600)
    with pytest.raises(exc.SignalAlreadySent, match="sent at 2030-05-06T07:08:09.000Z"):
        signals.send(backend, fd.uuid, "approved", clock=clock)


def test_the_same_key_again_returns_false(backend: Backend) -> None:
    fd = saved_flow(backend)
    assert signals.send(backend, fd.uuid, "approved", 1, idempotency_key="ticket-7") is True
    assert signals.send(backend, fd.uuid, "approved", 2, idempotency_key="ticket-7") is False
    with pytest.raises(exc.SignalAlreadySent, match="another idempotency key"):
        signals.send(backend, fd.uuid, "approved", 2, idempotency_key="ticket-8")
    assert signals.get(backend, fd.uuid) == {"approved": 1}
    assert signals.get(backend, fd.uuid, ["approved", "other"]) == {"approved": 1}
    with pytest.raises(TypeError, match=r"pass \['approved'\]"):
        signals.get(backend, fd.uuid, "approved")


# -- waking waiters in this process -------------------------------------------------------------


def test_subscribers_of_the_flow_are_called_once_it_is_stored(backend: Backend) -> None:
    fd, other = saved_flow(backend), saved_flow(backend)
    seen: list[tuple[str, dict[str, Any]]] = []
    woken = threading.Event()

    def wake(uuid: str) -> Any:
        def callback() -> None:
            # Called after the signal is stored: the waiter reads it itself.
            seen.append((uuid, signals.get(backend, uuid)))
            woken.set()

        return callback

    unsubscribe = signals.subscribe(fd.uuid, wake(fd.uuid))
    unsubscribe_other = signals.subscribe(other.uuid, wake(other.uuid))
    try:
        sender = threading.Thread(target=signals.send, args=(backend, fd.uuid, "approved", {"by": "ann"}))
        sender.start()
        assert woken.wait(30)
        sender.join(30)
        assert seen == [(fd.uuid, {"approved": {"by": "ann"}})]
        # A no-op send (the same key) and a refused one wake nobody.
        signals.send(backend, fd.uuid, "keyed", 1, idempotency_key="k")
        signals.send(backend, fd.uuid, "keyed", 1, idempotency_key="k")
        with pytest.raises(exc.SignalAlreadySent):
            signals.send(backend, fd.uuid, "approved", 2)
        assert [uuid for uuid, _ in seen] == [fd.uuid, fd.uuid]
    finally:
        unsubscribe()
        unsubscribe_other()
    unsubscribe()  # idempotent
    signals.send(backend, fd.uuid, "after", 1)
    assert len(seen) == 2


def test_a_failing_subscriber_is_logged_and_the_others_still_run(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    fd = saved_flow(backend)
    called: list[str] = []

    def broken() -> None:
        raise RuntimeError("subscriber broke")

    unsubscribers = [signals.subscribe(fd.uuid, broken), signals.subscribe(fd.uuid, lambda: called.append("ok"))]
    try:
        with caplog.at_level(logging.ERROR, logger="flowkit.signals"):
            assert signals.send(backend, fd.uuid, "approved") is True
    finally:
        for unsubscribe in unsubscribers:
            unsubscribe()
    assert called == ["ok"]
    assert any(fd.uuid in record.getMessage() and record.exc_info for record in caplog.records)


def test_subscribe_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        signals.subscribe("some-flow", "not callable")  # type: ignore[arg-type]


# -- the 0004 migration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)],
)
def test_a_logbook_made_before_migration_0004_is_upgraded(
    server: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from alembic import command
    from alembic.config import Config

    from flowkit.persistence._sql.store import MIGRATIONS, normalize_url

    if server == "sqlite":
        url, prefix = "sqlite:///%s" % (tmp_path / "old.db"), "flowkit_"
    else:
        url, prefix = request.getfixturevalue(server + "_url"), unique_prefix()
    book = LogBook(name="old")
    fd = FlowDetail(name="old-flow")
    book.add(fd)
    engine = sa.create_engine(normalize_url(url))
    try:
        # The schema as migrations up to 0003 left it, with a flow detail in it.
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", MIGRATIONS)
            config.attributes["connection"] = conn
            config.attributes["table_prefix"] = prefix
            command.upgrade(config, "0003")
            assert prefix + "signals" not in sa.inspect(conn).get_table_names()
        old = SQLAlchemyBackend(url, table_prefix=prefix, create_schema=False)
        try:
            with old.get_connection() as conn:
                conn.save_logbook(book)
        finally:
            old.close()
        # A reader refuses it, naming the revision; the first writer upgrades it.
        reader = SQLAlchemyBackend(url, table_prefix=prefix, read_only=True)
        try:
            with pytest.raises(exc.StorageFailure, match="schema version 0003, older than this flowkit's 0006"):
                signals.get(reader, fd.uuid)
        finally:
            reader.close()
        backend = SQLAlchemyBackend(url, table_prefix=prefix)
        try:
            assert signals.send(backend, fd.uuid, "approved", {"by": "ann"}) is True
            with backend.get_connection() as conn:
                conn.validate()
                assert conn.get_signals(fd.uuid) == {"approved": {"by": "ann"}}
                ((_, fd_uuid, name),) = conn.signals_after(0)
                assert (fd_uuid, name) == (fd.uuid, "approved")
                assert conn.get_flow_details(fd.uuid).name == "old-flow"
        finally:
            backend.close()
    finally:
        engine.dispose()
        if server != "sqlite":
            drop_tables(url, prefix)


def test_a_database_without_flowkit_tables_is_still_not_a_flowkit_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    engine = sa.create_engine("sqlite:///%s" % path)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE unrelated (id INTEGER)"))
    engine.dispose()
    reader = SQLAlchemyBackend("sqlite:///%s" % path, read_only=True)
    try:
        with pytest.raises(exc.StorageFailure, match=r"not a flowkit database \(schema version none\)"):
            signals.get(reader, "some-flow")
    finally:
        reader.close()


def test_a_read_only_backend_refuses_to_store_a_signal(tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "logbook.db")
    with SQLAlchemyBackend(url) as writer:
        fd = saved_flow(writer)
    with SQLAlchemyBackend(url, read_only=True) as reader:
        with pytest.raises(exc.InvalidState, match="read-only"):
            signals.send(reader, fd.uuid, "approved")
        assert signals.get(reader, fd.uuid) == {}


# -- the loser of a race that the database decides ------------------------------------------------


@pytest.mark.parametrize(
    "server", [pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]
)
@pytest.mark.parametrize("same_key", [False, True], ids=["another-key", "same-key"])
def test_a_sender_that_loses_at_the_unique_constraint_gets_the_second_senders_answer(
    request: pytest.FixtureRequest, server: str, same_key: bool
) -> None:
    # A writer that does not take flowkit's signal lock (another tool, an older
    # flowkit) has inserted the same (flow detail, name) and not committed yet:
    # send() does not see its row, waits on the unique index, and once that
    # row commits answers as if it had come second.
    url = request.getfixturevalue(server + "_url")
    prefix = unique_prefix()
    backend = SQLAlchemyBackend(url, table_prefix=prefix)
    other = sa.create_engine(backend.url, poolclass=sa.pool.NullPool)
    try:
        fd = saved_flow(backend)
        outcome: list[Any] = []
        with other.connect() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO %ssignals (flow_uuid, name, value, idempotency_key, sent_at) "
                    "VALUES (:f, 'approved', '\"theirs\"', 'their-key', 0)" % prefix
                ),
                {"f": fd.uuid},
            )

            def send() -> None:
                try:
                    key = "their-key" if same_key else "my-key"
                    outcome.append(signals.send(backend, fd.uuid, "approved", "mine", idempotency_key=key))
                except BaseException as error:  # reported to the test thread
                    outcome.append(error)

            sender = threading.Thread(target=send)
            sender.start()

            def sessions() -> str:
                if server == "postgres":
                    queries = ["SELECT pid, state, wait_event_type, left(query, 120) FROM pg_stat_activity"]
                else:
                    queries = [
                        "SELECT trx_mysql_thread_id, trx_state, trx_query FROM information_schema.innodb_trx",
                        "SELECT id, command, time, state, left(info, 120) FROM information_schema.processlist",
                    ]
                with other.connect() as monitor:
                    return "\n".join(str(tuple(row)) for q in queries for row in monitor.execute(sa.text(q)))

            def blocked() -> bool:
                if outcome:
                    raise AssertionError(
                        "send() returned without waiting on the uncommitted row: %r\nsessions:\n%s"
                        % (outcome, sessions())
                    )
                if server == "postgres":
                    waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
                else:
                    # The sender's INSERT of the same key cannot finish before that row commits: while it
                    # is the statement a session runs, it waits on it.  (innodb_trx's LOCK WAIT says so
                    # too, but under load MariaDB's copy of that table was seen to miss it for 50s.)
                    waiting = (
                        "SELECT count(*) FROM information_schema.processlist "
                        "WHERE info LIKE 'INSERT INTO %ssignals%%'" % prefix
                    )
                with other.connect() as monitor:  # a fresh session: MariaDB keeps what one transaction saw
                    return bool(monitor.execute(sa.text(waiting)).scalar())

            wait_until(blocked, "send() waiting on the uncommitted row", detail=sessions)
            conn.commit()
            sender.join(30)
        if same_key:
            assert outcome == [False]
        else:
            assert len(outcome) == 1 and isinstance(outcome[0], exc.SignalAlreadySent), outcome
            assert "1970-01-01T00:00:00" in str(outcome[0])
        assert signals.get(backend, fd.uuid) == {"approved": "theirs"}
    finally:
        other.dispose()
        backend.close()
        drop_tables(url, prefix)
