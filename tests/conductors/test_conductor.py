"""Conductors in one process, on the memory board: outcomes, events, cancel, drain, lost leases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowkit import exceptions as exc
from flowkit import states
from flowkit.conductors import (
    JOB_ABANDONED,
    JOB_CANCELLED,
    JOB_CANCELLING,
    JOB_CLAIMED,
    JOB_CONSUMED,
    JOB_LOST,
    JOB_TRASHED,
    RUNNING_END,
    RUNNING_START,
    Conductor,
    fetch,
    post_flow,
)
from flowkit.jobs.backends import fetch as fetch_board
from flowkit.jobs.base import Claim, JobBoard, JobState
from flowkit.persistence.backends.impl_memory import MemoryBackend
from flowkit.persistence.models import FlowDetail, LogBook
from tests.conductors import flows
from tests.conductors.conftest import AppModule
from tests.support import wait_until

DEADLINE = 20.0


class Events:
    """Records conductor events; ``wait_for`` blocks (with a deadline) until one arrives."""

    def __init__(self, conductor: Conductor) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()
        conductor.notifier.register("*", self._record)

    def _record(self, event: str, details: dict[str, Any]) -> None:
        with self._cond:
            self.seen.append((event, dict(details)))
            self._cond.notify_all()

    def names(self, job_uuid: str | None = None) -> list[str]:
        with self._cond:
            return [e for e, d in self.seen if job_uuid is None or d["job"].uuid == job_uuid]

    def wait_for(self, event: str, count: int = 1) -> dict[str, Any]:
        with self._cond:
            ok = self._cond.wait_for(lambda: sum(e == event for e, _ in self.seen) >= count, DEADLINE)
            assert ok, "no %r event within %.0f s; saw %r" % (event, DEADLINE, [e for e, _ in self.seen])
            return [d for e, d in self.seen if e == event][count - 1]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class FakeClock:
    """The board's clock: leases expire when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def persistence() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def board(persistence: MemoryBackend, clock: FakeClock) -> Iterator[JobBoard]:
    from flowkit.jobs.backends.impl_memory import MemoryJobBoard

    with MemoryJobBoard("tests", persistence=persistence, lease_ttl=30.0, clock=clock) as made:
        yield made


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "log.txt"


def start(conductor: Conductor, **run: Any) -> threading.Thread:
    thread = threading.Thread(target=conductor.run, kwargs=run, daemon=True)
    thread.start()
    return thread


def test_jobs_run_once_in_post_order_and_are_consumed(board: JobBoard, log: Path, engine_mode: str) -> None:
    jobs = [post_flow(board, flows.one_line, store={"log": str(log), "job": "j%d" % i}) for i in range(5)]
    conductor = fetch("blocking", "c1", board, engine=engine_mode)
    events = Events(conductor)

    conductor.run(max_dispatches=5)

    assert [line.split()[1] for line in lines(log)] == ["j0", "j1", "j2", "j3", "j4"]
    assert all(job.state == JobState.COMPLETE for job in jobs)
    assert all(job.outcome == "SUCCESS" for job in jobs)
    assert list(board.iterjobs()) == []
    for job in jobs:
        assert events.names(job.uuid) == [JOB_CLAIMED, RUNNING_START, RUNNING_END, JOB_CONSUMED]
    assert conductor.wait(0)


def test_reverted_flow_is_consumed_with_its_state(board: JobBoard, log: Path) -> None:
    job = post_flow(board, flows.failing, store={"log": str(log), "job": "f"})
    conductor = fetch("blocking", "c1", board)
    events = Events(conductor)

    conductor.run(max_dispatches=1)

    # REVERTED is an outcome: the job is done, and running it again would not change it.
    assert job.state == JobState.COMPLETE and job.outcome == "REVERTED"
    assert events.wait_for(JOB_CONSUMED)["state"] == states.REVERTED
    assert isinstance(events.wait_for(RUNNING_END)["error"], RuntimeError)
    assert [line.split()[0] for line in lines(log)] == ["undo", "undo-undo"]


def test_store_of_the_job_reaches_the_flow(board: JobBoard, persistence: MemoryBackend, log: Path) -> None:
    job = post_flow(board, flows.one_line, store={"log": str(log), "job": "from-store"}, name="named")
    fetch("blocking", "c1", board).run(max_dispatches=1)
    assert job.name == "named"
    assert lines(log)[0].split()[:2] == ["run", "from-store"]
    book = persistence.get_connection().get_logbook(job.book_uuid or "")
    assert [fd.state for fd in book] == [states.SUCCESS]


def test_unbuildable_job_is_given_back_not_trashed(board: JobBoard, clock: FakeClock, log: Path) -> None:
    book = LogBook(name="no-factory")
    book.add(FlowDetail(name="no-factory"))
    job = board.post("no-factory", book=book)
    conductor = fetch("blocking", "c1", board, backoff=7.0)
    events = Events(conductor)

    conductor.run(max_dispatches=1)

    assert job.state == JobState.UNCLAIMED
    abandoned = events.wait_for(JOB_ABANDONED)
    assert "factory record" in abandoned["reason"] and abandoned["delay"] == 7.0
    failures = job.failures
    assert failures.attempts == 1 and failures.failed_by == ("c1",) and failures.due_at == clock.now + 7.0
    assert failures.last_error is not None and "factory record" in failures.last_error
    assert JOB_TRASHED not in events.names()


def test_a_factory_missing_here_is_retried_with_backoff_trashed_by_three_conductors_then_restored(
    board: JobBoard, clock: FakeClock, log: Path, app: AppModule
) -> None:
    job = post_flow(board, app.make, store={"log": str(log), "job": "j"})
    app.hide()
    options: dict[str, Any] = {"backoff": 10.0, "max_backoff": 25.0, "max_conductor_failures": 3}
    c1, c2, c3 = (fetch("blocking", name, board, **options) for name in ("c1", "c2", "c3"))
    events = [Events(c) for c in (c1, c2, c3)]

    c1.run(max_dispatches=1)
    first = job.failures
    assert job.state == JobState.UNCLAIMED
    assert (first.attempts, first.failed_by, first.due_at) == (1, ("c1",), clock.now + 10.0)
    assert first.last_error is not None and app.name in first.last_error
    assert board.claim_next("probe") is None  # not claimable before its due time

    clock.now += 10.0
    c1.run(max_dispatches=1)  # the same conductor again: one more attempt, still one conductor
    assert (job.failures.attempts, job.failures.failed_by) == (2, ("c1",))
    assert job.failures.due_at == clock.now + 20.0  # the backoff doubled
    assert events[0].wait_for(JOB_ABANDONED, 2)["delay"] == 20.0

    clock.now += 20.0
    c2.run(max_dispatches=1)
    assert (job.failures.attempts, job.failures.failed_by) == (3, ("c1", "c2"))
    assert job.failures.due_at == clock.now + 25.0  # capped by max_backoff
    assert job.state == JobState.UNCLAIMED

    clock.now += 25.0
    c3.run(max_dispatches=1)  # the third distinct conductor: trashed
    assert job.state == JobState.TRASHED
    trashed = events[2].wait_for(JOB_TRASHED)
    assert trashed["failed_by"] == ("c1", "c2", "c3") and trashed["attempts"] == 4
    assert (job.failures.attempts, job.failures.failed_by) == (4, ("c1", "c2", "c3"))
    assert list(board.iterjobs()) == []
    assert [j.uuid for j in board.iterjobs(include_final=True)] == [job.uuid]
    assert lines(log) == []

    assert board.restore(job) == JobState.UNCLAIMED
    assert job.failures.attempts == 0 and job.failures.failed_by == ()
    app.put_back()  # a conductor that can build the flow
    c4 = fetch("blocking", "c4", board, **options)
    c4.run(max_dispatches=1)
    assert job.state == JobState.COMPLETE
    assert [line.split()[:2] for line in lines(log)] == [["run", "j"]]


@pytest.mark.parametrize("revert", [True, False], ids=["revert", "suspend"])
def test_cancel_stops_a_running_job_at_the_next_atom(
    board: JobBoard, log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, revert: bool
) -> None:
    monkeypatch.setenv(flows.HOLD_ENV, "1")
    release = tmp_path / "release"
    job = post_flow(board, flows.two_steps, store={"log": str(log), "job": "x", "release": str(release)})
    conductor = fetch("blocking", "c1", board, ttl=0.3)
    events = Events(conductor)
    thread = start(conductor, max_dispatches=1)
    wait_until(lambda: len(lines(log)) == 2, "the hold task to start")

    assert board.cancel(job, revert=revert) == JobState.CLAIMED
    assert events.wait_for(JOB_CANCELLING)["revert"] is revert
    release.touch()
    thread.join(DEADLINE)

    assert job.state == JobState.CANCELLED
    cancelled = events.wait_for(JOB_CANCELLED)
    assert cancelled["revert"] is revert
    assert cancelled["state"] == (states.REVERTED if revert else states.SUSPENDED)
    assert "last" not in [line.split()[0] for line in lines(log)]


@pytest.mark.parametrize("revert", [True, False], ids=["revert", "suspend"])
def test_cancel_between_claim_and_run_is_honoured_before_any_atom(
    board: JobBoard, log: Path, engine_mode: str, revert: bool
) -> None:
    job = post_flow(board, flows.one_line, store={"log": str(log), "job": "x"})
    # A lease so long the heartbeat never polls: the claim check that
    # precedes the first atom is what sees the request.
    conductor = fetch("blocking", "c1", board, ttl=600, engine=engine_mode)
    events = Events(conductor)
    conductor.notifier.register(JOB_CLAIMED, lambda event, details: board.cancel(details["job"], revert=revert))

    conductor.run(max_dispatches=1)

    assert job.state == JobState.CANCELLED
    assert events.wait_for(JOB_CANCELLED)["state"] == (states.REVERTED if revert else states.SUSPENDED)
    assert lines(log) == []


def test_stop_with_drain_lets_the_running_job_finish(
    board: JobBoard, log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(flows.HOLD_ENV, "1")
    release = tmp_path / "release"
    first = post_flow(board, flows.two_steps, store={"log": str(log), "job": "a", "release": str(release)})
    second = post_flow(board, flows.one_line, store={"log": str(log), "job": "b"})
    conductor = fetch("nonblocking", "c1", board, max_simultaneous_jobs=1)
    start(conductor)
    wait_until(lambda: len(lines(log)) == 2, "the hold task to start")

    conductor.stop(drain=True)
    assert not conductor.dispatching
    release.touch()

    assert conductor.wait(DEADLINE)
    assert first.state == JobState.COMPLETE
    assert second.state == JobState.UNCLAIMED  # nothing new was claimed
    assert [line.split()[0] for line in lines(log)] == ["first", "hold", "last"]


def test_stop_without_drain_suspends_and_abandons_then_another_resumes(
    board: JobBoard, persistence: MemoryBackend, log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(flows.HOLD_ENV, "1")
    release = tmp_path / "release"
    job = post_flow(board, flows.two_steps, store={"log": str(log), "job": "a", "release": str(release)})
    conductor = fetch("blocking", "c1", board)
    events = Events(conductor)
    start(conductor)
    wait_until(lambda: len(lines(log)) == 2, "the hold task to start")

    conductor.stop(drain=False)
    release.touch()
    assert conductor.wait(DEADLINE)
    assert "suspended" in events.wait_for(JOB_ABANDONED)["reason"]
    assert job.state == JobState.UNCLAIMED
    book = persistence.get_connection().get_logbook(job.book_uuid or "")
    assert [fd.state for fd in book] == [states.SUSPENDED]

    fetch("blocking", "c2", board).run(max_dispatches=1)
    assert job.state == JobState.COMPLETE
    # "first" and "hold" completed before the suspension: they did not run again.
    assert [line.split()[0] for line in lines(log)] == ["first", "hold", "last"]


def test_stop_without_drain_sets_the_token_a_running_task_reads(
    board: JobBoard, persistence: MemoryBackend, log: Path
) -> None:
    job = post_flow(board, flows.patient, store={"log": str(log), "job": "a"})
    conductor = fetch("blocking", "c1", board)
    start(conductor)
    wait_until(lambda: len(lines(log)) == 2, "the patient task to start")

    conductor.stop(drain=False)
    assert conductor.wait(DEADLINE)
    assert [line.split()[0] for line in lines(log)] == ["first", "patient", "patient-stopped"]
    assert job.state == JobState.UNCLAIMED
    (fd,) = persistence.get_connection().get_logbook(job.book_uuid or "")
    assert fd.state == states.SUSPENDED
    # Interrupted, not failed: the next conductor runs it again.
    assert {ad.name: ad.state for ad in fd} == {
        "first": states.SUCCESS,
        "patient": states.PENDING,
        "last": states.PENDING,
    }


def test_lost_lease_stops_the_engine_without_writing(
    clock: FakeClock, log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowkit.jobs.backends.impl_memory import MemoryJobBoard
    from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend

    # A SQL logbook: the memory backend shares its objects with the engine,
    # so it could not show which writes were refused.
    persistence = SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "logbook.db"))
    board = MemoryJobBoard("tests", persistence=persistence, clock=clock)
    monkeypatch.setenv(flows.HOLD_ENV, "1")
    release = tmp_path / "release"
    job = post_flow(board, flows.two_steps, store={"log": str(log), "job": "a", "release": str(release)})
    conductor = fetch("blocking", "c1", board, ttl=0.3)
    events = Events(conductor)
    thread = start(conductor, max_dispatches=1)
    wait_until(lambda: len(lines(log)) == 2, "the hold task to start")

    clock.now += 10.0  # the lease expires while "hold" runs
    thief = board.claim(job, "thief")
    release.touch()
    thread.join(DEADLINE)

    assert events.wait_for(JOB_LOST)
    assert JOB_CONSUMED not in events.names() and JOB_ABANDONED not in events.names()
    assert board.find_owner(job) == "thief"
    assert "last" not in [line.split()[0] for line in lines(log)]
    # The stale engine's results never reached the logbook: "hold" is still RUNNING there.
    book = persistence.get_connection().get_logbook(job.book_uuid or "")
    (fd,) = book
    assert {ad.name: ad.state for ad in fd}["hold"] == states.RUNNING
    board.abandon(job, "thief", token=thief.token)
    persistence.close()


def test_heartbeat_keeps_the_lease(
    persistence: MemoryBackend, clock: FakeClock, log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowkit.jobs.backends.impl_memory import MemoryJobBoard

    class CountingBoard(MemoryJobBoard):
        def __init__(self) -> None:
            super().__init__("tests", persistence=persistence, lease_ttl=30.0, clock=clock)
            self.renewals: list[Claim] = []

        def renew(self, claim: Claim, *, ttl: float | None = None) -> Claim:
            renewed = super().renew(claim, ttl=ttl)
            self.renewals.append(renewed)
            return renewed

    board = CountingBoard()
    monkeypatch.setenv(flows.HOLD_ENV, "1")
    release = tmp_path / "release"
    job = post_flow(board, flows.two_steps, store={"log": str(log), "job": "a", "release": str(release)})
    conductor = fetch("blocking", "c1", board, ttl=0.3)
    events = Events(conductor)
    thread = start(conductor, max_dispatches=1)
    wait_until(lambda: len(lines(log)) == 2, "the hold task to start")

    # Time passes on the board's clock, less than a TTL between renewals, for
    # several TTLs in all: the claim is never lost.
    for step in range(1, 6):
        clock.now += 0.2
        wait_until(lambda: len(board.renewals) > step, "renewal %d" % step)  # noqa: B023 (used at once)
        assert board.renewals[-1].expires_at > clock.now
        assert board.find_owner(job) == "c1"
    release.touch()
    thread.join(DEADLINE)
    assert job.state == JobState.COMPLETE
    assert JOB_LOST not in events.names()
    assert {claim.token for claim in board.renewals} == {1}


def test_fetch_checks_its_arguments(board: JobBoard) -> None:
    with pytest.raises(ValueError, match="unknown conductor kind"):
        fetch("eager", "c", board)
    with pytest.raises(ValueError, match="one job at a time"):
        fetch("blocking", "c", board, max_simultaneous_jobs=2)
    with pytest.raises(ValueError, match="needs a persistence backend"):
        fetch("blocking", "c", fetch_board("nopersist", "memory"))
    with pytest.raises(ValueError, match="max_conductor_failures"):
        fetch("blocking", "c", board, max_conductor_failures=0)
    with pytest.raises(ValueError, match="backoff"):
        fetch("blocking", "c", board, backoff=10.0, max_backoff=5.0)
    conductor = fetch("nonblocking", "c", board, persistence="memory://", max_simultaneous_jobs=3)
    assert conductor.max_simultaneous_jobs == 3
    assert conductor.ttl == board.lease_ttl
    assert (conductor.max_conductor_failures, conductor.backoff, conductor.max_backoff) == (3, 5.0, 600.0)


def test_run_twice_at_once_is_refused(board: JobBoard) -> None:
    conductor = fetch("blocking", "c1", board, wait_timeout=0.05)
    thread = start(conductor)
    wait_until(lambda: conductor.dispatching, "the conductor to start")
    with pytest.raises(exc.InvalidState, match="already running"):
        conductor.run()
    conductor.stop()
    thread.join(DEADLINE)
    assert conductor.wait(0)


@pytest.fixture
def conductor_engine(engine_mode: str, engine_options: dict[str, Any]) -> dict[str, Any]:
    """``engine=`` and ``engine_options=`` for a conductor running flows in ``engine_mode``."""
    options = dict(engine_options)
    return {"engine": options.pop("engine"), "engine_options": options}


def test_cancel_seen_during_an_atom_starts_no_other_atom(
    board: JobBoard, log: Path, tmp_path: Path, conductor_engine: dict[str, Any]
) -> None:
    release = tmp_path / "release"
    job = post_flow(board, flows.gated_steps, store={"log": str(log), "job": "x", "release": str(release)})
    # A short lease: the heartbeat (every ttl / 3) is what sees the request while "first" runs.
    conductor = fetch("blocking", "c1", board, ttl=0.3, **conductor_engine)
    events = Events(conductor)
    transitions: list[tuple[str, str]] = []

    def watch(event: str, details: dict[str, Any]) -> None:
        details["engine"].atom_notifier.register(
            "*", lambda state, details: transitions.append((details["atom_name"], str(state)))
        )

    conductor.notifier.register(RUNNING_START, watch)
    thread = start(conductor, max_dispatches=1)
    wait_until(lambda: len(lines(log)) == 1, "the first task to start")

    assert board.cancel(job) == JobState.CLAIMED
    events.wait_for(JOB_CANCELLING)
    release.touch()  # "first" returns only once the conductor has seen the request
    thread.join(DEADLINE)

    assert job.state == JobState.CANCELLED
    assert events.wait_for(JOB_CANCELLED)["state"] == states.REVERTED
    assert [line.split()[0] for line in lines(log)] == ["first", "undo-first"]
    assert ("first", states.RUNNING) in transitions and ("first", states.REVERTED) in transitions
    assert not [state for name, state in transitions if name != "first"]
    book = board.load_book(job)
    assert book is not None
    (fd,) = book
    assert {ad.name: ad.state for ad in fd} == {
        "first": states.REVERTED,
        "second": states.PENDING,
        "third": states.PENDING,
    }


def test_cancel_seen_by_a_write_ahead_check_starts_no_atom(
    clock: FakeClock, log: Path, tmp_path: Path, conductor_engine: dict[str, Any]
) -> None:
    from flowkit.jobs.backends.impl_memory import MemoryJobBoard
    from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend

    # A SQL logbook buffers writes: "first"'s result and "second"'s RUNNING go in one flush.
    persistence = SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "logbook.db"))
    board = MemoryJobBoard("tests", persistence=persistence, clock=clock)
    release = tmp_path / "release"
    job = post_flow(board, flows.gated_steps, store={"log": str(log), "job": "x", "release": str(release)})
    # A lease so long the heartbeat never polls: the claim check of the flush
    # that writes "second" ahead (RUNNING) is the first to see the request.
    conductor = fetch("blocking", "c1", board, ttl=600, **conductor_engine)
    events = Events(conductor)
    executed: list[str] = []

    def watch(event: str, details: dict[str, Any]) -> None:
        details["engine"].atom_notifier.register(
            states.SUCCESS, lambda state, details: executed.append(details["atom_name"])
        )

    conductor.notifier.register(RUNNING_START, watch)
    thread = start(conductor, max_dispatches=1)
    wait_until(lambda: len(lines(log)) == 1, "the first task to start")

    assert board.cancel(job) == JobState.CLAIMED
    release.touch()
    thread.join(DEADLINE)

    assert job.state == JobState.CANCELLED
    assert events.wait_for(JOB_CANCELLED)["state"] == states.REVERTED
    assert events.names(job.uuid).count(JOB_CANCELLING) == 1
    assert executed == ["first"]
    assert [line.split()[0] for line in lines(log)] == ["first", "undo-first"]
    book = board.load_book(job)
    assert book is not None
    (fd,) = book
    assert {ad.name: ad.state for ad in fd} == {
        "first": states.REVERTED,
        "second": states.PENDING,
        "third": states.PENDING,
    }
    persistence.close()
