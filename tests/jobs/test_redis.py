"""The job board contract on Redis (FLOWKIT_TEST_REDIS_URL)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from flowkit.jobs.backends.impl_redis import RedisJobBoard
from flowkit.jobs.base import JobBoard
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.testing.jobboards import JobBoardTests, MakeBoard


@pytest.mark.redis
class TestRedisBoard(JobBoardTests):
    @pytest.fixture
    def make_board(self, redis_url: str) -> Iterator[MakeBoard]:
        name = "test-%s" % uuid.uuid4().hex[:12]  # a namespace of keys no other test uses
        persistence = SQLAlchemyBackend("sqlite://")
        made: list[RedisJobBoard] = []

        def make(clock: Callable[[], float] | None = None, lease_ttl: float = 30.0) -> JobBoard:
            board = RedisJobBoard(
                name, redis_url, persistence=persistence, clock=clock or time.time, lease_ttl=lease_ttl
            )
            made.append(board)
            return board

        yield make
        if made:
            made[0].clear()
        for board in made:
            board.close()
        persistence.close()


@pytest.mark.redis
def test_clear_deletes_only_its_own_board(redis_url: str) -> None:
    from flowkit import exceptions as exc

    run = uuid.uuid4().hex[:8]  # no other test's boards share these names
    names = [
        run + "x-*",
        run + "x-victim",
        run + "glob",
        run + "glob:child",
        run + "q?",
        run + "qz",
        run + "back\\",
        run + "back\\slash",
        run + "[ab]",
        run + "a",
        run + "]",
        run + "%3A",
        run + ":",
    ]
    boards = [RedisJobBoard(name, redis_url) for name in names]
    try:
        jobs = {board.name: board.post("job of " + board.name) for board in boards}
        for cleared in boards:
            cleared.clear()
            with pytest.raises(exc.NotFound):
                cleared.get_job(jobs[cleared.name].uuid)
            for other in boards:
                if other is not cleared and other.name in jobs:
                    assert other.get_job(jobs[other.name].uuid).name == "job of " + other.name, (
                        "clearing %r deleted board %r" % (cleared.name, other.name)
                    )
            del jobs[cleared.name]
    finally:
        for board in boards:
            board.clear()
            board.close()
