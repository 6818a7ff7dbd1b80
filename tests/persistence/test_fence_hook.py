"""The fencing hook of the persistence contract: ``Connection.fence`` and ``writes_immediately``.

A job board fences a writer through these two (see ``flowkit.jobs.base.FencedConnection``);
a user's own backend implements them to be fenced the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowkit import exceptions as exc
from flowkit.jobs.backends.impl_memory import MemoryJobBoard
from flowkit.jobs.base import Claim, FencedBackend
from flowkit.persistence.backends import MemoryBackend
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.persistence.models import FlowDetail, LogBook, TaskDetail


def _book() -> tuple[LogBook, TaskDetail]:
    book = LogBook(name="b")
    fd = FlowDetail(name="f")
    ad = TaskDetail("a")
    fd.add(ad)
    book.add(fd)
    return book, ad


class _Refusal(exc.FlowkitError):
    """What the test's precondition raises once it refuses."""


class _Precondition:
    """Counts its calls, runs a statement on the cursor it is given, refuses while ``refuse`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.refuse = False

    def __call__(self, cursor: Any) -> None:
        self.calls += 1
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1
        if self.refuse:
            raise _Refusal("claim lost")


def test_which_connections_write_immediately(tmp_path: Path) -> None:
    with SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "x.db")) as sql, MemoryBackend() as memory:
        assert sql.get_connection().writes_immediately is False
        assert memory.get_connection().writes_immediately is True
        with pytest.raises(TypeError, match="writes immediately"):
            memory.get_connection().fence(lambda cursor: None)


def test_a_refused_precondition_writes_nothing_and_keeps_the_buffer(tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "x.db")
    with SQLAlchemyBackend(url) as backend:
        check = _Precondition()
        conn = backend.get_connection()
        conn.fence(check)
        book, ad = _book()
        conn.save_logbook(book)  # a saved logbook is flushed at once: checked too
        assert check.calls == 1
        conn.flush()  # nothing buffered: nothing to check
        assert check.calls == 1

        ad.results = "first"
        conn.update_atom_details(ad)
        check.refuse = True
        with pytest.raises(_Refusal):
            conn.flush()
        assert conn.pending
        with pytest.raises(_Refusal):
            conn.get_atom_details(ad.uuid)  # a read flushes first, so it is refused as well
        with SQLAlchemyBackend(url) as other:
            assert other.get_connection().get_atom_details(ad.uuid).results is None

        check.refuse = False
        conn.flush()
        assert not conn.pending
        with SQLAlchemyBackend(url) as other:
            assert other.get_connection().get_atom_details(ad.uuid).results == "first"



def test_a_board_without_a_transaction_check_fences_around_the_flush(tmp_path: Path) -> None:
    # The memory board checks the claim around each flush of an SQL logbook, under its lock.
    with SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "x.db")) as persistence:
        board = MemoryJobBoard("b", persistence=persistence)
        book, ad = _book()
        board.post("j", book)
        job = next(board.iterjobs())
        claim: Claim = board.claim(job, "me")
        fenced = board.fenced_backend(persistence, claim)
        assert isinstance(fenced, FencedBackend) and fenced.transaction_check() is None
        with fenced.get_connection() as conn:
            ad.results = 1
            conn.update_atom_details(ad)
            conn.flush()
            board.abandon(job, "me")
            ad.results = 2
            conn.update_atom_details(ad)
            with pytest.raises(exc.LeaseLost):
                conn.flush()
        assert persistence.get_connection().get_atom_details(ad.uuid).results == 1
