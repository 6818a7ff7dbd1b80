"""A conductor and jobs that are not due yet, on a virtual clock: run once due, no busy polling before."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from flowkit.conductors import fetch, post_flow
from flowkit.jobs.backends.impl_memory import MemoryJobBoard
from flowkit.jobs.base import Claim, Job, JobState
from flowkit.persistence.backends.impl_memory import MemoryBackend
from flowkit.testing.clock import VirtualClock
from tests.conductors import flows
from tests.support import wait_until

#: The conductor's longest block in board.wait() (real seconds): what bounds its board calls while idle.
WAIT_TIMEOUT = 0.2


class CountingBoard(MemoryJobBoard):
    """A memory board that counts the calls a conductor makes while it has nothing to run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = {"claim_next": 0, "wait": 0, "next_due": 0}

    def claim_next(self, who: str, *, ttl: float | None = None) -> tuple[Job, Claim] | None:
        self.calls["claim_next"] += 1
        return super().claim_next(who, ttl=ttl)

    def wait(self, timeout: float | None = None) -> Any:
        self.calls["wait"] += 1
        return super().wait(timeout)

    def next_due(self) -> float | None:
        self.calls["next_due"] += 1
        return super().next_due()


def test_a_delayed_job_runs_only_after_the_clock_passes_its_due_time_and_the_idle_conductor_does_not_spin(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(1_700_000_000.0)
    board = CountingBoard("tests", persistence=MemoryBackend(), clock=clock)
    log = tmp_path / "log.txt"
    job = post_flow(board, flows.one_line, store={"log": str(log), "job": "later"}, delay=3600)
    # Two more that must not wake the conductor either: one parked until woken, one due much later.
    parked = post_flow(board, flows.one_line, store={"log": str(log), "job": "parked"})
    claim = board.claim(parked, "someone")
    board.park(parked, "someone", due=None, token=claim.token)
    post_flow(board, flows.one_line, store={"log": str(log), "job": "tomorrow"}, delay=86400)

    conductor = fetch("blocking", "c1", board, wait_timeout=WAIT_TIMEOUT)
    idle_since = time.monotonic()
    thread = threading.Thread(target=conductor.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: clock.waiters >= 1, "the conductor to block on the board's clock")
        clock.advance(3599)
        wait_until(lambda: board.calls["wait"] >= 3, "the conductor to wait a few times")
        assert job.state == JobState.UNCLAIMED and not log.exists()
        idle = time.monotonic() - idle_since
        # One claim attempt per wait at most, and a wait lasts WAIT_TIMEOUT unless something happens.
        bound = idle / WAIT_TIMEOUT + 3
        assert board.calls["claim_next"] <= bound, (board.calls, idle)
        assert board.calls["wait"] <= bound, (board.calls, idle)

        clock.advance(1)
        wait_until(lambda: job.state == JobState.COMPLETE, "the due job to run")
        assert job.outcome == "SUCCESS"
        assert log.read_text().split()[:2] == ["run", "later"]
        assert [line.split()[1] for line in log.read_text().splitlines()] == ["later"]  # only the due one ran
        assert parked.state == JobState.UNCLAIMED and parked.parked

        board.wake(parked)
        wait_until(lambda: parked.state == JobState.COMPLETE, "the woken job to run")
    finally:
        stopping = time.monotonic()
        conductor.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - stopping < 5  # stop() is noticed within a wait
