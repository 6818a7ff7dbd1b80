"""The job board contract as a pytest suite.

Subclass :class:`JobBoardTests` and provide a ``make_board`` fixture: a
callable ``make_board(clock=None, lease_ttl=30.0)`` returning a board
(named the same on every call) over a fresh, empty store, with a
persistence backend for the jobs' logbooks that keeps its own copy of what
it stores (e.g. SQLite; the fencing tests read back what was written).  Boards made twice in one test
must see the same jobs (for the memory board, return the same object)::

    class TestMyBoard(JobBoardTests):
        @pytest.fixture
        def make_board(self):
            boards = []
            def make(clock=None, lease_ttl=30.0):
                board = MyBoard("tests", clock=clock or time.time, lease_ttl=lease_ttl, ...)
                boards.append(board)
                return board
            yield make
            for board in boards:
                board.close()

Lease expiry is tested with :class:`FakeClock` (no test sleeps a TTL), due
times of delayed and parked jobs with :class:`flowkit.testing.clock.VirtualClock`;
waits are bounded by deadlines.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from flowkit import exceptions as exc
from flowkit import states
from flowkit.jobs.base import (
    DEFAULT_MAX_DETAILS_BYTES,
    MAX_ERROR_CHARS,
    FailureRecord,
    FencedBackend,
    Job,
    JobBoard,
    JobPriority,
    JobState,
)
from flowkit.persistence.models import FlowDetail, LogBook, TaskDetail
from flowkit.testing.clock import VirtualClock

__all__ = ["JobBoardTests", "FakeClock", "MakeBoard"]

#: ``make_board(clock=None, lease_ttl=30.0) -> JobBoard``
MakeBoard = Callable[..., JobBoard]


class FakeClock:
    """A clock that only moves when told: ``clock()`` is the time, ``advance(s)`` moves it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        with self._lock:
            self._now += seconds


def _state(job: Job) -> JobState:
    # Through a call, so type checkers do not narrow job.state across board calls.
    return job.state


def _race(worker: Callable[[str], None], count: int) -> None:
    """Run ``worker("w0")`` ... ``worker("w<count-1>")`` on threads at once; wait for them (bounded)."""
    threads = [threading.Thread(target=worker, args=("w%d" % i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def _book(name: str = "job-book") -> LogBook:
    book = LogBook(name=name)
    fd = FlowDetail(name="flow")
    fd.meta = {"factory": {"path": "tests.jobs:make_flow"}}
    fd.add(TaskDetail("step"))
    book.add(fd)
    return book


class JobBoardTests:
    """The contract tests; subclass and provide ``make_board`` (see the module docs)."""

    @pytest.fixture
    def make_board(self) -> Iterator[MakeBoard]:
        """Override: yield ``make(clock=None, lease_ttl=30.0) -> JobBoard`` over one fresh store."""
        raise NotImplementedError("define a 'make_board' fixture in your subclass of JobBoardTests")
        yield  # pragma: no cover

    @pytest.fixture
    def clock(self) -> FakeClock:
        """A fake clock for lease tests."""
        return FakeClock()

    @pytest.fixture
    def vclock(self) -> VirtualClock:
        """A virtual clock for due times (delayed and parked jobs)."""
        return VirtualClock(1_700_000_000.0)

    @pytest.fixture
    def virtual(self, make_board: MakeBoard, vclock: VirtualClock) -> JobBoard:
        """A board on the virtual clock."""
        return make_board(clock=vclock)

    @pytest.fixture
    def board(self, make_board: MakeBoard) -> JobBoard:
        """A board on the real clock."""
        return make_board()

    @pytest.fixture
    def timed(self, make_board: MakeBoard, clock: FakeClock) -> JobBoard:
        """A board on the fake clock."""
        return make_board(clock=clock)

    # -- posting and reading ----------------------------------------------------------------

    def test_post_makes_an_unclaimed_job_others_see(self, make_board: MakeBoard) -> None:
        board = make_board()
        job = board.post("resize", details={"store": {"size": 3}, "list": [1, "ü"]}, priority="high")
        assert _state(job) is JobState.UNCLAIMED and job.state == "UNCLAIMED"
        assert job.name == "resize" and job.priority is JobPriority.HIGH and job.book_uuid is None
        other = make_board()
        seen = other.get_job(job.uuid)
        assert seen == job and seen.name == "resize"
        assert seen.details == {"store": {"size": 3}, "list": [1, "ü"]}
        assert seen.priority is JobPriority.HIGH
        assert abs(seen.created_on.timestamp() - job.created_on.timestamp()) < 0.01
        assert [j.uuid for j in other.iterjobs()] == [job.uuid]
        assert [j.uuid for j in other.iterjobs(only_unclaimed=True, ensure_fresh=True)] == [job.uuid]
        assert other.job_count == 1

    def test_post_saves_the_book(self, board: JobBoard) -> None:
        book = _book()
        job = board.post("with-book", book=book)
        assert job.book_uuid == book.uuid and job.book_name == book.name
        stored = board.get_job(job.uuid).book
        assert stored is not None and stored.uuid == book.uuid
        assert [fd.name for fd in stored] == ["flow"]
        assert list(stored)[0].meta["factory"] == {"path": "tests.jobs:make_flow"}

    def test_jobs_listed_by_priority_then_age(self, board: JobBoard) -> None:
        low = board.post("low", priority=JobPriority.LOW)
        first = board.post("normal-1")
        top = board.post("top", priority="VERY_HIGH")
        second = board.post("normal-2")
        assert [j.name for j in board.iterjobs()] == [top.name, first.name, second.name, low.name]

    def test_bad_arguments_are_refused(self, board: JobBoard) -> None:
        with pytest.raises(ValueError, match="priority"):
            board.post("x", priority="urgent")
        with pytest.raises(ValueError, match="resource"):
            board.post("x", resources=[""])
        with pytest.raises(TypeError):
            board.post("x", details={"not-json": object()})
        assert board.job_count == 0

    def test_details_over_the_size_limit_are_refused_before_writing(self, board: JobBoard) -> None:
        assert board.max_details_bytes == DEFAULT_MAX_DETAILS_BYTES
        huge = {"blob": "x" * DEFAULT_MAX_DETAILS_BYTES}
        with pytest.raises(
            exc.JobFailure, match=r"'huge'.* %d bytes.* %d bytes" % (len(json.dumps(huge)), DEFAULT_MAX_DETAILS_BYTES)
        ):
            board.post("huge", book=_book("huge-book"), details=huge)
        assert board.job_count == 0
        assert list(board.iterjobs()) == []
        if board.persistence is not None:
            with board.persistence.get_connection() as conn:
                assert [b.name for b in conn.get_logbooks()] == []  # not even the logbook was written

        board.max_details_bytes = 100
        # The limit counts the bytes of the JSON: {"s": "..."} is 9 bytes around the text.
        fits = {"s": "x" * 91}
        job = board.post("fits", details=fits)
        assert board.get_job(job.uuid).details == fits
        with pytest.raises(exc.JobFailure, match="'over'.* 101 bytes.*limit of 100 bytes"):
            board.post("over", details={"s": "x" * 92})
        assert [j.name for j in board.iterjobs()] == ["fits"]

    def test_details_must_be_standard_json(self, board: JobBoard) -> None:
        with pytest.raises(ValueError):
            board.post("nan", details={"x": float("nan")})
        with pytest.raises(ValueError):
            board.post("inf", details={"x": float("inf")})
        assert board.job_count == 0

    def test_unknown_job_is_not_found(self, board: JobBoard) -> None:
        for call in (
            lambda: board.get_job("nope"),
            lambda: board.state_of("nope"),
            lambda: board.claim("nope", "me"),
            lambda: board.find_owner("nope"),
        ):
            with pytest.raises(exc.NotFound):
                call()

    def test_idempotency_key_returns_the_existing_job(self, make_board: MakeBoard) -> None:
        board = make_board()
        job = board.post("charge", details={"n": 1}, idempotency_key="order-7")
        again = make_board().post("charge", details={"n": 2}, idempotency_key="order-7")
        assert again.uuid == job.uuid and again.details == {"n": 1}
        other = board.post("charge", idempotency_key="order-8")
        assert other.uuid != job.uuid
        assert board.job_count == 2
        # Still deduplicated once the first job is done.
        claim = board.claim(job, "w")
        board.consume(job, "w", token=claim.token)
        assert board.post("charge", idempotency_key="order-7").uuid == job.uuid

    # -- claims -----------------------------------------------------------------------------------

    def test_claim_is_exclusive(self, make_board: MakeBoard) -> None:
        board = make_board()
        job = board.post("j")
        claim = board.claim(job, "alice")
        assert (claim.job_uuid, claim.owner) == (job.uuid, "alice") and claim.token >= 1
        other = make_board()
        assert other.state_of(job) is JobState.CLAIMED and _state(job) is JobState.CLAIMED
        assert other.find_owner(job) == "alice"
        assert list(other.iterjobs(only_unclaimed=True)) == []
        assert [j.uuid for j in other.iterjobs()] == [job.uuid]
        with pytest.raises(exc.UnclaimableJob, match="alice"):
            other.claim(job, "bob")
        with pytest.raises(exc.UnclaimableJob):
            board.claim(job, "alice")

    def test_only_the_owner_finishes_a_job(self, board: JobBoard) -> None:
        job = board.post("j")
        for action in (board.consume, board.abandon, board.trash):
            with pytest.raises(exc.NotOwner):
                action(job, "alice")  # nobody holds it
        claim = board.claim(job, "alice")
        for action in (board.consume, board.abandon, board.trash):
            with pytest.raises(exc.NotOwner, match="bob"):
                action(job, "bob")
            with pytest.raises(exc.NotOwner):
                action(job, "alice", token=claim.token + 1)
        assert _state(job) is JobState.CLAIMED
        board.consume(job, "alice", token=claim.token)
        assert _state(job) is JobState.COMPLETE and board.find_owner(job) is None
        assert list(board.iterjobs()) == [] and board.job_count == 0
        with pytest.raises(exc.UnclaimableJob, match="COMPLETE"):
            board.claim(job, "bob")
        with pytest.raises(exc.NotOwner):
            board.consume(job, "alice")

    def test_abandon_makes_it_claimable_with_a_new_token(self, board: JobBoard) -> None:
        job = board.post("j")
        first = board.claim(job, "alice")
        board.abandon(job, "alice")
        assert _state(job) is JobState.UNCLAIMED and board.find_owner(job) is None
        second = board.claim(job, "bob")
        assert second.token > first.token
        with pytest.raises(exc.LeaseLost):
            board.ensure_current(first)
        board.ensure_current(second)

    def test_trash_ends_the_job(self, board: JobBoard) -> None:
        job = board.post("j")
        board.claim(job, "alice")
        board.trash(job, "alice")
        assert _state(job) is JobState.TRASHED and board.job_count == 0
        with pytest.raises(exc.UnclaimableJob):
            board.claim(job, "bob")

    # -- leases -----------------------------------------------------------------------------------

    def test_expired_claim_is_claimable_again_and_fenced(self, timed: JobBoard, clock: FakeClock) -> None:
        job = timed.post("j")
        first = timed.claim(job, "alice", ttl=10)
        assert first.expires_at == pytest.approx(clock() + 10)
        clock.advance(9.5)
        assert _state(job) is JobState.CLAIMED
        timed.ensure_current(first)
        clock.advance(1)
        assert timed.state_of(job) is JobState.UNCLAIMED and timed.find_owner(job) is None
        assert [j.uuid for j in timed.iterjobs(only_unclaimed=True)] == [job.uuid]
        with pytest.raises(exc.LeaseLost, match="expired"):
            timed.ensure_current(first)
        with pytest.raises(exc.LeaseLost):
            timed.renew(first)
        second = timed.claim(job, "bob", ttl=10)
        assert second.token > first.token
        with pytest.raises(exc.LeaseLost):
            timed.renew(first)
        with pytest.raises(exc.NotOwner):
            timed.consume(job, "alice")
        timed.consume(job, "bob")
        assert _state(job) is JobState.COMPLETE

    def test_status_shows_the_lease_and_an_owner_that_let_it_expire(self, timed: JobBoard, clock: FakeClock) -> None:
        job = timed.post("j")
        assert (timed.status_of(job).owner, timed.status_of(job).lease_expires_at) == (None, None)
        claim = timed.claim(job, "alice", ttl=10)
        status = timed.status_of(job)
        assert status.state is JobState.CLAIMED and status.owner == "alice" and not status.lease_expired
        assert status.lease_expires_at == pytest.approx(claim.expires_at)
        clock.advance(11)  # alice died: no renewal
        status = timed.status_of(job)
        assert status.state is JobState.UNCLAIMED and status.lease_expired
        assert status.owner == "alice" and status.lease_expires_at == pytest.approx(claim.expires_at)
        timed.claim(job, "bob", ttl=10)
        assert timed.status_of(job).owner == "bob" and not timed.status_of(job).lease_expired
        timed.consume(job, "bob")
        status = timed.status_of(job)
        assert (status.state, status.owner, status.lease_expires_at) == (JobState.COMPLETE, None, None)
        other = timed.post("k")
        timed.claim(other, "carol", ttl=10)
        timed.abandon(other, "carol")
        assert (timed.status_of(other).owner, timed.status_of(other).lease_expired) == (None, False)

    def test_renew_extends_the_lease(self, timed: JobBoard, clock: FakeClock) -> None:
        job = timed.post("j")
        claim = timed.claim(job, "alice", ttl=10)
        for _ in range(3):
            clock.advance(8)
            renewed = timed.renew(claim, ttl=10)
            assert renewed.token == claim.token and renewed.expires_at == pytest.approx(clock() + 10)
            claim = renewed
        clock.advance(8)
        assert _state(job) is JobState.CLAIMED and timed.find_owner(job) == "alice"
        with pytest.raises(exc.UnclaimableJob):
            timed.claim(job, "bob")

    def test_default_ttl_is_the_boards(self, make_board: MakeBoard, clock: FakeClock) -> None:
        board = make_board(clock=clock, lease_ttl=5.0)
        job = board.post("j")
        claim = board.claim(job, "alice")
        assert claim.expires_at == pytest.approx(clock() + 5.0)
        with pytest.raises(ValueError):
            board.claim(job, "alice", ttl=0)

    def test_owner_may_finish_after_expiry_if_nobody_claimed(self, timed: JobBoard, clock: FakeClock) -> None:
        job = timed.post("j")
        claim = timed.claim(job, "alice", ttl=1)
        clock.advance(5)
        timed.consume(job, "alice", token=claim.token)
        assert _state(job) is JobState.COMPLETE

    def test_renew_after_the_job_ended_is_lease_lost(self, board: JobBoard) -> None:
        job = board.post("j")
        claim = board.claim(job, "alice")
        board.consume(job, "alice")
        with pytest.raises(exc.LeaseLost):
            board.renew(claim)

    # -- resources --------------------------------------------------------------------------------

    def test_resource_held_by_one_claimed_job_at_a_time(self, timed: JobBoard, clock: FakeClock) -> None:
        a = timed.post("a", resources=["volume:42", "host:1"])
        b = timed.post("b", resources=["volume:42"])
        c = timed.post("c", resources=["volume:43"])
        timed.claim(a, "alice", ttl=10)
        with pytest.raises(exc.UnclaimableJob, match="volume:42"):
            timed.claim(b, "bob")
        assert _state(b) is JobState.UNCLAIMED
        assert [j.uuid for j in timed.wait(timeout=0)] == [c.uuid]
        timed.claim(c, "carol")
        # The holder's lease lapses: the resource is free again.
        clock.advance(11)
        b_claim = timed.claim(b, "bob", ttl=10)
        with pytest.raises(exc.UnclaimableJob, match="volume:42"):
            timed.claim(a, "alice")
        timed.abandon(b, "bob", token=b_claim.token)
        a_claim = timed.claim(a, "alice")
        timed.consume(a, "alice", token=a_claim.token)
        timed.claim(b, "bob")

    # -- claim_next ----------------------------------------------------------------------------------

    def test_claim_next_takes_priority_then_age(self, board: JobBoard) -> None:
        assert board.claim_next("w") is None
        low = board.post("low", priority=JobPriority.LOW)
        first = board.post("normal-1", details={"store": {"n": 1}})
        top = board.post("top", priority="VERY_HIGH")
        second = board.post("normal-2")
        order = []
        for _ in range(4):
            claimed = board.claim_next("w", ttl=60)
            assert claimed is not None
            job, claim = claimed
            assert claim.job_uuid == job.uuid and claim.owner == "w" and board.find_owner(job) == "w"
            order.append(job)
        assert [j.uuid for j in order] == [top.uuid, first.uuid, second.uuid, low.uuid]
        assert order[1].details == {"store": {"n": 1}} and order[1].name == "normal-1"
        assert board.claim_next("w") is None

    def test_claim_next_skips_busy_resources_and_finds_expired_leases(self, timed: JobBoard, clock: FakeClock) -> None:
        a = timed.post("a", resources=["volume:42"])
        b = timed.post("b", resources=["volume:42"])
        c = timed.post("c")
        first = timed.claim_next("alice", ttl=10)
        assert first is not None and first[0] == a
        claimed = timed.claim_next("bob", ttl=10)
        assert claimed is not None and claimed[0] == c  # b waits for volume:42
        assert timed.claim_next("carol", ttl=10) is None
        # Both leases lapse: a is claimable again (and first), then b once a is done.
        clock.advance(11)
        again = timed.claim_next("dave", ttl=10)
        assert again is not None and again[0] == a and again[1].token > first[1].token
        with pytest.raises(exc.LeaseLost):
            timed.ensure_current(first[1])
        assert timed.claim_next("erin", ttl=10) is not None  # c, whose lease lapsed too
        assert timed.claim_next("frank", ttl=10) is None  # b: volume:42 is dave's
        timed.consume(a, "dave", token=again[1].token)
        last = timed.claim_next("frank", ttl=10)
        assert last is not None and last[0] == b

    def test_claim_next_after_abandon_and_cancel(self, board: JobBoard) -> None:
        first = board.post("first")
        second = board.post("second")
        claimed = board.claim_next("w")
        assert claimed is not None and claimed[0] == first
        board.abandon(first, "w", token=claimed[1].token)
        board.cancel(second)
        again = board.claim_next("w")
        assert again is not None and again[0] == first and again[1].token > claimed[1].token
        assert board.claim_next("w") is None

    def test_concurrent_claim_next_hands_out_each_job_once(self, make_board: MakeBoard) -> None:
        board = make_board()
        jobs = {board.post("j%d" % i).uuid for i in range(40)}
        won: dict[str, list[str]] = {uuid: [] for uuid in jobs}
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def worker(name: str) -> None:
            mine = make_board()
            barrier.wait(10)
            try:
                while True:
                    claimed = mine.claim_next(name)
                    if claimed is None:
                        return
                    won[claimed[0].uuid].append(name)
                    mine.consume(claimed[0], name, token=claimed[1].token)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        _race(worker, 4)
        assert not errors
        assert all(len(owners) == 1 for owners in won.values()), won
        assert board.job_count == 0

    def test_consume_and_trash_release_resources(self, board: JobBoard) -> None:
        jobs = [board.post("j%d" % i, resources=["r"]) for i in range(3)]
        board.claim(jobs[0], "w")
        board.consume(jobs[0], "w")
        board.claim(jobs[1], "w")
        board.trash(jobs[1], "w")
        board.claim(jobs[2], "w")

    # -- failed attempts, trash and restore ---------------------------------------------------------

    def test_fail_gives_the_job_back_with_its_error_and_a_backoff(
        self, make_board: MakeBoard, clock: FakeClock
    ) -> None:
        board = make_board(clock=clock)
        job = board.post("env-problem")
        assert job.failures == FailureRecord()
        claim = board.claim(job, "c1")
        with pytest.raises(exc.NotOwner):
            board.fail(job, "c2", "not mine")
        board.fail(job, "c1", "cannot build the flow: no module named 'app'", token=claim.token, delay=10.0)

        seen = make_board(clock=clock).get_job(job.uuid)
        assert seen.state == JobState.UNCLAIMED and board.find_owner(job) is None
        error = "cannot build the flow: no module named 'app'"
        assert seen.failures == FailureRecord(1, error, ("c1",), clock() + 10.0)
        # Not claimable before its due time, by any route.
        with pytest.raises(exc.UnclaimableJob, match="not due"):
            board.claim(job, "c2")
        assert board.claim_next("c2") is None
        with pytest.raises(exc.NotFound):
            list(board.wait(timeout=0.05))

        clock.advance(10.0)
        assert [j.uuid for j in board.wait(timeout=5.0)] == [job.uuid]
        claimed = board.claim_next("c2")
        assert claimed is not None and claimed[0] == job
        board.fail(job, "c2", "again", token=claimed[1].token)  # no delay: claimable at once
        claim = board.claim(job, "c1")
        board.fail(job, "c1", "and again", token=claim.token, delay=0.0)
        record = board.failures_of(job)
        assert (record.attempts, record.last_error, record.failed_by) == (3, "and again", ("c1", "c2"))
        # A plain abandon is no failed attempt.
        claim = board.claim(job, "c3")
        board.abandon(job, "c3", token=claim.token)
        assert board.failures_of(job).attempts == 3 and board.failures_of(job).due_at is None
        with pytest.raises(ValueError, match="delay"):
            claim = board.claim(job, "c3")
            board.fail(job, "c3", "x", token=claim.token, delay=-1.0)

    def test_a_recorded_error_is_bounded(self, board: JobBoard) -> None:
        job = board.post("noisy")
        claim = board.claim(job, "c1")
        board.fail(job, "c1", "x" * 100_000, token=claim.token)
        error = board.failures_of(job).last_error
        assert error is not None and error.startswith("xxx") and len(error) <= MAX_ERROR_CHARS
        assert "100000" in error

    def test_trashed_jobs_are_listed_and_restorable(self, make_board: MakeBoard) -> None:
        board = make_board()
        trashed = board.post("trashed", resources=["vol:1"])
        done = board.post("done")
        cancelled = board.post("cancelled")
        claim = board.claim(trashed, "c1")
        board.trash(trashed, "c1", token=claim.token, error="unknown factory 'app:flow'")
        claim = board.claim(done, "c1")
        board.consume(done, "c1", token=claim.token)
        board.cancel(cancelled)

        assert list(board.iterjobs()) == [] and board.job_count == 0
        listed = {j.uuid: board.state_of(j) for j in make_board().iterjobs(include_final=True)}
        assert listed == {
            trashed.uuid: JobState.TRASHED,
            done.uuid: JobState.COMPLETE,
            cancelled.uuid: JobState.CANCELLED,
        }
        assert [j.name for j in board.iterjobs(include_final=True)] == ["trashed", "done", "cancelled"]
        assert board.failures_of(trashed) == FailureRecord(1, "unknown factory 'app:flow'", ("c1",), None)

        assert make_board().restore(trashed.uuid) == JobState.UNCLAIMED
        assert _state(trashed) is JobState.UNCLAIMED
        # A fresh count, the last error kept for the record.
        assert board.failures_of(trashed) == FailureRecord(0, "unknown factory 'app:flow'", (), None)
        assert [j.uuid for j in board.iterjobs(only_unclaimed=True)] == [trashed.uuid]
        claimed = board.claim_next("c2")
        assert claimed is not None and claimed[0] == trashed
        board.consume(trashed, "c2", token=claimed[1].token)

        for job in (trashed, done, cancelled):
            with pytest.raises(exc.InvalidState, match="only a TRASHED job"):
                board.restore(job)
        with pytest.raises(exc.NotFound):
            board.restore("nope")

    def test_restore_wakes_a_waiter(self, board: JobBoard) -> None:
        job = board.post("j")
        claim = board.claim(job, "c1")
        board.trash(job, "c1", token=claim.token)
        with pytest.raises(exc.NotFound):
            list(board.wait(timeout=0.05))
        board.restore(job)
        assert [j.uuid for j in board.wait(timeout=5.0)] == [job.uuid]

    # -- delayed jobs -----------------------------------------------------------------------------------

    def test_a_delayed_job_is_claimable_only_once_due(
        self, make_board: MakeBoard, virtual: JobBoard, vclock: VirtualClock
    ) -> None:
        start = vclock.now()
        job = virtual.post("later", delay=60)
        other = make_board(clock=vclock)
        assert other.get_job(job.uuid).due_at == pytest.approx(start + 60)
        assert _state(job) is JobState.UNCLAIMED and not job.parked and job.outcome is None
        assert [j.uuid for j in other.iterjobs(only_unclaimed=True)] == [job.uuid]  # listed, not claimable
        with pytest.raises(exc.UnclaimableJob, match="not due until"):
            other.claim(job, "w")
        assert other.claim_next("w") is None
        with pytest.raises(exc.NotFound):
            list(other.wait(timeout=0.05))
        assert other.next_due() == pytest.approx(start + 60)
        vclock.advance(59.5)
        assert other.claim_next("w") is None
        vclock.advance(0.5)
        assert other.next_due() is None
        assert [j.uuid for j in other.wait(timeout=5)] == [job.uuid]
        claimed = other.claim_next("w")
        assert claimed is not None and claimed[0] == job
        assert job.due_at is None  # claimed: not waiting on anything

    def test_a_delayed_job_is_claimed_directly_once_due(self, virtual: JobBoard, vclock: VirtualClock) -> None:
        job = virtual.post("later", delay=5, resources=["r"])
        vclock.advance(5)
        claim = virtual.claim(job, "w")
        virtual.consume(job, "w", token=claim.token)
        assert virtual.next_due() is None and _state(job) is JobState.COMPLETE

    def test_not_before_takes_an_aware_datetime_or_epoch_seconds(self, virtual: JobBoard, vclock: VirtualClock) -> None:
        start = vclock.now()
        when = datetime.datetime.fromtimestamp(start + 3600, datetime.timezone(datetime.timedelta(hours=2)))
        at_datetime = virtual.post("at-datetime", not_before=when)
        at_seconds = virtual.post("at-seconds", not_before=start + 1800)
        past = virtual.post("past", not_before=start - 10)  # already past: due now
        delay_zero = virtual.post("now", delay=0)
        assert at_datetime.due_at == pytest.approx(start + 3600)
        assert at_seconds.due_at == pytest.approx(start + 1800)
        assert past.due_at is None and delay_zero.due_at is None
        assert virtual.next_due() == pytest.approx(start + 1800)
        assert sorted(j.name for j in virtual.wait(timeout=5)) == ["now", "past"]
        vclock.advance(1800)
        assert virtual.next_due() == pytest.approx(start + 3600)
        assert sorted(j.name for j in virtual.wait(timeout=5)) == ["at-seconds", "now", "past"]

    def test_bad_due_times_are_refused_before_writing(self, virtual: JobBoard) -> None:
        with pytest.raises(ValueError, match="timezone"):
            virtual.post("naive", not_before=datetime.datetime(2030, 1, 1))
        with pytest.raises(ValueError, match="not both"):
            virtual.post("both", delay=1, not_before=2e9)
        for delay in (-1, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="delay"):
                virtual.post("bad", delay=delay)
        with pytest.raises(TypeError, match="delay"):
            virtual.post("bad", delay="10")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not_before"):
            virtual.post("bad", not_before="2030-01-01")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not_before"):
            virtual.post("bad", not_before=float("inf"))
        assert virtual.job_count == 0 and virtual.next_due() is None

    def test_a_waiter_wakes_when_the_virtual_clock_reaches_a_due_time(
        self, virtual: JobBoard, vclock: VirtualClock
    ) -> None:
        job = virtual.post("later", delay=3600)
        found: list[Job] = []
        thread = threading.Thread(target=lambda: found.extend(virtual.wait(timeout=20)))
        thread.start()
        deadline = time.monotonic() + 10
        while vclock.waiters == 0 and time.monotonic() < deadline:
            time.sleep(0.001)  # until the waiter subscribed to the clock
        assert vclock.waiters >= 1
        started = time.monotonic()
        vclock.advance(3600)
        thread.join(20)
        assert not thread.is_alive() and [j.uuid for j in found] == [job.uuid]
        assert time.monotonic() - started < 5  # woken by the jump, not by the 20 s timeout
        assert vclock.waiters == 0  # the waiter unsubscribed

    # -- parking ----------------------------------------------------------------------------------------

    def test_park_gives_the_job_back_until_its_due_time_without_a_failure(
        self, make_board: MakeBoard, virtual: JobBoard, vclock: VirtualClock
    ) -> None:
        job = virtual.post("waits", resources=["vol:1"])
        first = virtual.claim(job, "c1")
        with pytest.raises(exc.NotOwner):
            virtual.park(job, "c2", due=vclock.now() + 30)
        due = vclock.now() + 30
        virtual.park(job, "c1", due=due, token=first.token, reason="timer 'cool-down'")
        seen = make_board(clock=vclock).get_job(job.uuid)
        assert seen.state == JobState.UNCLAIMED and virtual.find_owner(job) is None
        assert seen.parked and seen.due_at == pytest.approx(due)
        assert virtual.status_of(job).reason == "timer 'cool-down'" and not virtual.status_of(job).on_signal
        assert virtual.failures_of(job).attempts == 0  # not a failed attempt
        with pytest.raises(exc.UnclaimableJob, match="not due until"):
            virtual.claim(job, "c2")
        assert virtual.claim_next("c2") is None and virtual.next_due() == pytest.approx(due)
        with pytest.raises(exc.LeaseLost):
            virtual.ensure_current(first)
        # The resource was released with the claim.
        other = virtual.post("other", resources=["vol:1"])
        claim = virtual.claim(other, "c3")
        virtual.consume(other, "c3", token=claim.token)

        vclock.advance(30)
        claimed = virtual.claim_next("c2")
        assert claimed is not None and claimed[0] == job and claimed[1].token > first.token
        assert not job.parked and virtual.status_of(job).reason is None
        virtual.consume(job, "c2", token=claimed[1].token)

    def test_a_job_parked_until_woken_waits_for_wake(
        self, make_board: MakeBoard, virtual: JobBoard, vclock: VirtualClock
    ) -> None:
        job = virtual.post("approval")
        claim = virtual.claim(job, "c1")
        virtual.park(job, "c1", due=None, token=claim.token, reason="signal 'approved'")
        assert job.parked and job.due_at is None and virtual.status_of(job).on_signal
        assert virtual.next_due() is None
        vclock.advance(10**6)  # no amount of time makes it due
        with pytest.raises(exc.UnclaimableJob, match="parked until woken"):
            virtual.claim(job, "c2")
        assert virtual.claim_next("c2") is None
        with pytest.raises(exc.NotFound):
            list(virtual.wait(timeout=0.05))

        assert make_board(clock=vclock).wake(job.uuid) is True
        assert job.parked and job.due_at == pytest.approx(vclock.now())
        assert virtual.wake(job) is True  # still parked (and due): waking again changes nothing
        claimed = virtual.claim_next("c2")
        assert claimed is not None and claimed[0] == job
        assert not job.parked

    def test_wake_of_a_job_that_is_not_parked(self, virtual: JobBoard) -> None:
        plain = virtual.post("plain")
        assert virtual.wake(plain) is False
        delayed = virtual.post("delayed", delay=60)
        assert virtual.wake(delayed) is False and delayed.due_at is not None  # a delay is not a park
        claim = virtual.claim(plain, "c1")
        virtual.consume(plain, "c1", token=claim.token)
        assert virtual.wake(plain) is False
        with pytest.raises(exc.NotFound):
            virtual.wake("nope")

    def test_wake_before_the_due_time_makes_it_due_now(self, virtual: JobBoard, vclock: VirtualClock) -> None:
        job = virtual.post("sleeps")
        claim = virtual.claim(job, "c1")
        virtual.park(job, "c1", due=vclock.now() + 3600, token=claim.token)
        assert virtual.next_due() is not None
        assert virtual.wake(job) is True
        assert virtual.next_due() is None
        claimed = virtual.claim_next("c2")
        assert claimed is not None and claimed[0] == job

    def test_wake_wakes_a_waiter(self, make_board: MakeBoard, vclock: VirtualClock) -> None:
        board = make_board(clock=vclock)
        job = board.post("approval")
        claim = board.claim(job, "c1")
        board.park(job, "c1", due=None, token=claim.token)
        found: list[Job] = []
        ready = threading.Event()

        def wait() -> None:
            ready.set()
            found.extend(board.wait(timeout=20))

        thread = threading.Thread(target=wait)
        thread.start()
        ready.wait(5)
        make_board(clock=vclock).wake(job)
        thread.join(20)
        assert not thread.is_alive() and [j.uuid for j in found] == [job.uuid]

    def test_a_wake_while_claimed_is_not_lost_by_the_park_that_follows(
        self, virtual: JobBoard, vclock: VirtualClock
    ) -> None:
        job = virtual.post("races")
        claim = virtual.claim(job, "c1")
        # The owner decided to park (its flow waits); a wake arrives before the park lands.
        assert virtual.wake(job) is False  # not parked yet, but kept for the owner's park
        virtual.park(job, "c1", due=vclock.now() + 3600, token=claim.token)
        assert job.due_at is not None and job.due_at <= vclock.now()
        claimed = virtual.claim_next("c2")
        assert claimed is not None and claimed[0] == job
        # The wake was used up: the next park waits as asked, and one parked until woken too.
        virtual.park(job, "c2", due=vclock.now() + 3600, token=claimed[1].token)
        assert virtual.claim_next("c3") is None
        vclock.advance(3600)
        claimed = virtual.claim_next("c3")
        assert claimed is not None
        assert virtual.wake(job) is False
        virtual.park(job, "c3", due=None, token=claimed[1].token)  # parked until woken: it was
        assert virtual.claim_next("c4") is not None

    def test_a_wake_before_a_claim_does_not_carry_over(self, virtual: JobBoard, vclock: VirtualClock) -> None:
        job = virtual.post("j")
        assert virtual.wake(job) is False  # unclaimed, not parked: nothing to keep
        claim = virtual.claim(job, "c1")
        virtual.park(job, "c1", due=None, token=claim.token)
        assert virtual.claim_next("c2") is None

    def test_park_refuses_bad_arguments(self, virtual: JobBoard) -> None:
        job = virtual.post("j")
        claim = virtual.claim(job, "c1")
        for due in (float("nan"), float("inf"), "soon"):
            with pytest.raises(ValueError, match="due"):
                virtual.park(job, "c1", due=due, token=claim.token)  # type: ignore[arg-type]
        with pytest.raises(exc.NotOwner):
            virtual.park(job, "c1", due=None, token=claim.token + 1)
        assert _state(job) is JobState.CLAIMED

    def test_a_parked_job_can_be_cancelled_and_abandon_unparks(self, virtual: JobBoard) -> None:
        job = virtual.post("j")
        claim = virtual.claim(job, "c1")
        virtual.park(job, "c1", due=None, token=claim.token)
        assert virtual.cancel(job) is JobState.CANCELLED
        assert not job.parked and virtual.wake(job) is False

    def test_next_due_is_the_earliest_waiting_job(self, virtual: JobBoard, vclock: VirtualClock) -> None:
        start = vclock.now()
        assert virtual.next_due() is None
        virtual.post("b", delay=10)
        virtual.post("a", delay=5)
        virtual.post("now")
        parked = virtual.post("parked")
        claim = virtual.claim(parked, "c1")
        virtual.park(parked, "c1", due=None, token=claim.token)
        assert virtual.next_due() == pytest.approx(start + 5)
        vclock.advance(5)
        assert virtual.next_due() == pytest.approx(start + 10)
        failing = virtual.claim_next("c2")  # "a": due now, and posted before "now"
        assert failing is not None and failing[0].name == "a"
        virtual.fail(failing[0], "c2", "cannot build", token=failing[1].token, delay=2)  # a backoff counts too
        assert virtual.next_due() == pytest.approx(start + 7)
        claimed = virtual.claim_next("c2")  # claimed jobs are not waiting
        assert claimed is not None and claimed[0].name == "now"
        assert virtual.next_due() == pytest.approx(start + 7)
        vclock.advance(5)
        assert virtual.next_due() is None

    # -- outcomes ---------------------------------------------------------------------------------------

    def test_consume_records_the_flow_outcome(self, make_board: MakeBoard) -> None:
        board = make_board()
        reverted = board.post("reverted")
        plain = board.post("plain")
        cancelled = board.post("cancelled")
        claim = board.claim(reverted, "c1")
        board.consume(reverted, "c1", token=claim.token, outcome=states.REVERTED)
        claim = board.claim(plain, "c1")
        board.consume(plain, "c1", token=claim.token)
        claim = board.claim(cancelled, "c1")
        board.cancel(cancelled)
        board.consume(cancelled, "c1", token=claim.token, outcome="SUSPENDED")
        other = make_board()
        assert other.get_job(reverted.uuid).outcome == "REVERTED" and _state(reverted) is JobState.COMPLETE
        assert other.get_job(plain.uuid).outcome is None
        assert cancelled.outcome == "SUSPENDED" and _state(cancelled) is JobState.CANCELLED
        assert other.status_of(reverted) == other.status_of(reverted.uuid)

    def test_a_bad_outcome_is_refused_and_the_job_stays_claimed(self, board: JobBoard) -> None:
        job = board.post("j")
        claim = board.claim(job, "c1")
        for outcome in ("", "X" * 33, 7):
            with pytest.raises(ValueError, match="outcome"):
                board.consume(job, "c1", token=claim.token, outcome=outcome)  # type: ignore[arg-type]
        assert _state(job) is JobState.CLAIMED and job.outcome is None

    # -- cancellation -------------------------------------------------------------------------------

    def test_cancel_unclaimed_job(self, board: JobBoard) -> None:
        job = board.post("j")
        assert board.cancel(job) is JobState.CANCELLED
        assert _state(job) is JobState.CANCELLED and board.job_count == 0
        with pytest.raises(exc.UnclaimableJob):
            board.claim(job, "w")
        assert board.cancel(job) is JobState.CANCELLED

    @pytest.mark.parametrize("revert", [True, False])
    def test_cancel_claimed_job_asks_the_owner(self, make_board: MakeBoard, revert: bool) -> None:
        board = make_board()
        job = board.post("j")
        board.claim(job, "w")
        assert board.cancel_requested(job) is None
        assert make_board().cancel(job, revert=revert) == JobState.CLAIMED
        request = board.cancel_requested(job)
        assert request is not None and request.job_uuid == job.uuid and request.revert is revert
        assert _state(job) is JobState.CLAIMED
        board.consume(job, "w")
        assert board.state_of(job) is JobState.CANCELLED

    @pytest.mark.parametrize("revert", [True, False])
    def test_claim_checks_report_a_cancel_request(self, make_board: MakeBoard, revert: bool) -> None:
        board = make_board()
        assert board.persistence is not None
        book = _book()
        job = board.post("j", book=book)
        claim = board.claim(job, "w")
        assert board.ensure_current(claim) is None
        fenced = board.fenced_backend(board.persistence, claim)
        atom = list(book)[0].find_by_name("step")
        assert atom is not None
        with fenced.get_connection() as conn:
            atom.state = states.RUNNING
            conn.update_atom_details(atom)
            conn.flush()
            assert isinstance(fenced, FencedBackend) and fenced.cancel is None
            make_board().cancel(job, revert=revert)
            request = board.ensure_current(claim)
            assert request is not None and request.job_uuid == job.uuid and request.revert is revert
            # The check that fences a flush sees it too, whichever way the board fences.
            atom.state = states.SUCCESS
            conn.update_atom_details(atom)
            conn.flush()
            assert fenced.cancel == request

    def test_cancel_after_the_lease_expired_ends_the_job(self, timed: JobBoard, clock: FakeClock) -> None:
        job = timed.post("j")
        timed.claim(job, "alice", ttl=5)
        timed.cancel(job, revert=True)
        clock.advance(6)
        # Expired, so the job reads UNCLAIMED: a cancel now ends it at once.
        assert timed.cancel(job) is JobState.CANCELLED

    def test_cancel_request_seen_by_the_next_owner(self, board: JobBoard) -> None:
        job = board.post("j")
        board.claim(job, "alice")
        board.cancel(job, revert=False)
        board.abandon(job, "alice")
        board.claim(job, "bob")
        request = board.cancel_requested(job)
        assert request is not None and request.revert is False

    # -- waiting ----------------------------------------------------------------------------------------

    def test_wait_times_out_with_not_found(self, board: JobBoard) -> None:
        started = time.monotonic()
        with pytest.raises(exc.NotFound):
            board.wait(timeout=0.2)
        assert 0.15 <= time.monotonic() - started < 10

    def test_wait_wakes_on_post(self, make_board: MakeBoard) -> None:
        waiter = make_board()
        poster = make_board()
        found: list[Job] = []
        ready = threading.Event()

        def wait() -> None:
            ready.set()
            found.extend(waiter.wait(timeout=20))

        thread = threading.Thread(target=wait)
        thread.start()
        ready.wait(5)
        job = poster.post("late")
        thread.join(20)
        assert not thread.is_alive()
        assert [j.uuid for j in found] == [job.uuid]

    def test_wait_wakes_when_a_job_is_abandoned(self, board: JobBoard) -> None:
        job = board.post("j")
        board.claim(job, "w")
        with pytest.raises(exc.NotFound):
            board.wait(timeout=0.05)
        threading.Timer(0.05, board.abandon, args=(job, "w")).start()
        assert [j.uuid for j in board.wait(timeout=20)] == [job.uuid]

    def test_wait_sees_an_expired_lease(self, timed: JobBoard, clock: FakeClock) -> None:
        job = timed.post("j")
        timed.claim(job, "w", ttl=5)
        with pytest.raises(exc.NotFound):
            timed.wait(timeout=0.05)
        threading.Timer(0.05, clock.advance, args=(6,)).start()
        assert [j.uuid for j in timed.wait(timeout=20)] == [job.uuid]

    def test_job_wait_until_final(self, make_board: MakeBoard) -> None:
        board = make_board()
        job = board.post("j")
        assert job.wait(timeout=0.05) is False
        worker = make_board()
        worker.claim(job, "w")
        threading.Timer(0.05, worker.consume, args=(job, "w")).start()
        assert job.wait(timeout=20) is True
        assert _state(job) is JobState.COMPLETE

    # -- concurrency ------------------------------------------------------------------------------------

    def test_concurrent_claims_each_job_once(self, make_board: MakeBoard) -> None:
        board = make_board()
        jobs = [board.post("j%d" % i) for i in range(30)]
        won: dict[str, list[str]] = {j.uuid: [] for j in jobs}
        errors: list[BaseException] = []
        barrier = threading.Barrier(6)

        def worker(name: str) -> None:
            mine = make_board()
            barrier.wait(10)
            for job in jobs:
                try:
                    claim = mine.claim(job.uuid, name)
                except exc.UnclaimableJob:
                    continue
                except BaseException as error:  # pragma: no cover - reported below
                    errors.append(error)
                    continue
                won[job.uuid].append(name)
                mine.consume(job.uuid, name, token=claim.token)

        _race(worker, 6)
        assert not errors
        assert all(len(owners) == 1 for owners in won.values()), won
        assert board.job_count == 0

    # -- fencing ----------------------------------------------------------------------------------------

    def test_fenced_backend_refuses_writes_after_the_lease_is_lost(self, timed: JobBoard, clock: FakeClock) -> None:
        assert timed.persistence is not None
        book = _book()
        job = timed.post("j", book=book)
        claim = timed.claim(job, "alice", ttl=10)
        fenced = timed.fenced_backend(timed.persistence, claim)
        fd = list(book)[0]
        atom = fd.find_by_name("step")
        assert atom is not None
        with fenced.get_connection() as conn:
            conn.lock_flow(fd).release()
            atom.state = states.RUNNING
            conn.update_atom_details(atom)
            conn.flush()
            clock.advance(11)
            timed.claim(job, "bob", ttl=10)
            atom.state = states.SUCCESS
            atom.results = "stale"
            with pytest.raises(exc.LeaseLost) as caught:
                # Refused at the write or at the flush, depending on whether the store buffers.
                conn.update_atom_details(atom)
                conn.flush()
            assert isinstance(caught.value, exc.StorageFailure)
            with pytest.raises(exc.LeaseLost):
                conn.lock_flow(fd)
        with timed.persistence.get_connection() as reader:
            stored = reader.get_atom_details(atom.uuid)
        assert stored.state == states.RUNNING and stored.results is None

    def test_fenced_backend_writes_while_current(self, board: JobBoard) -> None:
        assert board.persistence is not None
        book = _book()
        job = board.post("j", book=book)
        claim = board.claim(job, "alice")
        atom = list(book)[0].find_by_name("step")
        assert atom is not None
        with board.fenced_backend(board.persistence, claim).get_connection() as conn:
            atom.state = states.SUCCESS
            atom.results = {"ok": 1}
            conn.update_atom_details(atom)
            conn.flush()
        with board.persistence.get_connection() as reader:
            assert reader.get_atom_details(atom.uuid).results == {"ok": 1}
        board.consume(job, "alice")
        with board.fenced_backend(board.persistence, claim).get_connection() as conn:
            with pytest.raises(exc.LeaseLost):
                conn.update_atom_details(atom)
                conn.flush()

    def test_signals_go_through_a_fenced_backend_with_or_without_the_claim(self, board: JobBoard) -> None:
        # A signal comes from outside the run, so it is not the claim holder's write to fence.
        assert board.persistence is not None
        book = _book()
        fd = list(book)[0]
        job = board.post("j", book=book)
        claim = board.claim(job, "alice")
        with board.fenced_backend(board.persistence, claim).get_connection() as conn:
            assert conn.send_signal(fd.uuid, "approved", {"by": "ann"}, "k") is True
            assert conn.send_signal(fd.uuid, "approved", {"by": "ann"}, "k") is False
            board.consume(job, "alice")
            assert conn.send_signal(fd.uuid, "shipped", 1) is True
            with pytest.raises(exc.SignalAlreadySent):
                conn.send_signal(fd.uuid, "shipped", 2)
            assert conn.get_signals(fd.uuid) == {"approved": {"by": "ann"}, "shipped": 1}
            assert [name for _, _, name in conn.signals_after(0)] == ["approved", "shipped"]
        with board.persistence.get_connection() as reader:
            assert reader.get_signals(fd.uuid, ["shipped"]) == {"shipped": 1}
