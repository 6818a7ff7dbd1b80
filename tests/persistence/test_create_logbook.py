"""``create_logbook`` on a server when another transaction inserts the same logbook between its check and its insert.

The other transaction's row is not committed yet, so the check does not see it; the insert
then waits on the primary key until that transaction commits, and fails: that caller gets
False and nothing of its logbook is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from flowkit.persistence._sql import schema
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.persistence.models import FlowDetail, LogBook
from tests.support import WAIT_TIMEOUT, wait_until

# How each server shows a session waiting for a row lock.
_WAITING = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity "
    "WHERE wait_event_type = 'Lock' AND datname = current_database()",
    "mysql": "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'",
}


def _book(name: str, uuid: str, fd_uuid: str) -> LogBook:
    book = LogBook(name=name, uuid=uuid)
    book.add(FlowDetail(name=name, uuid=fd_uuid))
    return book


def test_an_insert_that_loses_on_the_primary_key_is_not_created(
    server_url_of: str, sql_backend_factory: Callable[..., SQLAlchemyBackend]
) -> None:
    url = server_url_of
    backend = sql_backend_factory(url)
    backend.upgrade()
    winner = _book("winner", "0f8c2a52-0000-4000-8000-000000000001", "0f8c2a52-0000-4000-8000-000000000002")
    loser = _book("loser", winner.uuid, list(winner)[0].uuid)
    books, flows, _atoms = schema.logbook_rows(winner)
    outcome: list[Any] = []
    other = sa.create_engine(backend.engine.url, poolclass=sa.pool.NullPool)
    try:
        with other.connect() as conn:
            transaction = conn.begin()
            conn.execute(sa.insert(backend.tables.logbooks), books)
            conn.execute(sa.insert(backend.tables.flows), flows)

            def create() -> None:
                try:
                    with backend.get_connection() as mine:
                        outcome.append(mine.create_logbook(loser))
                except BaseException as error:  # handed to the test thread
                    outcome.append(error)

            creator = threading.Thread(target=create)
            creator.start()
            with other.connect() as watcher:
                waiting = _WAITING[backend.dialect if backend.dialect == "postgresql" else "mysql"]
                wait_until(
                    lambda: outcome or watcher.execute(sa.text(waiting)).scalar(), "the insert to wait on the row lock"
                )
            transaction.commit()
        creator.join(WAIT_TIMEOUT)
    finally:
        other.dispose()
    assert outcome == [False]
    with backend.get_connection() as conn:
        stored = conn.get_logbook(winner.uuid)
        assert stored.name == "winner" and [fd.name for fd in stored] == ["winner"]
