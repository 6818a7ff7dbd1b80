"""Conductors park flows that wait on timers or signals, and any conductor resumes them when due.

Time is a virtual clock shared by the board and the engines: a thousand timers due over an
hour fire in no time, and "on time" means "not before the clock reached them".
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flowkit import signals, states
from flowkit.conductors import JOB_PARKED, fetch, post_flow
from flowkit.jobs.backends.impl_memory import MemoryJobBoard
from flowkit.jobs.base import JobState
from flowkit.persistence.backends.impl_memory import MemoryBackend
from flowkit.testing.clock import VirtualClock
from tests.conductors import flows
from tests.conductors.conftest import Setup
from tests.support import wait_until

START = 1_700_000_000.0


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def unfinished(board: Any, backend: MemoryBackend, clock: VirtualClock) -> str:
    """The jobs due by now that are not complete: board status and flow detail state."""
    found = []
    with backend.get_connection() as conn:
        for job in board.iterjobs(ensure_fresh=True, only_unclaimed=False):
            status = board.status_of(job)
            if status.state == JobState.COMPLETE or (status.due_at or 0) > clock.now():
                continue
            fd = conn.get_flow_details(job.details["flow_uuid"])
            atoms = ", ".join("%s=%s" % (ad.name, ad.state) for ad in fd)
            found.append("%s %s flow %s [%s] (clock %s)" % (job.name, status, fd.state, atoms, clock.now()))
    return "\n".join(found[:20]) or "none"


class Conductors:
    """Conductors running in threads, stopped (and joined) at the end of the test."""

    def __init__(
        self, board: Any, count: int, clock: VirtualClock | None, kind: str = "blocking", **options: Any
    ) -> None:
        self.parked: list[Any] = []
        self._lock = threading.Lock()
        self.conductors = [
            fetch(
                kind,
                "c%d" % i,
                board,
                wait_timeout=0.2,
                engine_options={"clock": clock} if clock is not None else None,
                **options,
            )
            for i in range(count)
        ]
        for conductor in self.conductors:
            conductor.notifier.register(JOB_PARKED, self._on_parked)
        self.threads = [threading.Thread(target=c.run, daemon=True) for c in self.conductors]

    def _on_parked(self, event: str, details: dict[str, Any]) -> None:
        with self._lock:
            self.parked.append(details)

    def __enter__(self) -> Conductors:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for conductor in self.conductors:
            conductor.stop()
        for thread in self.threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self.threads)


def test_a_timer_parks_the_job_and_the_flow_resumes_when_it_is_due(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    backend = MemoryBackend()
    board = MemoryJobBoard("tests", persistence=backend, clock=clock)
    log = tmp_path / "log.txt"
    job = post_flow(board, flows.napping, [START + 3600], store={"log": str(log), "job": "j"})
    with Conductors(board, 1, clock) as running:
        wait_until(lambda: running.parked, "the job to be parked")
        status = board.status_of(job)
        assert status.state == JobState.UNCLAIMED and status.parked and status.due_at == START + 3600
        assert board.find_owner(job) is None
        with backend.get_connection() as conn:
            fd = conn.get_flow_details(job.details["flow_uuid"])
        assert fd.state == states.WAITING and fd.meta["job"] == job.uuid
        assert [line.split()[0] for line in lines(log)] == ["before"]
        clock.advance(3599)
        assert board.claim_next("someone else") is None  # not due: nobody may take it
        clock.advance(1)
        wait_until(lambda: board.state_of(job) == JobState.COMPLETE, "the job to finish")
    assert [line.split()[0] for line in lines(log)] == ["before", "after"]
    assert board.get_job(job.uuid).outcome == "SUCCESS"


def test_a_retry_backoff_parks_the_job_until_the_next_attempt_is_due(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    backend = MemoryBackend()
    board = MemoryJobBoard("tests", persistence=backend, clock=clock)
    log = tmp_path / "log.txt"
    job = post_flow(board, flows.backing_off, [600.0], store={"log": str(log), "job": "j"})
    with Conductors(board, 1, clock) as running:
        wait_until(lambda: running.parked, "the job to be parked")
        status = board.status_of(job)
        assert status.state == JobState.UNCLAIMED and status.parked and status.due_at == START + 600
        assert board.find_owner(job) is None
        clock.advance(599)
        assert board.claim_next("someone else") is None  # not due: nobody may take it
        clock.advance(1)
        wait_until(lambda: board.state_of(job) == JobState.COMPLETE, "the job to finish")
    assert [line.split()[0] for line in lines(log)] == ["before", "call", "call"]
    assert [line.split()[2] for line in lines(log)[1:]] == ["0", "1"]  # attempts
    assert board.get_job(job.uuid).outcome == "SUCCESS"


def test_a_signal_wakes_a_job_parked_on_it(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    backend = MemoryBackend()
    board = MemoryJobBoard("tests", persistence=backend, clock=clock)
    log = tmp_path / "log.txt"
    job = post_flow(board, flows.approval, store={"log": str(log), "job": "j"})
    with Conductors(board, 2, clock, signal_poll=0.05) as running:
        wait_until(lambda: running.parked, "the job to be parked")
        assert running.parked[0]["due"] is None and running.parked[0]["signals"] == ["approved"]
        assert board.status_of(job).parked and board.status_of(job).due_at is None
        signals.send(backend, job.details["flow_uuid"], "approved", 42)
        wait_until(lambda: board.state_of(job) == JobState.COMPLETE, "the signal to wake the job")
    assert [line.split()[0] for line in lines(log)] == ["before", "charge-42"]


def test_a_signal_sent_while_no_conductor_runs_wakes_the_job_when_one_starts(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    backend = MemoryBackend()
    board = MemoryJobBoard("tests", persistence=backend, clock=clock)
    log = tmp_path / "log.txt"
    job = post_flow(board, flows.approval, store={"log": str(log), "job": "j"})
    with Conductors(board, 1, clock, signal_poll=0.05) as running:
        wait_until(lambda: running.parked, "the job to be parked")
    signals.send(backend, job.details["flow_uuid"], "approved", 7)
    with Conductors(board, 1, clock, signal_poll=0.05):
        wait_until(lambda: board.state_of(job) == JobState.COMPLETE, "a new conductor to wake and run the job")
    assert [line.split()[0] for line in lines(log)] == ["before", "charge-7"]


# About 11 s on a quiet 2-core machine; several times that beside other test runs.
@pytest.mark.timeout(600)
def test_a_thousand_parked_flows_wake_once_each_on_time_with_two_conductors(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    backend = MemoryBackend()
    board = MemoryJobBoard("tests", persistence=backend, clock=clock)
    log = tmp_path / "log.txt"
    count = 1000
    # Due over an hour, in 10 groups six minutes apart.
    due = {"j%d" % i: START + 360 * (1 + i % 10) for i in range(count)}
    for name, when in due.items():
        post_flow(board, flows.napping, [when], store={"log": str(log), "job": name})
    with Conductors(board, 2, clock, "nonblocking", max_simultaneous_jobs=4) as running:
        wait_until(lambda: len(running.parked) == count, "every flow to park", timeout=300)
        parked_threads = threading.active_count()
        for step in range(1, 11):
            clock.set(START + 360 * step)
            expected = sum(1 for when in due.values() if when <= clock.now())
            # Until every claim has ended too: a flow writes its last line before its
            # conductor records the job's end, and moving the clock past the lease of a
            # claim still held would let the other conductor take the job over and run
            # that last step again, as it must for an owner presumed dead.
            wait_until(
                lambda expected=expected: (
                    sum(1 for line in lines(log) if line.startswith("after ")) >= expected
                    and not any(board.state_of(j) == JobState.CLAIMED for j in board.iterjobs())
                ),
                "the flows due by step %d to finish" % step,
                timeout=300,
                detail=lambda: unfinished(board, backend, clock),
            )
            ran = [line.split()[1] for line in lines(log) if line.startswith("after ")]
            assert len(ran) == expected, "a flow ran its last step twice: %s" % sorted(ran)
            assert all(due[name] <= clock.now() for name in ran), "a flow woke before its deadline"
            assert threading.active_count() <= parked_threads, "parked flows hold threads"
        wait_until(lambda: all(board.state_of(j) == JobState.COMPLETE for j in board.iterjobs()), "every job")
    executions = Counter(line.split()[0] + " " + line.split()[1] for line in lines(log))
    assert len(executions) == 2 * count and set(executions.values()) == {1}, "a step ran twice or never"
    assert len(running.parked) == count  # each flow parked once and woke once


def test_flows_park_and_wake_on_every_board_kind(setup: Setup, tmp_path: Path) -> None:
    persistence = setup.persistence()
    board = setup.board(persistence)
    log = tmp_path / "log.txt"
    until = time.time() + 1.0
    nap = post_flow(board, flows.napping, [until], store={"log": str(log), "job": "nap"})
    ask = post_flow(board, flows.approval, store={"log": str(log), "job": "ask"})
    try:
        with Conductors(board, 2, None, signal_poll=0.05) as running:
            wait_until(lambda: len(running.parked) == 2 or board.state_of(nap) == JobState.COMPLETE, "both to park")
            signals.send(persistence, ask.details["flow_uuid"], "approved", 3)
            wait_until(lambda: board.state_of(nap) == board.state_of(ask) == JobState.COMPLETE, "both jobs to finish")
        assert time.time() >= until
        assert sorted(line.split()[0] for line in lines(log)) == ["after", "before", "before", "charge-3"]
        assert board.get_job(nap.uuid).outcome == board.get_job(ask.uuid).outcome == "SUCCESS"
    finally:
        board.close()
        persistence.close()
