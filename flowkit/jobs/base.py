"""The job board contract: post, claim (a lease), renew, consume, abandon, cancel.

A *job* names a logbook (whose flow detail records how to rebuild the flow)
plus ``details`` (e.g. ``{"store": {...}}``).  A *board* holds jobs; a
conductor claims one, runs its flow, and consumes it.  The calls and their
names are TaskFlow's (``post``, ``iterjobs``, ``claim``, ``consume``,
``abandon``, ``trash``, ``find_owner``, ``wait``, ``job.state``,
``job.wait()``); flowkit adds:

Leases and fencing
    :meth:`JobBoard.claim` returns a :class:`Claim` that expires ``ttl``
    seconds later unless renewed with :meth:`JobBoard.renew`.  Once it
    expires the job reads as UNCLAIMED and anyone may claim it again.  Every
    claim of a job gets a strictly greater ``token`` than the claims before
    it, and a claim is *current* while its token is the job's latest and it
    has not expired.  :meth:`JobBoard.fenced_backend` wraps a persistence
    backend so that a flush through it raises
    :class:`~flowkit.exceptions.LeaseLost` (a ``StorageFailure``: the engine
    stops at once) unless the claim is still current, so an owner that lost
    its lease can never advance the logbook of a job another owner resumed.

Idempotent posts
    ``post(..., idempotency_key=K)`` returns the job already posted with
    ``K`` (in any state) instead of posting a second one.

Transactional posts (SQL board)
    ``post(..., connection=conn)`` writes the job *and* its logbook through
    the caller's own SQLAlchemy connection, inside the caller's
    transaction: if it rolls back there is neither job nor logbook.

Resource locks
    ``post(..., resources=("volume:42",))``: at most one claimed job holds a
    given key; a job whose keys are held stays UNCLAIMED and ``claim`` raises
    :class:`~flowkit.exceptions.UnclaimableJob` until the holder finishes,
    abandons, or loses its lease.

Failed attempts
    An owner that cannot run a job for a reason that is not the job's fault
    (its flow cannot be built here: a missing module, an unregistered
    factory) calls :meth:`JobBoard.fail`: the job goes back UNCLAIMED with
    the error, one more attempt, the owner's name among ``failed_by``, and a
    due time before which nobody can claim it.  ``trash(..., error=...)``
    records the same before trashing.  :meth:`JobBoard.failures_of` reads
    the record; :meth:`JobBoard.restore` puts a TRASHED job back to
    UNCLAIMED with a fresh count; ``iterjobs(include_final=True)`` lists
    finished jobs too.

Cancellation
    :meth:`JobBoard.cancel` ends an unclaimed job at once (CANCELLED); for a
    claimed job it records a :class:`CancelRequest` that the owner polls with
    :meth:`JobBoard.cancel_requested` (the conductor then calls
    ``engine.cancel()`` when ``revert`` is true, else ``engine.suspend()``)
    and :meth:`JobBoard.consume` then ends the job CANCELLED, not COMPLETE.

Delayed jobs
    ``post(..., delay=seconds)`` or ``post(..., not_before=when)``: the job
    is UNCLAIMED but nobody can claim it before its due time
    (:attr:`Job.due_at`).  :meth:`JobBoard.next_due` is the earliest due
    time of such a job, so a conductor sleeps until then.

Parked jobs
    The claim holder of a job whose flow waits on a timer or a signal calls
    :meth:`JobBoard.park`: the job goes back UNCLAIMED without counting a
    failed attempt, claimable from ``due`` on, or (``due=None``) only once
    someone calls :meth:`JobBoard.wake`.  ``wake`` also makes a job parked
    with a due time due now.  A wake that comes while the job is still
    claimed (its owner about to park it) is kept on the job: the owner's
    next ``park`` makes it due at once, so no wake-up is lost.

Outcomes
    ``consume(..., outcome=state)`` records how the job's flow ended
    (SUCCESS, REVERTED, FAILURE, ...); :attr:`Job.outcome` reads it back.

Time is the board's ``clock`` (a :class:`flowkit.clock.Clock`, or a plain
``() -> seconds`` callable as before; the real clock unless injected: tests
pass a :class:`flowkit.testing.clock.VirtualClock` or a fake to expire leases
and bring due times without sleeping).  ``Claim.expires_at`` and due times
are in that clock's seconds.  A board blocks on it with ``clock.timeout``
and is woken when it jumps (``clock.on_change``).  Boards shared between
machines therefore assume their clocks agree to well within a lease's TTL.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import enum
import itertools
import json
import math
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from flowkit import exceptions as exc
from flowkit.clock import SYSTEM, Clock, as_clock
from flowkit.persistence.base import Backend, Connection, FlowLock

if TYPE_CHECKING:
    from flowkit.persistence.models import AtomDetail, FlowDetail, LogBook

__all__ = [
    # values
    "JobState",
    "JobPriority",
    "Claim",
    "CancelRequest",
    "FailureRecord",
    "JobStatus",
    "Job",
    # the contract
    "JobBoard",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_MAX_DETAILS_BYTES",
    "MAX_ERROR_CHARS",
    "MAX_OUTCOME_CHARS",
    "TRANSITIONS",
    "check_job_transition",
    # fencing
    "FencedBackend",
    "FencedConnection",
]

_T = TypeVar("_T")

#: Seconds a claim lasts unless the board or the claim call says otherwise.
DEFAULT_LEASE_TTL = 30.0

#: The largest ``details`` a board accepts unless told otherwise: 1 MiB of JSON.
DEFAULT_MAX_DETAILS_BYTES = 1 << 20

#: A recorded ``last_error`` is cut to this many characters (the rest is elided).
MAX_ERROR_CHARS = 2000

#: The longest ``outcome`` :meth:`JobBoard.consume` records (a flow state's name fits many times over).
MAX_OUTCOME_CHARS = 32


class JobState(str, enum.Enum):
    """Where a job is in its life; the values equal TaskFlow's job state strings.

    A claim whose lease expired reads as ``UNCLAIMED``.  ``COMPLETE``,
    ``TRASHED`` and ``CANCELLED`` are final: nothing runs them again,
    except that an operator may :meth:`~JobBoard.restore` a TRASHED job.
    """

    UNCLAIMED = "UNCLAIMED"
    CLAIMED = "CLAIMED"
    COMPLETE = "COMPLETE"
    TRASHED = "TRASHED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        """True for states in which a job is done (a TRASHED one leaves only by ``restore``)."""
        return self in (JobState.COMPLETE, JobState.TRASHED, JobState.CANCELLED)


#: Allowed state changes (an expired lease is CLAIMED -> CLAIMED by a new owner;
#: TRASHED -> UNCLAIMED is :meth:`JobBoard.restore`).
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.UNCLAIMED: frozenset({JobState.CLAIMED, JobState.CANCELLED}),
    JobState.CLAIMED: frozenset(
        {JobState.CLAIMED, JobState.UNCLAIMED, JobState.COMPLETE, JobState.TRASHED, JobState.CANCELLED}
    ),
    JobState.COMPLETE: frozenset(),
    JobState.TRASHED: frozenset({JobState.UNCLAIMED}),
    JobState.CANCELLED: frozenset(),
}


def check_job_transition(old: JobState, new: JobState) -> bool:
    """Whether a job may go from ``old`` to ``new`` (see :data:`TRANSITIONS`)."""
    return new in TRANSITIONS[old]


class JobPriority(str, enum.Enum):
    """How soon a job should run relative to others (TaskFlow's names and values)."""

    VERY_HIGH = "VERY_HIGH"
    HIGH = "HIGH"
    NORMAL = "NORMAL"
    LOW = "LOW"
    VERY_LOW = "VERY_LOW"

    def __str__(self) -> str:
        return self.value

    @property
    def rank(self) -> int:
        """0 for VERY_HIGH .. 4 for VERY_LOW: boards list jobs by rank, then by age."""
        return _PRIORITY_RANK[self]

    @classmethod
    def convert(cls, value: JobPriority | str) -> JobPriority:
        """``value`` as a JobPriority (accepts the names, any case); ValueError otherwise."""
        if isinstance(value, JobPriority):
            return value
        try:
            return cls(str(value).upper())
        except ValueError:
            raise ValueError(
                "unknown job priority %r (expected one of %s)" % (value, ", ".join(p.value for p in cls))
            ) from None


_PRIORITY_RANK = {p: i for i, p in enumerate(JobPriority)}


@dataclasses.dataclass(frozen=True)
class Claim:
    """A lease on a job: ``owner`` holds ``job_uuid`` until ``expires_at`` (board clock).

    ``token`` is the fencing token: it grows with every claim of the job, so
    a write carrying an older token is recognisably stale.
    """

    job_uuid: str
    owner: str
    token: int
    expires_at: float


@dataclasses.dataclass(frozen=True)
class CancelRequest:
    """Someone asked to cancel a claimed job; ``revert`` says revert (True) or suspend (False)."""

    job_uuid: str
    revert: bool


@dataclasses.dataclass(frozen=True)
class FailureRecord:
    """What owners that could not run a job recorded (:meth:`JobBoard.fail`).

    ``attempts`` counts the failed attempts since the job was posted or
    restored; ``failed_by`` names the distinct owners that failed it, in
    the order they first did; ``due_at`` (board clock) is when the job may
    be claimed again, None when it may be at once.
    """

    attempts: int = 0
    last_error: str | None = None
    failed_by: tuple[str, ...] = ()
    due_at: float | None = None


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """When a job may run and how it ended, as :meth:`JobBoard.status_of` reads it.

    ``due_at`` (board clock) is when an UNCLAIMED job becomes claimable,
    None when it is claimable now (or is claimed, or final), or, with
    ``parked``, only once woken.  ``parked`` is true from
    :meth:`JobBoard.park` until the job is next claimed; ``reason`` is what
    the parking owner said.  ``outcome`` is what :meth:`JobBoard.consume`
    recorded of the flow's end (None if nothing was).

    ``owner`` and ``lease_expires_at`` (board clock) are the last claim's
    while it is not given up: set for a CLAIMED job, and still set for one
    whose lease expired without its owner abandoning, consuming or failing it
    (``state`` then reads UNCLAIMED: the owner is presumed dead and any
    owner may claim it); None once the claim ended.
    """

    state: JobState
    due_at: float | None = None
    parked: bool = False
    reason: str | None = None
    outcome: str | None = None
    owner: str | None = None
    lease_expires_at: float | None = None

    @property
    def lease_expired(self) -> bool:
        """True when the job's last claim ran out without its owner giving it up (the owner is likely dead)."""
        return self.owner is not None and self.state is not JobState.CLAIMED

    @property
    def on_signal(self) -> bool:
        """True for a parked job that only a :meth:`JobBoard.wake` makes claimable."""
        return self.parked and self.due_at is None and self.state is JobState.UNCLAIMED


def _clip_error(error: str) -> str:
    """``error`` cut to MAX_ERROR_CHARS: a recorded error is bounded, whatever raised it."""
    text = str(error)
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[: MAX_ERROR_CHARS - 20] + " ... (%d chars)" % len(text)


@dataclasses.dataclass(frozen=True)
class Posting:
    """A job to post, checked by :meth:`JobBoard.post`: what each board's ``_post`` writes.

    ``details_json`` is the details as the JSON every board stores (already
    refused if not JSON or over ``max_details_bytes``); ``resources`` are the
    lock keys, deduplicated in their order; ``due_at`` (board clock) is when
    the job becomes claimable, None for at once.
    """

    name: str
    book: LogBook | None
    details_json: str
    priority: JobPriority
    idempotency_key: str | None
    resources: tuple[str, ...]
    due_at: float | None = None


class Job:
    """One posted job: a snapshot of what was posted plus live ``state``.

    The posted fields never change; ``state``, ``wait()`` and ``book`` ask
    the board.  Two Job objects are equal when they name the same job.
    """

    def __init__(
        self,
        board: JobBoard,
        *,
        uuid: str,
        name: str,
        details: Mapping[str, Any] | None,
        book_uuid: str | None,
        book_name: str | None,
        priority: JobPriority,
        created_on: datetime.datetime,
        idempotency_key: str | None = None,
        resources: Iterable[str] = (),
    ) -> None:
        self.board = board
        self.uuid = uuid
        self.name = name
        self.details: dict[str, Any] = dict(details or {})
        self.book_uuid = book_uuid
        self.book_name = book_name
        self.priority = priority
        self.created_on = created_on
        self.idempotency_key = idempotency_key
        self.resources: tuple[str, ...] = tuple(resources)

    @property
    def state(self) -> JobState:
        """The job's state now (asks the board)."""
        return self.board.state_of(self)

    @property
    def failures(self) -> FailureRecord:
        """The job's failed attempts now (asks the board)."""
        return self.board.failures_of(self)

    @property
    def status(self) -> JobStatus:
        """The job's due time, parking and outcome now (asks the board)."""
        return self.board.status_of(self)

    @property
    def due_at(self) -> float | None:
        """When the job becomes claimable (board clock); None if it is now, or parked until woken."""
        return self.status.due_at

    @property
    def parked(self) -> bool:
        """Whether the job was parked (:meth:`JobBoard.park`) and not claimed since."""
        return self.status.parked

    @property
    def outcome(self) -> str | None:
        """How the job's flow ended, as its owner recorded when consuming it (None if it did not)."""
        return self.status.outcome

    @property
    def book(self) -> LogBook | None:
        """The job's logbook, read from the board's persistence backend (None if it has none)."""
        return self.board.load_book(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is final (COMPLETE, TRASHED or CANCELLED); False on timeout."""
        return self.board.wait_for_job(self, timeout)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.uuid == self.uuid

    def __hash__(self) -> int:
        return hash(self.uuid)

    def __repr__(self) -> str:
        return "<Job %s %r priority=%s>" % (self.uuid, self.name, self.priority.value)


class JobBoard(abc.ABC):
    """Where jobs are posted and claimed.  Every method is safe to call from any thread.

    Implementations: :mod:`flowkit.jobs.backends.impl_memory`, :mod:`flowkit.jobs.backends.impl_sql`,
    :mod:`flowkit.jobs.backends.impl_redis`; :mod:`flowkit.testing.jobboards` is the
    conformance suite they all pass.

    ``persistence`` is where job logbooks live: ``post(book=...)`` saves the
    book there, ``job.book`` reads it back.  ``lease_ttl`` is the default
    claim TTL in seconds; ``clock`` is the board's time (see the module
    docs), kept as a :class:`~flowkit.clock.Clock`.
    ``max_details_bytes`` caps a job's ``details`` (the bytes of their JSON
    encoding): a bigger post is refused before anything is written.
    """

    def __init__(
        self,
        name: str,
        *,
        persistence: Backend | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        clock: Clock | Callable[[], float] | None = None,
        max_details_bytes: int = DEFAULT_MAX_DETAILS_BYTES,
    ) -> None:
        if not name:
            raise ValueError("a job board needs a non-empty name")
        if lease_ttl <= 0:
            raise ValueError("lease_ttl must be positive, got %r" % (lease_ttl,))
        if isinstance(max_details_bytes, bool) or not isinstance(max_details_bytes, int) or max_details_bytes < 2:
            raise ValueError("max_details_bytes must be an int of at least 2 (for '{}'), got %r" % (max_details_bytes,))
        self.name = name
        self.persistence = persistence
        self.lease_ttl = float(lease_ttl)
        self.clock: Clock = as_clock(clock)
        # A plain callable may jump without telling anyone: waiters then look again now and then.
        self._silent_clock = not isinstance(clock, Clock) and self.clock is not SYSTEM
        self.max_details_bytes = max_details_bytes

    # -- posting and reading --------------------------------------------------------

    #: Longest resource key or idempotency key the board stores; None: no limit of its own.
    max_key_chars: ClassVar[int | None] = None

    #: Whether :meth:`~flowkit.jobs.base.JobBoard.post` takes ``connection=`` (the SQL board: the caller's transaction).
    takes_connection: ClassVar[bool] = False

    def post(
        self,
        name: str,
        book: LogBook | None = None,
        details: Mapping[str, Any] | None = None,
        priority: JobPriority | str = JobPriority.NORMAL,
        *,
        idempotency_key: str | None = None,
        resources: Iterable[str] = (),
        connection: Any = None,
        delay: float | None = None,
        not_before: datetime.datetime | float | None = None,
    ) -> Job:
        """Post a new UNCLAIMED job and return it.

        ``book`` (with its flow details) is saved to the board's persistence
        backend before, or in the same transaction as, the job, so a job
        never names a missing logbook.  ``details`` must be JSON (TypeError
        or ValueError otherwise; NaN and infinities are refused) of at most
        ``max_details_bytes`` (:class:`~flowkit.exceptions.JobFailure`
        naming the job and both sizes otherwise).  With
        ``idempotency_key`` (a non-empty string) an earlier job posted with
        the same key (in any state) is returned instead and nothing is
        written.  ``resources`` are lock keys (see the module docs).
        ``connection`` (SQL board only; others raise TypeError) is a
        SQLAlchemy ``Connection`` whose open transaction receives the job
        and logbook rows; the caller commits or rolls back.

        ``delay`` (seconds, finite, >= 0) or ``not_before`` (an aware
        datetime, or epoch seconds of the board clock), at most one of them,
        makes the job claimable only from then on (:attr:`Job.due_at`); a
        ``not_before`` already past means at once.  A naive datetime is
        refused (ValueError): give it a timezone.

        Every board checks the arguments here, the same way, then writes the
        ``Posting`` with its ``_post``.
        """
        if connection is not None and not self.takes_connection:
            raise TypeError(
                "post(connection=...) needs the SQL job board; board %r is a %s" % (self.name, type(self).__name__)
            )
        # In this order, so a post wrong in several ways is refused the same way by every board.
        rank = JobPriority.convert(priority)
        keys = self._check_resources(resources)
        key = self._check_idempotency_key(idempotency_key)
        due = self._due_time(delay, not_before)
        encoded = self._encode_details(name, details)
        return self._post(Posting(name, book, encoded, rank, key, keys, due), connection)

    def _due_time(self, delay: float | None, not_before: datetime.datetime | float | None) -> float | None:
        """The board-clock time a post with ``delay`` or ``not_before`` is due; None when it is due now."""
        if delay is not None and not_before is not None:
            raise ValueError("post() takes delay or not_before, not both (got %r and %r)" % (delay, not_before))
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, (int, float)):
                raise TypeError("a job's delay is a number of seconds, got %r" % (delay,))
            if not (math.isfinite(delay) and delay >= 0):
                raise ValueError("a job's delay is a finite number of seconds >= 0, got %r" % (delay,))
            due = self.clock.now() + float(delay)
        elif not_before is not None:
            due = _epoch_seconds(not_before, "not_before")
        else:
            return None
        return due if due > self.clock.now() else None

    @abc.abstractmethod
    def _post(self, posting: Posting, connection: Any) -> Job:
        """Write ``posting`` (checked by :meth:`post`) as a new job, or return the job holding its idempotency key.

        ``connection`` is None unless the board :attr:`takes_connection`.
        """

    @abc.abstractmethod
    def get_job(self, job_uuid: str) -> Job:
        """The job ``job_uuid`` in any state; :class:`~flowkit.exceptions.NotFound` if absent."""

    @abc.abstractmethod
    def iterjobs(
        self, only_unclaimed: bool = False, ensure_fresh: bool = False, *, include_final: bool = False
    ) -> Iterator[Job]:
        """Jobs not yet final, highest priority first, then oldest first.

        ``only_unclaimed`` keeps those that read UNCLAIMED (including expired
        claims, and jobs not due yet: delayed, parked, or after a failed
        attempt).
        ``include_final`` lists COMPLETE, TRASHED and CANCELLED jobs too.
        ``ensure_fresh`` is accepted for TaskFlow compatibility: every board
        here reads its store on each call.
        """

    @abc.abstractmethod
    def failures_of(self, job: Job | str) -> FailureRecord:
        """The job's failed attempts (see :class:`FailureRecord`); NotFound if absent."""

    @abc.abstractmethod
    def status_of(self, job: Job | str) -> JobStatus:
        """The job's state, due time, parking and outcome (see :class:`JobStatus`); NotFound if absent."""

    @abc.abstractmethod
    def next_due(self) -> float | None:
        """The earliest due time (board clock) of an UNCLAIMED job not due yet; None if there is none.

        Delayed posts, failed attempts with a backoff and jobs parked with a
        due time count; jobs parked until woken do not.  One cheap read (an
        index on SQL, a sorted set on Redis): what a conductor sleeps until.
        """

    @abc.abstractmethod
    def state_of(self, job: Job | str) -> JobState:
        """The job's state now; an expired claim reads UNCLAIMED.  NotFound if absent."""

    @abc.abstractmethod
    def find_owner(self, job: Job | str) -> str | None:
        """The owner of the job's live claim, or None (unclaimed, expired or final)."""

    @property
    def job_count(self) -> int:
        """How many jobs are not final."""
        return sum(1 for _ in self.iterjobs())

    @property
    def parked_count(self) -> int:
        """How many jobs are parked now (given back by :meth:`park` and not claimed since)."""
        return sum(1 for job in self.iterjobs(only_unclaimed=True) if self.status_of(job).parked)

    # -- claims -----------------------------------------------------------------------

    @abc.abstractmethod
    def claim(self, job: Job | str, who: str, *, ttl: float | None = None) -> Claim:
        """Lease the job to ``who`` for ``ttl`` seconds (default ``lease_ttl``).

        Atomic across processes: of concurrent claims exactly one wins.
        Raises :class:`~flowkit.exceptions.UnclaimableJob` when the job is
        claimed under a live lease (even by ``who``), final, not due yet
        (delayed, parked, or after a failed attempt; the message says when it
        is due), or one of its resources is held by another claimed job;
        NotFound if absent.
        """

    def claim_next(self, who: str, *, ttl: float | None = None) -> tuple[Job, Claim] | None:
        """Claim the first claimable job (highest priority, then oldest); None if there is none.

        What a conductor calls: one call instead of listing the board and
        claiming job by job.  Of conductors racing for the same jobs each
        gets a different one.  The default tries the jobs of
        ``_claim_candidates`` in order; after losing a race it tries the
        rest of each window of 8 jobs in random order (still by priority) so
        racing claimers spread out.  The Redis board does the whole search
        in one atomic server-side step.
        """
        candidates = _Candidates(self._claim_candidates())
        for job in candidates:
            try:
                return job, self.claim(job, who, ttl=ttl)
            except (exc.UnclaimableJob, exc.NotFound):
                candidates.collided()  # another claimer was faster, or it ended meanwhile
        return None

    def _claim_candidates(self) -> Iterator[Job]:
        """The jobs :meth:`claim_next` tries, in claim order; the default lists every unclaimed job.

        Boards that can read them a window at a time override this (the SQL
        board pages through them).
        """
        return self.iterjobs(only_unclaimed=True)

    @abc.abstractmethod
    def renew(self, claim: Claim, *, ttl: float | None = None) -> Claim:
        """Extend a current claim to ``now + ttl``; the returned Claim has the same token.

        Raises :class:`~flowkit.exceptions.LeaseLost` when the claim expired,
        was superseded, or the job ended.
        """

    @abc.abstractmethod
    def ensure_current(self, claim: Claim) -> CancelRequest | None:
        """LeaseLost unless ``claim`` is current (latest token, not expired, job claimed).

        Returns the job's pending cancel request, or None: the check that
        fences every logbook flush doubles as a poll for cancellation.
        """

    @abc.abstractmethod
    def consume(self, job: Job | str, who: str, *, token: int | None = None, outcome: str | None = None) -> None:
        """The owner finished the job: COMPLETE (CANCELLED if a cancel was requested).

        ``outcome`` records how its flow ended (e.g. ``"SUCCESS"``,
        ``"REVERTED"``; a non-empty string of at most
        :data:`MAX_OUTCOME_CHARS`), read back as :attr:`Job.outcome`.
        Refused with :class:`~flowkit.exceptions.NotOwner` unless ``who``
        holds the job's claim (and, with ``token``, that exact claim).  The
        claim's resources are released.
        """

    @abc.abstractmethod
    def park(
        self,
        job: Job | str,
        who: str,
        *,
        due: float | None,
        token: int | None = None,
        reason: str | None = None,
    ) -> None:
        """The owner gives the job back until ``due`` (board clock), or until woken when ``due`` is None.

        UNCLAIMED, its claim and resources released, no failed attempt
        counted; :attr:`Job.parked` is true until it is next claimed and
        ``reason`` (cut to :data:`MAX_ERROR_CHARS`) is kept for operators.
        If :meth:`wake` was called while ``who`` held the claim, the job is
        due at once instead.  NotOwner as for consume; ValueError for a
        ``due`` that is not a finite number.
        """

    @abc.abstractmethod
    def wake(self, job: Job | str) -> bool:
        """Make a parked job due now and wake the board's waiters; True if it was parked.

        False when the job is not parked: unclaimed and not parked, final, or
        claimed; a wake of a claimed job is kept for its owner's next
        :meth:`park`, which then makes the job due at once.  NotFound for an
        unknown job.
        """

    @abc.abstractmethod
    def abandon(self, job: Job | str, who: str, *, token: int | None = None) -> None:
        """The owner gives the job back: UNCLAIMED, claimable at once.  NotOwner as for consume."""

    @abc.abstractmethod
    def trash(self, job: Job | str, who: str, *, token: int | None = None, error: str | None = None) -> None:
        """The owner discards the job: TRASHED, not run again unless restored.  NotOwner as for consume.

        With ``error``, the attempt is recorded first, as :meth:`fail` does.
        """

    @abc.abstractmethod
    def fail(self, job: Job | str, who: str, error: str, *, token: int | None = None, delay: float = 0.0) -> None:
        """The owner could not run the job, not by the job's fault: give it back with the error.

        UNCLAIMED again, but claimable only ``delay`` seconds (board clock)
        from now; ``attempts`` grows by one, ``last_error`` becomes
        ``error`` (cut to :data:`MAX_ERROR_CHARS`) and ``who`` joins
        ``failed_by``.  The claim's resources are released.  NotOwner as for
        consume.
        """

    @abc.abstractmethod
    def restore(self, job: Job | str) -> JobState:
        """Put a TRASHED job back to UNCLAIMED, claimable at once, with no attempts or failed_by.

        ``last_error`` is kept, for the record.  Returns the new state;
        :class:`~flowkit.exceptions.InvalidState` if the job is not TRASHED,
        NotFound if absent.
        """

    # -- cancellation -------------------------------------------------------------------

    @abc.abstractmethod
    def cancel(self, job: Job | str, *, revert: bool = True) -> JobState:
        """Cancel the job and return its state afterwards.

        UNCLAIMED -> CANCELLED at once.  CLAIMED: record a
        :class:`CancelRequest` for the owner and stay CLAIMED until it
        consumes (-> CANCELLED).  A final job is left as it is.  If the lease
        of a job with a pending request expires, the next claimer sees the
        request too.
        """

    @abc.abstractmethod
    def cancel_requested(self, job: Job | str) -> CancelRequest | None:
        """The pending cancel request of the job, or None."""

    # -- waiting --------------------------------------------------------------------------

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> Iterator[Job]:
        """Block until some job is claimable (unclaimed and its resources free); return those jobs.

        Raises :class:`~flowkit.exceptions.NotFound` on timeout (as TaskFlow
        does; ``timeout`` is real seconds).  Woken by posts, abandons,
        finishes, wakes, lease expiry and due times; those last two are on
        the board's clock: the board blocks with ``clock.timeout`` and is
        woken by ``clock.on_change``.  How (a condition variable, Redis
        pub/sub, bounded polling for SQL) is the board's business and is
        documented there.
        """

    @abc.abstractmethod
    def wait_for_job(self, job: Job | str, timeout: float | None = None) -> bool:
        """Block until the job is final; False on timeout (``Job.wait`` calls this)."""

    # -- logbooks and fencing -------------------------------------------------------------

    def load_book(self, job: Job) -> LogBook | None:
        """The job's logbook from the board's persistence backend (None if the job has none)."""
        if job.book_uuid is None:
            return None
        if self.persistence is None:
            raise exc.JobFailure(
                "job %s (%r) names logbook %s but board %r has no persistence backend"
                % (job.uuid, job.name, job.book_uuid, self.name)
            )
        with self.persistence.get_connection() as conn:
            return conn.get_logbook(job.book_uuid)

    def fenced_backend(self, backend: Backend, claim: Claim) -> Backend:
        """``backend`` with every flush gated on ``claim`` being current (else LeaseLost).

        Hand it to the engine that runs the claimed job.  The default checks
        the claim just before each flush; the SQL board, when ``backend``
        shares its database, checks inside the flush's own transaction.
        A fenced connection's ``lock_flow`` is the claim itself (the board
        already guarantees one owner), so an owner whose process froze while
        holding an OS-level flow lock cannot block the job's next owner.
        """
        return FencedBackend(backend, self, claim)

    # -- lifecycle ----------------------------------------------------------------------

    def connect(self) -> JobBoard:
        """Open connections or create the schema if needed; returns the board (TaskFlow's call)."""
        return self

    def close(self) -> None:
        """Release what the board holds; jobs stay on the board."""

    def __enter__(self) -> JobBoard:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- helpers for implementations ------------------------------------------------------

    @staticmethod
    def _check_due(due: float | None) -> float | None:
        if due is None:
            return None
        if isinstance(due, bool) or not isinstance(due, (int, float)) or not math.isfinite(due):
            raise ValueError("a parked job's due time is finite board-clock seconds or None, got %r" % (due,))
        return float(due)

    @staticmethod
    def _check_outcome(outcome: str | None) -> str | None:
        if outcome is None:
            return None
        text = str(outcome.value) if isinstance(outcome, enum.Enum) else outcome
        if not isinstance(text, str) or not text or len(text) > MAX_OUTCOME_CHARS:
            raise ValueError(
                "a job's outcome is a string of 1 to %d characters (a flow state), got %r"
                % (MAX_OUTCOME_CHARS, outcome)
            )
        return text

    def _not_due(
        self, uuid: str, name: str, due_at: float | None, now: float, attempts: int = 0, last_error: str | None = None
    ) -> exc.UnclaimableJob:
        """The error for a claim of a job that is not due yet (``due_at`` None: parked until woken)."""
        if due_at is None:
            return exc.UnclaimableJob(
                "job %s (%r) on board %r is parked until woken (board.wake)" % (uuid, name, self.name)
            )
        when = datetime.datetime.fromtimestamp(due_at, datetime.timezone.utc).isoformat(timespec="milliseconds")
        text = "job %s (%r) on board %r is not due until %s (%.3f, in %.3fs)" % (
            uuid, name, self.name, when, due_at, due_at - now,
        )  # fmt: skip
        if attempts:
            text += " after %d failed attempt(s), last: %s" % (attempts, last_error)
        return exc.UnclaimableJob(text)

    @staticmethod
    def _check_delay(delay: float) -> float:
        if not delay >= 0:  # also refuses NaN
            raise ValueError("a retry delay is a number of seconds >= 0, got %r" % (delay,))
        return float(delay)

    def _not_restorable(self, uuid: str, name: str, state: JobState) -> exc.InvalidState:
        return exc.InvalidState(
            "job %s (%r) on board %r is %s; only a TRASHED job can be restored" % (uuid, name, self.name, state.value)
        )

    def _ttl(self, ttl: float | None) -> float:
        if ttl is None:
            return self.lease_ttl
        if ttl <= 0:
            raise ValueError("a claim's ttl must be positive, got %r" % (ttl,))
        return float(ttl)

    def _encode_details(self, name: str, details: Mapping[str, Any] | None) -> str:
        """``details`` as the JSON every board stores; refused when not JSON or over ``max_details_bytes``."""
        encoded = json.dumps(dict(details or {}), allow_nan=False)
        size = len(encoded.encode("utf-8"))
        if size > self.max_details_bytes:
            raise exc.JobFailure(
                "job %r: its details are %d bytes of JSON, over the limit of %d bytes of board %r "
                "(max_details_bytes); keep large data elsewhere and put a reference in the details"
                % (name, size, self.max_details_bytes, self.name)
            )
        return encoded

    @staticmethod
    def _uuid_of(job: Job | str) -> str:
        return job.uuid if isinstance(job, Job) else job

    def _check_resources(self, resources: Iterable[str]) -> tuple[str, ...]:
        keys = tuple(dict.fromkeys(resources))  # dedupe, keep order
        for key in keys:
            if not isinstance(key, str) or not key:
                raise ValueError("resource keys are non-empty strings, got %r" % (key,))
            if self.max_key_chars is not None and len(key) > self.max_key_chars:
                raise ValueError("a resource key is at most %d characters, got %r" % (self.max_key_chars, key))
        return keys

    def _check_idempotency_key(self, key: str | None) -> str | None:
        if key is None:
            return None
        limit = self.max_key_chars
        if not isinstance(key, str) or not key or (limit is not None and len(key) > limit):
            raise ValueError(
                "an idempotency key is a string of 1 to %s characters, got %r" % (limit or "any number of", key)
            )
        return key


def _epoch_seconds(when: datetime.datetime | float, what: str) -> float:
    """``when`` (an aware datetime or epoch seconds) as epoch seconds; a naive datetime is refused."""
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(
                "%s=%r is a naive datetime: give it a timezone (e.g. tzinfo=datetime.timezone.utc)" % (what, when)
            )
        return when.timestamp()
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError("%s is an aware datetime or epoch seconds, got %r" % (what, when))
    if not math.isfinite(when):
        raise ValueError("%s must be finite epoch seconds, got %r" % (what, when))
    return float(when)


# How many listed jobs JobBoard.claim_next shuffles at a time after a lost race
# (and how many rows the SQL board reads per query of candidates).
_CLAIM_WINDOW = 8


class _Candidates:
    """Jobs to try to claim, in the board's order until a claim collides.

    Claimers that list the same jobs in the same order all race for the
    first one.  After a lost race the rest of each window of jobs is tried
    in random order (still highest priority first), so racing claimers
    spread out, while a claimer alone keeps the board's order.
    """

    def __init__(self, jobs: Iterator[Job]) -> None:
        self._jobs = iter(jobs)
        self._window: list[Job] = []
        self._shuffle = False

    def collided(self) -> None:
        """The last job was claimed by someone else: shuffle from now on."""
        if not self._shuffle:
            self._shuffle = True
            self._mix()

    def _mix(self) -> None:
        random.shuffle(self._window)
        self._window.sort(key=lambda job: job.priority.rank)  # stable: shuffled within a priority

    def __iter__(self) -> Iterator[Job]:
        return self

    def __next__(self) -> Job:
        if not self._window:
            self._window = list(itertools.islice(self._jobs, _CLAIM_WINDOW))
            if not self._window:
                raise StopIteration
            if self._shuffle:
                self._mix()
        return self._window.pop(0)


class _ClaimLock(FlowLock):
    """The flow lock of a fenced connection: nothing to hold, the claim excludes others."""

    def release(self) -> None:
        """Nothing to release."""


class FencedConnection(Connection):
    """A persistence connection whose writes only land while a claim is current.

    Reads pass straight through.  Writes are fenced where they become
    durable: at each flush for connections that buffer (the SQL backend),
    inside the flush's own transaction when the board provides a
    :meth:`FencedBackend.transaction_check` (:meth:`~flowkit.persistence.base.Connection.fence`); at
    every write for those that write at once
    (:attr:`~flowkit.persistence.base.Connection.writes_immediately`, like the memory backend's); and
    always for ``destroy_logbook``/``clear_all``.  A refused write raises
    :class:`~flowkit.exceptions.LeaseLost`.  The claim stands in for the
    flow lock (:meth:`lock_flow`).
    """

    def __init__(self, backend: FencedBackend, inner: Connection) -> None:
        self._backend = backend
        self._inner = inner
        self._check = backend.check
        self._guard = threading.Lock()
        self._immediate = inner.writes_immediately
        check = None if self._immediate else backend.transaction_check()
        if check is not None:
            inner.fence(check)
        # Whether the inner connection's flushes check the claim themselves.
        self._checks_inside = check is not None

    @property
    def backend(self) -> FencedBackend:
        """The fenced backend this connection came from."""
        return self._backend

    @property
    def inner(self) -> Connection:
        """The wrapped connection."""
        return self._inner

    def upgrade(self) -> None:
        """Upgrade the wrapped store's schema."""
        self._inner.upgrade()

    def validate(self) -> None:
        """Validate the wrapped store."""
        self._inner.validate()

    def flush(self) -> None:
        """Make buffered writes durable if the claim is still current; else LeaseLost, nothing written."""
        with self._guard:
            if self._immediate or self._inner.pending:
                self._flush_fenced()

    def _flush_fenced(self) -> None:
        if self._checks_inside:
            self._inner.flush()
        else:
            self._backend.fenced(self._inner.flush)

    @property
    def pending(self) -> bool:
        """Whether the wrapped connection holds writes for the next flush."""
        return self._inner.pending

    def lock_flow(self, flow_detail: FlowDetail) -> FlowLock:
        """The claim stands in for the flow lock: LeaseLost if it is not current."""
        self._check()
        return _ClaimLock()

    def save_logbook(self, book: LogBook) -> LogBook:
        """Save ``book`` through the wrapped connection if the claim is current."""
        # Backends that buffer still write a saved logbook at once.
        return self._backend.fenced(lambda: self._inner.save_logbook(book))

    def get_logbook(self, book_uuid: str, lazy: bool = False) -> LogBook:
        """Read through the wrapped connection."""
        return self._inner.get_logbook(book_uuid, lazy)

    def get_logbooks(self, lazy: bool = False) -> Iterator[LogBook]:
        """Read through the wrapped connection."""
        return self._inner.get_logbooks(lazy)

    def get_flows_for_book(self, book_uuid: str, lazy: bool = False) -> Iterator[FlowDetail]:
        """Read through the wrapped connection."""
        return self._inner.get_flows_for_book(book_uuid, lazy)

    def get_flow_details(self, fd_uuid: str, lazy: bool = False) -> FlowDetail:
        """Read through the wrapped connection."""
        return self._inner.get_flow_details(fd_uuid, lazy)

    def get_atom_states(self, fd_uuid: str) -> dict[str, tuple[str, Any, Any]]:
        """Read through the wrapped connection."""
        return self._inner.get_atom_states(fd_uuid)

    def has_flow_detail(self, fd_uuid: str) -> bool:
        """Read through the wrapped connection."""
        return self._inner.has_flow_detail(fd_uuid)

    def get_atom_details(self, ad_uuid: str) -> AtomDetail:
        """Read through the wrapped connection."""
        return self._inner.get_atom_details(ad_uuid)

    def update_flow_details(self, flow_detail: FlowDetail) -> FlowDetail:
        """Write through the wrapped connection; fenced here or at the next flush."""
        if self._immediate:
            return self._backend.fenced(lambda: self._inner.update_flow_details(flow_detail))
        return self._inner.update_flow_details(flow_detail)

    def update_flow_state(self, flow_detail: FlowDetail) -> FlowDetail:
        """Write through the wrapped connection; fenced here or at the next flush."""
        if self._immediate:
            return self._backend.fenced(lambda: self._inner.update_flow_state(flow_detail))
        return self._inner.update_flow_state(flow_detail)

    def update_atom_details(self, atom_detail: AtomDetail) -> AtomDetail:
        """Write through the wrapped connection; fenced here or at the next flush."""
        if self._immediate:
            return self._backend.fenced(lambda: self._inner.update_atom_details(atom_detail))
        return self._inner.update_atom_details(atom_detail)

    def update_atom_details_many(self, atom_details: Iterable[AtomDetail]) -> None:
        """Write through the wrapped connection; fenced here or at the next flush."""
        if self._immediate:
            details = list(atom_details)
            self._backend.fenced(lambda: self._inner.update_atom_details_many(details))
            return
        self._inner.update_atom_details_many(atom_details)

    def send_signal(
        self,
        flow_uuid: str,
        name: str,
        value: Any,
        idempotency_key: str | None = None,
        sent_at: float | None = None,
    ) -> bool:
        """Store a signal through the wrapped connection, unfenced.

        A signal is input to a flow from outside it, not the progress of the
        claim's holder: anyone may send one, with or without a claim (a parked
        flow has no holder at all), and the store's own rules (one per flow
        detail and name) keep it exactly-once.
        """
        return self._inner.send_signal(flow_uuid, name, value, idempotency_key, sent_at)

    def get_signals(self, flow_uuid: str, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Read through the wrapped connection."""
        return self._inner.get_signals(flow_uuid, names)

    def signals_after(self, seq: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        """Read through the wrapped connection."""
        return self._inner.signals_after(seq, limit)

    def destroy_logbook(self, book_uuid: str) -> None:
        """Delete a logbook if the claim is current."""
        self._backend.fenced(lambda: self._inner.destroy_logbook(book_uuid))

    def clear_all(self) -> None:
        """Delete every logbook if the claim is current."""
        self._backend.fenced(self._inner.clear_all)

    def close(self) -> None:
        """Flush (fenced), then close the wrapped connection.

        If the claim is no longer current, whatever is still buffered is
        stale: the wrapped connection is dropped unclosed (closing it would
        flush those writes unfenced) and close returns quietly, since the
        owner already learnt of the loss from a refused flush or ``renew``.
        """
        with self._guard:
            if not self._immediate and self._inner.pending:
                try:
                    self._flush_fenced()
                except exc.LeaseLost:
                    return
            self._inner.close()


class FencedBackend(Backend):
    """A persistence backend whose connections only write while ``claim`` is current.

    Built by :meth:`JobBoard.fenced_backend`; closing it does not close the
    wrapped backend (it belongs to the caller).
    """

    def __init__(self, inner: Backend, board: JobBoard, claim: Claim) -> None:
        self.inner = inner
        self.board = board
        self.claim = claim
        self.cancel: CancelRequest | None = None
        """The cancel request a claim check found (checks run before every flush); None until one does."""
        self.on_cancel: Callable[[CancelRequest], None] | None = None
        """Called (once, in the thread of the check, inside the write) when a check first finds a
        cancel request: the owner stops its engine there, before the atoms being written ahead start."""

    @property
    def result_limit(self) -> int | None:
        """The wrapped backend's cap on a result: fencing changes where writes land, not what fits."""
        return self.inner.result_limit

    def check(self) -> None:
        """LeaseLost unless the claim is current (asks the board); notes a pending cancel request."""
        self.saw(self.board.ensure_current(self.claim))

    def saw(self, request: CancelRequest | None) -> None:
        """Note what a claim check said about cancellation (a request, once seen, stays)."""
        if request is not None and self.cancel is None:
            self.cancel = request
            if self.on_cancel is not None:
                self.on_cancel(request)

    def fenced(self, write: Callable[[], _T]) -> _T:
        """Run ``write`` (a flush or delete of the wrapped connection) only if the claim is current.

        This default checks, then writes: a lease lost during the write
        itself is noticed at the next one.  Boards that can make check and
        write one atomic step (the memory board under its lock, the SQL
        board in one transaction) override it.
        """
        self.check()
        return write()

    def transaction_check(self) -> Callable[[Any], None] | None:
        """The claim check a buffering connection runs inside each flush's transaction; None by default.

        A board whose claims live in the logbook's own database returns a
        precondition for :meth:`~flowkit.persistence.base.Connection.fence` (the SQL board reads the
        job row in the flush's transaction), so check and write commit
        together.  With None, each flush runs inside :meth:`fenced`.
        """
        return None

    def get_connection(self) -> Connection:
        """A fenced connection over a new connection of the wrapped backend."""
        return FencedConnection(self, self.inner.get_connection())

    def close(self) -> None:
        """Nothing to release: the wrapped backend belongs to the caller."""

    def __repr__(self) -> str:
        return "<FencedBackend %r claim=%s token=%d>" % (self.inner, self.claim.job_uuid, self.claim.token)
