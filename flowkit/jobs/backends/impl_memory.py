"""A job board in this process's memory: for tests and single-process applications.

Every operation runs under one lock; ``wait()`` and ``Job.wait()`` sleep on a
condition variable that each change notifies.  Nothing runs when a lease
lapses or a delayed job comes due, so a waiter blocks until the earliest such
time with the board clock's ``timeout`` and is woken by the clock's jumps
(``on_change``: a :class:`~flowkit.testing.clock.VirtualClock`).  A plain
callable clock can jump without telling anyone: with one, while some job is
claimed or not yet due, a waiter re-reads at least every
:attr:`MemoryJobBoard.expiry_check` seconds of real time.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from flowkit import exceptions as exc
from flowkit.clock import Clock
from flowkit.jobs.base import (
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_DETAILS_BYTES,
    CancelRequest,
    Claim,
    FailureRecord,
    FencedBackend,
    Job,
    JobBoard,
    JobState,
    JobStatus,
    Posting,
    _clip_error,
)
from flowkit.persistence.base import Backend

__all__ = ["MemoryJobBoard"]

_T = TypeVar("_T")


@dataclasses.dataclass
class _Record:
    job: Job
    seq: int
    state: JobState = JobState.UNCLAIMED
    owner: str | None = None
    token: int = 0
    expires_at: float = 0.0
    cancel: CancelRequest | None = None
    attempts: int = 0
    last_error: str | None = None
    failed_by: list[str] = dataclasses.field(default_factory=list)
    due_at: float | None = None
    parked: bool = False
    park_reason: str | None = None
    woken: bool = False  # a wake came while claimed: the owner's park makes the job due now
    outcome: str | None = None

    def live_state(self, now: float) -> JobState:
        if self.state is JobState.CLAIMED and self.expires_at <= now:
            return JobState.UNCLAIMED
        return self.state

    def due(self, now: float) -> bool:
        if self.due_at is None:
            return not (self.parked and self.state is JobState.UNCLAIMED)
        return self.due_at <= now

    def unpark(self) -> None:
        self.parked = False
        self.park_reason = None
        self.woken = False

    def record_failure(self, who: str, error: str) -> None:
        self.attempts += 1
        self.last_error = _clip_error(error)
        if who not in self.failed_by:
            self.failed_by.append(who)


class _MemoryFencedBackend(FencedBackend):
    """Checks the claim and writes under the board's lock, so no claim can slip in between."""

    board: MemoryJobBoard

    def fenced(self, write: Callable[[], _T]) -> _T:
        """Check and write as one step under the board's lock."""
        with self.board._cond:
            self.saw(self.board.ensure_current(self.claim))
            return write()


class MemoryJobBoard(JobBoard):
    """Jobs in a dict guarded by one condition variable; see the module docs."""

    #: Longest real-time sleep of a waiter while leases could expire (an injected clock may jump).
    expiry_check = 0.05

    def __init__(
        self,
        name: str,
        *,
        persistence: Backend | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        clock: Clock | Callable[[], float] | None = None,
        max_details_bytes: int = DEFAULT_MAX_DETAILS_BYTES,
    ) -> None:
        super().__init__(
            name, persistence=persistence, lease_ttl=lease_ttl, clock=clock, max_details_bytes=max_details_bytes
        )
        self._cond = threading.Condition(threading.RLock())
        self._records: dict[str, _Record] = {}
        self._by_key: dict[str, str] = {}
        self._seq = itertools.count()

    # -- reading ------------------------------------------------------------------------

    def _get(self, job: Job | str) -> _Record:
        uuid = self._uuid_of(job)
        record = self._records.get(uuid)
        if record is None:
            raise exc.NotFound("no job %s on board %r" % (uuid, self.name))
        return record

    def _sorted(self, records: Iterable[_Record]) -> list[Job]:
        return [r.job for r in sorted(records, key=lambda r: (r.job.priority.rank, r.seq))]

    def _post(self, posting: Posting, connection: Any) -> Job:
        """Add the job under the board's lock (see :meth:`~flowkit.jobs.base.JobBoard.post`)."""
        name, book, idempotency_key = posting.name, posting.book, posting.idempotency_key
        # Stored as a copy of what the other boards would store.
        details = json.loads(posting.details_json)
        with self._cond:
            if idempotency_key is not None and idempotency_key in self._by_key:
                return self._records[self._by_key[idempotency_key]].job
            if book is not None and self.persistence is not None:
                with self.persistence.get_connection() as conn:
                    conn.save_logbook(book)
                    conn.flush()
            job = Job(
                self,
                uuid=str(uuidlib.uuid4()),
                name=name,
                details=details,
                book_uuid=book.uuid if book is not None else None,
                book_name=book.name if book is not None else None,
                priority=posting.priority,
                created_on=datetime.datetime.fromtimestamp(self.clock(), datetime.timezone.utc),
                idempotency_key=idempotency_key,
                resources=posting.resources,
            )
            self._records[job.uuid] = _Record(job, next(self._seq), due_at=posting.due_at)
            if idempotency_key is not None:
                self._by_key[idempotency_key] = job.uuid
            self._cond.notify_all()
            return job

    def get_job(self, job_uuid: str) -> Job:
        """The job ``job_uuid``; NotFound if absent."""
        with self._cond:
            return self._get(job_uuid).job

    def iterjobs(
        self, only_unclaimed: bool = False, ensure_fresh: bool = False, *, include_final: bool = False
    ) -> Iterator[Job]:
        """Jobs not yet final (or all), by priority then age (see :meth:`~flowkit.jobs.base.JobBoard.iterjobs`)."""
        with self._cond:
            now = self.clock()
            wanted = [
                r
                for r in self._records.values()
                if (include_final or not r.state.final)
                and (not only_unclaimed or r.live_state(now) is JobState.UNCLAIMED)
            ]
            return iter(self._sorted(wanted))

    def failures_of(self, job: Job | str) -> FailureRecord:
        """The job's failed attempts."""
        with self._cond:
            r = self._get(job)
            return FailureRecord(r.attempts, r.last_error, tuple(r.failed_by), r.due_at)

    def status_of(self, job: Job | str) -> JobStatus:
        """The job's state, due time, parking and outcome."""
        with self._cond:
            r = self._get(job)
            state = r.live_state(self.clock())
            due = r.due_at if state is JobState.UNCLAIMED else None
            claimed = r.state is JobState.CLAIMED
            return JobStatus(
                state,
                due,
                r.parked and state is JobState.UNCLAIMED,
                r.park_reason,
                r.outcome,
                r.owner if claimed else None,
                r.expires_at if claimed else None,
            )

    def next_due(self) -> float | None:
        """The earliest due time of an unclaimed job not due yet; None if there is none."""
        with self._cond:
            return self._next_due(self.clock())

    def _next_due(self, now: float) -> float | None:
        return min(
            (
                r.due_at
                for r in self._records.values()
                if r.state is JobState.UNCLAIMED and r.due_at is not None and r.due_at > now
            ),
            default=None,
        )

    def state_of(self, job: Job | str) -> JobState:
        """The job's state now."""
        with self._cond:
            return self._get(job).live_state(self.clock())

    def find_owner(self, job: Job | str) -> str | None:
        """The owner of the job's live claim, or None."""
        with self._cond:
            record = self._get(job)
            return record.owner if record.live_state(self.clock()) is JobState.CLAIMED else None

    # -- claims ---------------------------------------------------------------------------

    def _held_keys(self, now: float, exclude: str | None = None) -> set[str]:
        return {
            key
            for r in self._records.values()
            if r.job.uuid != exclude and r.live_state(now) is JobState.CLAIMED
            for key in r.job.resources
        }

    def claim(self, job: Job | str, who: str, *, ttl: float | None = None) -> Claim:
        """Lease the job to ``who`` (see :meth:`~flowkit.jobs.base.JobBoard.claim`)."""
        seconds = self._ttl(ttl)
        with self._cond:
            record = self._get(job)
            now = self.clock()
            state = record.live_state(now)
            if state is JobState.CLAIMED:
                raise exc.UnclaimableJob(
                    "job %s (%r) is claimed by %r until %.3f"
                    % (record.job.uuid, record.job.name, record.owner, record.expires_at)
                )
            if state.final:
                raise exc.UnclaimableJob("job %s (%r) is %s" % (record.job.uuid, record.job.name, state.value))
            if state is JobState.UNCLAIMED and not record.due(now):
                raise self._not_due(
                    record.job.uuid, record.job.name, record.due_at, now, record.attempts, record.last_error
                )
            if record.job.resources:
                busy = sorted(set(record.job.resources) & self._held_keys(now, exclude=record.job.uuid))
                if busy:
                    raise exc.UnclaimableJob(
                        "job %s (%r) needs resource(s) %s held by another claimed job"
                        % (record.job.uuid, record.job.name, ", ".join(busy))
                    )
            record.state = JobState.CLAIMED
            record.unpark()
            record.owner = who
            record.token += 1
            record.expires_at = now + seconds
            return Claim(record.job.uuid, who, record.token, record.expires_at)

    def _claim_candidates(self) -> Iterator[Job]:
        """The jobs claimable now (due, resources free), in claim order: ``claim_next`` tries those."""
        with self._cond:
            return iter(self._claimable(self.clock()))

    def _current(self, claim: Claim) -> _Record:
        record = self._get(claim.job_uuid)
        now = self.clock()
        if record.state is not JobState.CLAIMED or record.token != claim.token:
            raise exc.LeaseLost(
                "the claim of %r on job %s (token %d) is gone: the job is %s with token %d"
                % (claim.owner, claim.job_uuid, claim.token, record.live_state(now).value, record.token)
            )
        if record.expires_at <= now:
            raise exc.LeaseLost(
                "the claim of %r on job %s (token %d) expired %.3fs ago"
                % (claim.owner, claim.job_uuid, claim.token, now - record.expires_at)
            )
        return record

    def renew(self, claim: Claim, *, ttl: float | None = None) -> Claim:
        """Extend a current claim (see :meth:`~flowkit.jobs.base.JobBoard.renew`)."""
        seconds = self._ttl(ttl)
        with self._cond:
            record = self._current(claim)
            record.expires_at = self.clock() + seconds
            return dataclasses.replace(claim, expires_at=record.expires_at)

    def ensure_current(self, claim: Claim) -> CancelRequest | None:
        """LeaseLost unless ``claim`` is current; the pending cancel request, or None."""
        with self._cond:
            return self._current(claim).cancel

    def _owned(self, job: Job | str, who: str, token: int | None, action: str) -> _Record:
        record = self._get(job)
        if record.state is not JobState.CLAIMED or record.owner != who or (token is not None and token != record.token):
            holder = "%r (token %d)" % (record.owner, record.token) if record.state is JobState.CLAIMED else "nobody"
            raise exc.NotOwner(
                "%r cannot %s job %s (%r): it is %s, claimed by %s"
                % (who, action, record.job.uuid, record.job.name, record.live_state(self.clock()).value, holder)
            )
        return record

    def _finish(self, record: _Record, state: JobState) -> None:
        record.state = state
        record.owner = None
        record.expires_at = 0.0
        if state.final:
            record.cancel = None
        self._cond.notify_all()

    def consume(self, job: Job | str, who: str, *, token: int | None = None, outcome: str | None = None) -> None:
        """COMPLETE (CANCELLED if a cancel was requested), ``outcome`` recorded; owner only."""
        ended = self._check_outcome(outcome)
        with self._cond:
            record = self._owned(job, who, token, "consume")
            record.outcome = ended
            self._finish(record, JobState.CANCELLED if record.cancel is not None else JobState.COMPLETE)

    def park(
        self,
        job: Job | str,
        who: str,
        *,
        due: float | None,
        token: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Back to UNCLAIMED until ``due`` (None: until woken), no failure counted; owner only."""
        when = self._check_due(due)
        with self._cond:
            record = self._owned(job, who, token, "park")
            if record.woken:
                when = self.clock()
            record.unpark()
            record.parked = True
            record.park_reason = None if reason is None else _clip_error(reason)
            record.due_at = when
            self._finish(record, JobState.UNCLAIMED)

    def wake(self, job: Job | str) -> bool:
        """Make a parked job due now (see :meth:`~flowkit.jobs.base.JobBoard.wake`)."""
        with self._cond:
            record = self._get(job)
            if record.state is JobState.CLAIMED:
                record.woken = True
                return False
            if record.state is not JobState.UNCLAIMED or not record.parked:
                return False
            now = self.clock()
            if record.due_at is None or record.due_at > now:
                record.due_at = now
            self._cond.notify_all()
            return True

    def abandon(self, job: Job | str, who: str, *, token: int | None = None) -> None:
        """Back to UNCLAIMED; owner only."""
        with self._cond:
            record = self._owned(job, who, token, "abandon")
            record.due_at = None
            record.unpark()
            self._finish(record, JobState.UNCLAIMED)

    def fail(self, job: Job | str, who: str, error: str, *, token: int | None = None, delay: float = 0.0) -> None:
        """Back to UNCLAIMED after ``delay``, the failure recorded; owner only."""
        seconds = self._check_delay(delay)
        with self._cond:
            record = self._owned(job, who, token, "fail")
            record.record_failure(who, error)
            record.unpark()
            record.due_at = self.clock() + seconds
            self._finish(record, JobState.UNCLAIMED)

    def trash(self, job: Job | str, who: str, *, token: int | None = None, error: str | None = None) -> None:
        """TRASHED (the failure recorded, with ``error``); owner only."""
        with self._cond:
            record = self._owned(job, who, token, "trash")
            if error is not None:
                record.record_failure(who, error)
            record.due_at = None
            record.unpark()
            self._finish(record, JobState.TRASHED)

    def restore(self, job: Job | str) -> JobState:
        """TRASHED -> UNCLAIMED with a fresh count (see :meth:`~flowkit.jobs.base.JobBoard.restore`)."""
        with self._cond:
            record = self._get(job)
            if record.state is not JobState.TRASHED:
                raise self._not_restorable(record.job.uuid, record.job.name, record.state)
            record.attempts = 0
            record.failed_by = []
            record.due_at = None
            record.unpark()
            self._finish(record, JobState.UNCLAIMED)
            return JobState.UNCLAIMED

    # -- cancellation -----------------------------------------------------------------------

    def cancel(self, job: Job | str, *, revert: bool = True) -> JobState:
        """Cancel the job (see :meth:`~flowkit.jobs.base.JobBoard.cancel`)."""
        with self._cond:
            record = self._get(job)
            state = record.live_state(self.clock())
            if state is JobState.UNCLAIMED:
                record.unpark()
                self._finish(record, JobState.CANCELLED)
                return JobState.CANCELLED
            if state is JobState.CLAIMED:
                record.cancel = CancelRequest(record.job.uuid, bool(revert))
            return state

    def cancel_requested(self, job: Job | str) -> CancelRequest | None:
        """The pending cancel request, or None."""
        with self._cond:
            return self._get(job).cancel

    # -- waiting -----------------------------------------------------------------------------

    def _claimable(self, now: float) -> list[Job]:
        held = self._held_keys(now)
        return self._sorted(
            r
            for r in self._records.values()
            if r.live_state(now) is JobState.UNCLAIMED and r.due(now) and not (held & set(r.job.resources))
        )

    def _sleep(self, deadline: float | None) -> bool:
        # Called with the lock held; False once the (real-time) deadline passed.
        now = self.clock()
        # Nothing notifies when a lease lapses or a job comes due: block until the first of those.
        times = [r.expires_at for r in self._records.values() if r.state is JobState.CLAIMED and r.expires_at > now]
        due = self._next_due(now)
        if due is not None:
            times.append(due)
        delay = self.clock.timeout(min(times)) if times else None
        if times and self._silent_clock:
            delay = self.expiry_check if delay is None else min(delay, self.expiry_check)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            delay = left if delay is None else min(delay, left)
        self._cond.wait(delay)
        return True

    def _notify_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> Iterator[Job]:
        """Block until some job is claimable and return those jobs; NotFound on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        unsubscribe = self.clock.on_change(self._notify_all)
        try:
            with self._cond:
                while True:
                    jobs = self._claimable(self.clock())
                    if jobs:
                        return iter(jobs)
                    if not self._sleep(deadline):
                        raise exc.NotFound("no claimable job on board %r within %ss" % (self.name, timeout))
        finally:
            unsubscribe()

    def wait_for_job(self, job: Job | str, timeout: float | None = None) -> bool:
        """Block until the job is final; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._get(job).state.final:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # -- fencing ---------------------------------------------------------------------------------

    def fenced_backend(self, backend: Backend, claim: Claim) -> Backend:
        """``backend`` whose flushes check ``claim`` and write under this board's lock."""
        return _MemoryFencedBackend(backend, self, claim)

    def __repr__(self) -> str:
        return "<MemoryJobBoard %r jobs=%d>" % (self.name, len(self._records))
