"""The job board contract on Redis (FLOWKIT_TEST_REDIS_URL)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from flowkit.jobs.base import JobBoard
from flowkit.jobs.impl_redis import RedisJobBoard
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
