"""The job board contract on the in-memory board."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from flowkit.jobs.backends.impl_memory import MemoryJobBoard
from flowkit.jobs.base import JobBoard
from flowkit.persistence.backends.impl_memory import MemoryBackend
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.testing.jobboards import JobBoardTests, MakeBoard


class TestMemoryBoard(JobBoardTests):
    @pytest.fixture
    def make_board(self) -> Iterator[MakeBoard]:
        # SQLite in memory keeps copies, so the fencing tests can read back what was written.
        persistence = SQLAlchemyBackend("sqlite://")
        boards: dict[tuple[object, float], JobBoard] = {}

        def make(clock: Callable[[], float] | None = None, lease_ttl: float = 30.0) -> JobBoard:
            # One store per test: the same board for the same clock (a memory board is its store).
            key = (clock, lease_ttl)
            if key not in boards:
                boards[key] = MemoryJobBoard(
                    "tests", persistence=persistence, clock=clock or time.time, lease_ttl=lease_ttl
                )
            return boards[key]

        yield make
        for board in boards.values():
            board.close()
        persistence.close()


def test_fencing_over_the_memory_store_refuses_each_write() -> None:
    from flowkit import exceptions as exc
    from flowkit.persistence.models import FlowDetail, LogBook, TaskDetail

    persistence = MemoryBackend()
    board = MemoryJobBoard("tests", persistence=persistence)
    book = LogBook(name="b")
    fd = FlowDetail(name="f")
    atom = TaskDetail("t")
    fd.add(atom)
    book.add(fd)
    job = board.post("j", book=book)
    claim = board.claim(job, "alice")
    with board.fenced_backend(persistence, claim).get_connection() as conn:
        conn.update_atom_details(atom)
        board.abandon(job, "alice")
        with pytest.raises(exc.LeaseLost):
            conn.update_atom_details(atom)
        with pytest.raises(exc.LeaseLost):
            conn.update_flow_details(fd)
