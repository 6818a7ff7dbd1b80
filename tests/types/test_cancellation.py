"""The cancel token a task reads: set once, seen across a pickle through its flag."""

from __future__ import annotations

import pickle
import threading

from flowkit.engines.executors import FileFlag
from flowkit.task import TaskContext
from flowkit.types.cancellation import CancelToken


def test_a_token_is_unset_until_the_engine_sets_it() -> None:
    token = CancelToken()
    assert not token.is_set() and token.wait(0) is False
    threading.Timer(0.01, token.set).start()
    assert token.wait(30) is True and token.is_set()


def test_a_pickled_token_reads_the_flag_of_the_engines() -> None:
    flag = FileFlag()
    try:
        engine_side = CancelToken(flag)
        worker_side = pickle.loads(pickle.dumps(TaskContext("a", "f", cancelled=engine_side))).cancelled
        again = pickle.loads(pickle.dumps(worker_side))  # a copy made on the worker reads it too
        assert not worker_side.is_set() and worker_side.wait(0.01) is False
        threading.Timer(0.01, engine_side.set).start()
        assert worker_side.wait(30) is True and again.wait(30) is True
    finally:
        flag.close()


def test_a_context_built_without_a_token_has_one_that_is_unset() -> None:
    assert TaskContext("a", "f").cancelled.is_set() is False
