"""The helpers the tests rely on: a wait that ends in time and says what never happened."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support import wait_until


def test_wait_until_returns_what_the_predicate_found_once_another_thread_makes_it_true() -> None:
    found: list[str] = []
    timer = threading.Timer(0.05, found.append, args=["done"])
    timer.start()
    try:
        assert wait_until(lambda: list(found), "the timer to fire", timeout=10) == ["done"]
    finally:
        timer.cancel()


def test_wait_until_names_what_did_not_happen_and_the_detail_when_it_gives_up() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"gave up after 0\.\d s waiting for the moon to turn blue:\nit is grey"):
        wait_until(lambda: False, "the moon to turn blue", timeout=0.1, detail=lambda: "it is grey")
    assert time.monotonic() - started < 5


def test_wait_until_keeps_a_deadline_shared_by_several_waits() -> None:
    deadline = time.monotonic() + 0.1
    assert wait_until(lambda: 1, "an immediate value", deadline=deadline) == 1
    with pytest.raises(AssertionError, match="the second thing"):
        wait_until(lambda: None, "the second thing", deadline=deadline)
    assert time.monotonic() >= deadline


def test_an_exception_from_the_predicate_ends_the_wait_at_once() -> None:
    def gone() -> bool:
        raise AssertionError("the process exited")

    started = time.monotonic()
    with pytest.raises(AssertionError, match="the process exited"):
        wait_until(gone, "a line from the process", timeout=30)
    assert time.monotonic() - started < 5
