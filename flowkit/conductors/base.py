"""The conductor: claim jobs from a board, run their flows, finish the jobs.

One :class:`Conductor` loop (``run()``) claims jobs while it has room for
more (``max_simultaneous_jobs``) and hands each to ``Conductor._dispatch()``
(run inline by the blocking conductor, on a thread pool by the non-blocking
one).  Running a job means:

1. read the job's logbook and pick its flow detail (``details["flow_uuid"]``,
   or the logbook's only flow detail);
2. rebuild the flow from the factory recorded there, found by name among
   the conductor's registered factories, never imported from the record
   (:func:`flowkit.engines.load_from_detail`, :mod:`flowkit.factories`), with the job's
   ``details["store"]`` merged into the flow's store, on a *fenced* backend
   (:meth:`flowkit.jobs.base.JobBoard.fenced_backend`): once the claim is
   lost no write of this engine reaches the logbook;
3. run it, while a heartbeat thread renews the claim every ``ttl / 3`` and
   polls for a cancel request (the claim check before every logbook flush,
   and before the first atom, reports one too);
4. finish the job according to how the flow ended, recording the flow's
   state as the job's outcome when it consumes it (``Job.outcome``):

   - SUCCESS: consumed (COMPLETE);
   - REVERTED or FAILURE (the flow's own failure): consumed; the outcome is
     in the logbook, and running the flow again would not change it;
   - cancelled (reverted, or suspended on request): consumed (the board
     records CANCELLED);
   - SUSPENDED by ``stop(drain=False)``: abandoned, so another conductor
     resumes it;
   - WAITING (only timers and signals are left; engines run with
     ``park=True``): parked (:meth:`flowkit.jobs.base.JobBoard.park`), due
     at the flow's earliest deadline, or only when woken if it waits for
     signals alone.  The conductor holds no thread or lease for it.  Its
     signal watcher (one thread, every ``signal_poll`` seconds) reads the
     signals stored since it last looked and wakes the job of each WAITING
     flow that waits for one; any conductor then resumes it;
   - a storage failure or a lost executor: abandoned;
   - the claim was lost (renewal refused, or a fenced write): left alone, it
     is no longer ours to finish;
   - the flow cannot be built here (no logbook or flow detail, the factory
     cannot be found, imported or called): given back with the error
     (:meth:`flowkit.jobs.base.JobBoard.fail`), claimable again after a
     backoff that doubles with each failed attempt (``backoff`` seconds
     first, at most ``max_backoff``).  That is usually this conductor's
     environment (a module missing from ``sys.path``, a factory not
     registered), not the job: only once ``max_conductor_failures``
     distinct conductors failed it is it trashed, and an operator can
     still restore it (``flowkit jobs retry``).

While nothing is claimable the conductor blocks in ``board.wait()`` until
the earliest due job (:meth:`flowkit.jobs.base.JobBoard.next_due`: a delayed
post, a backoff, a parked job), a post or a wake-up, or ``wait_timeout``;
it does not poll the board in a loop.

Each step is announced on :attr:`Conductor.notifier` (see :data:`EVENTS`).
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from flowkit import exceptions as exc
from flowkit import states
from flowkit.engines import _observers
from flowkit.engines.engine import Engine
from flowkit.factories import FactoryRegistry, _prefixes
from flowkit.jobs.base import CancelRequest, Claim, FencedBackend, Job, JobBoard
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.types.notifier import RestrictedNotifier
from flowkit.waits import WAKE_KEY

__all__ = [
    "Conductor",
    # events, in the order a job meets them
    "JOB_CLAIMED",
    "RUNNING_START",
    "RUNNING_END",
    "JOB_CONSUMED",
    "JOB_CANCELLING",
    "JOB_CANCELLED",
    "JOB_ABANDONED",
    "JOB_LOST",
    "JOB_TRASHED",
    "JOB_PARKED",
    "EVENTS",
    "JOB_KEY",
    "DEFAULT_SIGNAL_POLL",
    "DEFAULT_WAIT_TIMEOUT",
    "DEFAULT_MAX_CONDUCTOR_FAILURES",
    "DEFAULT_BACKOFF",
    "DEFAULT_MAX_BACKOFF",
]

LOG = logging.getLogger(__name__)

#: The conductor claimed a job (details: ``job``, ``claim``).
JOB_CLAIMED = "job_claimed"
#: Its engine is about to run (details: ``job``, ``engine``).
RUNNING_START = "running_start"
#: Its engine stopped (details: ``job``, ``engine``, ``state``: the flow's state, ``error``).
RUNNING_END = "running_end"
#: The job is done and consumed (details: ``job``, ``state``: SUCCESS, REVERTED or FAILURE).
JOB_CONSUMED = "job_consumed"
#: A cancel request was seen; the engine stops at its next atom boundary (details: ``job``, ``revert``).
JOB_CANCELLING = "job_cancelling"
#: A cancel request was honoured and the job consumed as CANCELLED (details: ``job``, ``state``, ``revert``).
JOB_CANCELLED = "job_cancelled"
#: The job was given back to the board (details: ``job``, ``reason``; when its flow could not be built
#: here also ``attempts``, ``failed_by`` and ``delay``, the seconds before it may be claimed again).
JOB_ABANDONED = "job_abandoned"
#: The claim was lost: the job was stopped and left for its next owner (details: ``job``, ``reason``).
JOB_LOST = "job_lost"
#: The job was trashed: enough distinct conductors could not build its flow (details: ``job``, ``reason``,
#: ``attempts``, ``failed_by``).
JOB_TRASHED = "job_trashed"

#: The flow waits on timers or signals: the job was given back to the board, due when the flow is
#: (details: ``job``, ``due``: board clock seconds or None for "when a signal comes", ``signals``).
JOB_PARKED = "job_parked"

#: Every event a conductor publishes.
EVENTS = (
    JOB_CLAIMED,
    RUNNING_START,
    RUNNING_END,
    JOB_CONSUMED,
    JOB_CANCELLING,
    JOB_CANCELLED,
    JOB_ABANDONED,
    JOB_LOST,
    JOB_TRASHED,
    JOB_PARKED,
)

#: The key of ``FlowDetail.meta`` naming the job a parked flow belongs to (a signal wakes that job).
JOB_KEY = "job"
#: Real seconds between two looks for signals sent to parked flows.
DEFAULT_SIGNAL_POLL = 1.0

#: Longest (real seconds) a conductor blocks in ``board.wait()`` before looking again, unless a job
#: comes due sooner (bounds how long ``stop()`` takes to be noticed while no job is posted).
DEFAULT_WAIT_TIMEOUT = 0.5

#: How many distinct conductors must fail to build a job's flow before one trashes it.
DEFAULT_MAX_CONDUCTOR_FAILURES = 3
#: Seconds a job whose flow could not be built waits before its next claim (doubling each attempt) ...
DEFAULT_BACKOFF = 5.0
#: ... up to this many.
DEFAULT_MAX_BACKOFF = 600.0

_FINAL = (states.SUCCESS, states.REVERTED, states.FAILURE)


class _Unbuildable(Exception):
    """The job's flow cannot be built here; the job is given back with a backoff (or trashed)."""


@dataclasses.dataclass(eq=False)
class _Running:
    """A claimed job the conductor is working on (shared with the heartbeat thread)."""

    job: Job
    claim: Claim
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    fenced: Any = None
    engine: Engine | None = None
    lost: str | None = None  # why the claim was lost
    cancel: CancelRequest | None = None
    cancel_applied: bool = False
    cancel_announced: bool = False
    suspend: bool = False  # stop(drain=False)
    lost_announced: bool = False
    #: Heartbeats seen by the lease thread: attempt -> (beats, when seen, monotonic seconds).
    pulses: dict[object, tuple[int, float]] = dataclasses.field(default_factory=dict)


class Conductor(abc.ABC):
    """Claims jobs from ``board`` and runs their flows; subclasses choose how jobs are run.

    Build one with :func:`flowkit.conductors.backends.fetch`.  ``name`` is
    the owner name claims are made under (unique per conductor).
    ``persistence`` is where logbooks are read and written (default: the
    board's).  ``engine`` and ``engine_options`` are passed to
    :func:`flowkit.engines.load_from_detail`.  ``ttl`` is the claim lease in
    seconds (default: the board's ``lease_ttl``); the claim is renewed every
    ``ttl / 3``.  ``wait_timeout`` bounds each ``board.wait()``.
    ``factories`` is the :class:`~flowkit.factories.FactoryRegistry` the
    jobs' flows are rebuilt from (default: the process-wide one) and
    ``allowed_modules`` adds module prefixes whose factories may be imported;
    a job naming any other factory is not run (see :mod:`flowkit.factories`).
    A job whose flow cannot be built waits ``backoff * 2 ** attempts`` seconds
    (at most ``max_backoff``, on the board's clock) before its next claim,
    and is trashed once ``max_conductor_failures`` distinct conductors
    (by name: give each its own) failed it.
    """

    def __init__(
        self,
        name: str,
        board: JobBoard,
        *,
        persistence: Backend | None = None,
        engine: str = "serial",
        engine_options: Mapping[str, Any] | None = None,
        max_simultaneous_jobs: int = 1,
        ttl: float | None = None,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        factories: FactoryRegistry | None = None,
        allowed_modules: Iterable[str] | None = None,
        max_conductor_failures: int = DEFAULT_MAX_CONDUCTOR_FAILURES,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        signal_poll: float = DEFAULT_SIGNAL_POLL,
    ) -> None:
        if not name:
            raise ValueError("a conductor needs a non-empty name (its claims are made under it)")
        if not isinstance(max_simultaneous_jobs, int) or max_simultaneous_jobs < 1:
            raise ValueError("max_simultaneous_jobs must be a positive int, got %r" % (max_simultaneous_jobs,))
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive, got %r" % (ttl,))
        if wait_timeout <= 0:
            raise ValueError("wait_timeout must be positive, got %r" % (wait_timeout,))
        if not signal_poll > 0:
            raise ValueError("signal_poll must be positive, got %r" % (signal_poll,))
        if isinstance(max_conductor_failures, bool) or not isinstance(max_conductor_failures, int):
            raise ValueError("max_conductor_failures must be a positive int, got %r" % (max_conductor_failures,))
        if max_conductor_failures < 1:
            raise ValueError("max_conductor_failures must be a positive int, got %r" % (max_conductor_failures,))
        if not 0 <= backoff <= max_backoff:
            raise ValueError("need 0 <= backoff <= max_backoff, got %r and %r" % (backoff, max_backoff))
        persistence = persistence if persistence is not None else board.persistence
        if persistence is None:
            raise ValueError(
                "conductor %r needs a persistence backend: board %r has none; pass persistence=" % (name, board.name)
            )
        self.name = name
        self.board = board
        self.persistence = persistence
        self.engine = engine
        self.engine_options = dict(engine_options or {})
        self.factories = factories
        """The registry flows are rebuilt from (None: the process-wide default)."""
        self.allowed_modules = _prefixes(allowed_modules)
        """Module prefixes whose ``"module:qualname"`` factories may be imported."""
        self.max_simultaneous_jobs = max_simultaneous_jobs
        self.ttl = float(ttl) if ttl is not None else board.lease_ttl
        self.wait_timeout = float(wait_timeout)
        self.max_conductor_failures = max_conductor_failures
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.signal_poll = float(signal_poll)
        self._signal_cursor = 0  # the last signal (signals_after sequence) looked at
        self.notifier = RestrictedNotifier(EVENTS)
        """Conductor events (:data:`EVENTS`): ``callback(event, details=...)``."""
        self._cond = threading.Condition()
        self._running: dict[str, _Running] = {}
        self._stop: str | None = None  # None, "drain" or "suspend"
        self._active = False
        self._dead = threading.Event()
        self._dead.set()
        self._heartbeat_stop = threading.Event()
        if _observers.CONDUCTOR_OBSERVERS:
            _observers.observe(_observers.CONDUCTOR_OBSERVERS, self)

    # -- the public loop ------------------------------------------------------------

    @property
    def dispatching(self) -> bool:
        """True while ``run()`` is claiming jobs (until it is stopped)."""
        return self._active and self._stop is None

    @property
    def running_jobs(self) -> list[Job]:
        """The jobs this conductor is working on now."""
        with self._cond:
            return [running.job for running in self._running.values()]

    def run(self, max_dispatches: int | None = None) -> None:
        """Claim and run jobs until :meth:`stop` (or ``max_dispatches`` jobs were run).

        Returns once every job it claimed is finished, abandoned or lost.
        Calling ``run()`` after ``stop()`` returns at once.
        """
        if max_dispatches is not None and max_dispatches < 0:
            raise ValueError("max_dispatches must be >= 0, got %r" % (max_dispatches,))
        with self._cond:
            if self._active:
                raise exc.InvalidState("conductor %r is already running" % (self.name,))
            self._active = True
            self._dead.clear()
        self._heartbeat_stop.clear()
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="%s-heartbeat" % self.name, daemon=True)
        heartbeat.start()
        watcher = threading.Thread(target=self._signal_loop, name="%s-signals" % self.name, daemon=True)
        watcher.start()
        dispatched = 0
        try:
            self._start()
            while max_dispatches is None or dispatched < max_dispatches:
                with self._cond:
                    while self._stop is None and len(self._running) >= self.max_simultaneous_jobs:
                        self._cond.wait()
                    if self._stop is not None:
                        break
                claimed = self._claim_one()
                if claimed is None:
                    self._wait_for_jobs()
                    continue
                dispatched += 1
                self._dispatch(*claimed)
        finally:
            try:
                self._finish()
                with self._cond:
                    while self._running:
                        self._cond.wait()
            finally:
                self._heartbeat_stop.set()
                heartbeat.join()
                watcher.join()
                with self._cond:
                    self._active = False
                self._dead.set()

    def stop(self, drain: bool = True) -> None:
        """Claim nothing new; ``run()`` returns once the jobs in hand are dealt with.

        With ``drain`` (the default) running jobs run to their end.  Without
        it, each is suspended at its next atom boundary and abandoned, so
        another conductor resumes it from the logbook.  Safe to call from any
        thread or a signal handler; ``stop(drain=False)`` after
        ``stop(drain=True)`` hurries a drain along.
        """
        with self._cond:
            if self._stop != "suspend":
                self._stop = "drain" if drain else "suspend"
            running = list(self._running.values())
            self._cond.notify_all()
        if not drain:
            for job in running:
                job.suspend = True
                self._steer(job)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``run()`` has returned (or was never started); False on timeout."""
        return self._dead.wait(timeout)

    def close(self) -> None:
        """Stop (suspending running jobs) and wait for ``run()`` to return."""
        self.stop(drain=False)
        self.wait()

    def __enter__(self) -> Conductor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<%s %r board=%r>" % (type(self).__name__, self.name, self.board.name)

    # -- what subclasses provide --------------------------------------------------------

    def _start(self) -> None:
        """Called by ``run()`` before the first claim (e.g. to start a pool)."""

    def _finish(self) -> None:
        """Called by ``run()`` once it claims no more (before it waits for running jobs)."""

    @abc.abstractmethod
    def _dispatch(self, job: Job, claim: Claim) -> None:
        """Run the claimed job: call :meth:`_run_job` (inline or on a worker).

        The job is already counted as running; :meth:`_run_job` removes it
        when it is done, whatever happens.
        """

    # -- claiming -----------------------------------------------------------------------

    def _claim_one(self) -> tuple[Job, Claim] | None:
        if self._stop is not None:
            return None
        try:
            claimed = self.board.claim_next(self.name, ttl=self.ttl)
        except exc.StorageFailure as error:
            # The board is unreachable: wait and try again rather than die.
            LOG.warning("conductor %r could not list or claim jobs: %s", self.name, error)
            return None
        if claimed is None:
            return None
        job, claim = claimed
        running = _Running(job, claim)
        with self._cond:
            stopping = self._stop is not None
            if not stopping:
                self._running[job.uuid] = running
        self._notify(JOB_CLAIMED, job, claim=claim)
        if stopping:  # stop() came while the claim was on its way: hand the job straight back
            self._give_back(running, "the conductor is stopping")
            return None
        return job, claim

    def _wait_for_jobs(self) -> None:
        """Nothing was claimable: block until the earliest due job or ``wait_timeout``, whichever is first.

        Both on the board's clock: a job coming due (``next_due``), a post, a
        wake or a jump of the clock wakes the board's ``wait``; the real-time
        ``wait_timeout`` bounds how long ``stop()`` takes to be noticed.
        """
        timeout = self.wait_timeout
        try:
            until = self.board.clock.timeout(self.board.next_due())
            if until is not None:
                timeout = min(timeout, until)
            self.board.wait(timeout=timeout)
        except exc.NotFound:
            pass  # nothing claimable within the timeout
        except exc.StorageFailure as error:
            LOG.warning("conductor %r could not wait for jobs: %s", self.name, error)
            self._heartbeat_stop.wait(self.wait_timeout)

    # -- running one job ----------------------------------------------------------------

    def _run_job(self, job: Job, claim: Claim) -> None:
        """Build, run and finish one claimed job; never raises."""
        running = self._running[job.uuid]
        try:
            self._run_claimed(running)
        except Exception:
            LOG.exception("conductor %r failed while handling job %s (%r)", self.name, job.uuid, job.name)
            self._give_back(running, "the conductor failed while handling the job")
        finally:
            with self._cond:
                self._running.pop(job.uuid, None)
                self._cond.notify_all()

    def _run_claimed(self, running: _Running) -> None:
        job = running.job
        running.fenced = self.board.fenced_backend(self.persistence, running.claim)
        if isinstance(running.fenced, FencedBackend):
            # Inside a write-ahead flush: stop the engine before the atoms it writes ahead start;
            # the run loop announces the request after that write.
            running.fenced.on_cancel = lambda request: self._cancel_seen(running, request, announce=False)
        try:
            engine = self._engine_for(running)
        except _Unbuildable as problem:
            self._cannot_build(running, str(problem))
            return
        except exc.StorageFailure as error:
            self._after_storage_failure(running, error)
            return
        try:
            with running.lock:
                running.engine = engine
            if engine.flow_detail.state in _FINAL:
                # Finished by an owner that lost its claim before consuming:
                # running it again would start it over.
                self._conclude(running, states.State(engine.flow_detail.state), None)
                return
            self._notify(RUNNING_START, job, engine=engine)
            outcome: BaseException | None = None
            try:
                for _ in engine.run_iter(park=True):
                    # The claim check before each flush (and before the
                    # first atom) also reports a cancel request.
                    self._cancel_seen(running, running.fenced.cancel)
                    self._steer(running)
            except Exception as raised:
                outcome = raised
            self._cancel_seen(running, running.fenced.cancel)  # one seen by the last flush
            state = engine.storage.get_flow_state()
            self._notify(RUNNING_END, job, engine=engine, state=state, error=outcome)
            self._conclude(running, state, outcome)
        finally:
            with running.lock:
                running.engine = None
            try:
                engine.close()
            except exc.FlowkitError as error:
                LOG.debug("closing the engine of job %s failed: %s", job.uuid, error)

    def _engine_for(self, running: _Running) -> Engine:
        from flowkit.engines import load_from_detail

        job = running.job
        what = "job %s (%r)" % (job.uuid, job.name)
        if job.book_uuid is None:
            raise _Unbuildable("%s has no logbook, so there is no flow to run" % (what,))
        with self.persistence.get_connection() as conn:
            try:
                book = conn.get_logbook(job.book_uuid)
            except exc.NotFound:
                raise _Unbuildable("%s names logbook %s, which does not exist" % (what, job.book_uuid)) from None
        flow_detail = _pick_flow_detail(book, job.details.get("flow_uuid"), what)
        store = job.details.get("store")
        if store is not None and not isinstance(store, Mapping):
            raise _Unbuildable("%s has details['store'] of type %s; it must be a dict" % (what, type(store).__name__))
        try:
            return load_from_detail(
                flow_detail,
                store=store,
                backend=running.fenced,
                engine=self.engine,
                factories=self.factories,
                allowed_modules=self.allowed_modules,
                **self.engine_options,
            )
        except exc.StorageFailure:
            raise
        except Exception as error:
            # Whatever building the flow raised (an unknown factory, an import
            # error, the factory itself failing) says nothing about the job
            # until other conductors fail it too.
            raise _Unbuildable("%s: %s: %s" % (what, type(error).__name__, error)) from error

    def _conclude(self, running: _Running, state: states.State | None, error: BaseException | None) -> None:
        job = running.job
        if running.lost is not None or isinstance(error, exc.LeaseLost):
            self._lost(running, running.lost or str(error))
            return
        if isinstance(error, (exc.StorageFailure, exc.ExecutorLost)):
            self._after_storage_failure(running, error)
            return
        cancelled = isinstance(error, exc.Cancelled) or (running.cancel is not None and state == states.SUSPENDED)
        if state == states.WAITING and error is None and running.cancel is None:
            self._park(running)
            return
        if state == states.SUSPENDED and not cancelled:
            self._give_back(running, "the conductor is stopping; the flow was suspended")
            return
        if error is not None and not cancelled and state not in _FINAL:
            LOG.warning("job %s (%r) failed outside its flow (consumed): %r", job.uuid, job.name, error)
        try:
            self.board.consume(job, self.name, token=running.claim.token, outcome=state)
        except (exc.LeaseLost, exc.NotOwner) as lost:
            self._lost(running, "the claim was lost before the job could be consumed: %s" % (lost,))
            return
        except exc.StorageFailure as failure:
            # Nothing left to run: the next owner finds the flow finished and consumes it.
            self._lost(running, "the board refused the consume: %s" % (failure,))
            return
        if cancelled:
            self._notify(JOB_CANCELLED, job, state=state, revert=running.cancel.revert if running.cancel else True)
        else:
            self._notify(JOB_CONSUMED, job, state=state, error=error)

    def _park(self, running: _Running) -> None:
        """The flow waits on timers or signals: give the job back, due when the flow is (or when a signal comes)."""
        job = running.job
        engine = running.engine
        assert engine is not None
        fd = engine.flow_detail
        wake = fd.meta.get(WAKE_KEY)
        wake = wake if isinstance(wake, Mapping) else {}
        due = wake.get("due")
        due = float(due) if isinstance(due, (int, float)) and not isinstance(due, bool) else None
        signals = [name for name in wake.get("signals") or () if isinstance(name, str)]
        try:
            # So that a signal sent to the flow finds its job (see _wake_signalled).
            if fd.meta.get(JOB_KEY) != job.uuid:
                fd.meta[JOB_KEY] = job.uuid
                engine.storage.save_flow()
        except exc.StorageFailure as error:
            self._after_storage_failure(running, error)
            return
        if due is not None and signals:
            reason = "waiting until %s or for signal %s" % (_when(due), ", ".join(signals))
        elif due is not None:
            reason = "waiting until %s" % (_when(due),)
        else:
            reason = "waiting for signal %s" % (", ".join(signals) or "?",)
        try:
            self.board.park(job, self.name, due=due, token=running.claim.token, reason=reason)
        except (exc.LeaseLost, exc.NotOwner) as lost:
            self._lost(running, "the claim was lost before the job could be parked: %s" % (lost,))
            return
        except exc.StorageFailure as failure:
            # The lease runs out on its own; the next owner finds the flow WAITING and parks it.
            self._lost(running, "the board refused to park the job: %s" % (failure,))
            return
        self._notify(JOB_PARKED, job, due=due, signals=signals)
        if signals:
            # A signal stored after the engine last looked, but before the flow
            # was WAITING in the logbook, is not woken by the watcher: look once more.
            try:
                with self.persistence.get_connection() as conn:
                    arrived = conn.get_signals(fd.uuid, signals)
                if arrived:
                    self.board.wake(job)
            except exc.FlowkitError as error:
                LOG.warning("conductor %r could not look for signals of job %s: %s", self.name, job.uuid, error)

    def _signal_loop(self) -> None:
        """Wake the parked jobs whose flows got a signal they wait for, every ``signal_poll`` seconds."""
        self._wake_signalled()
        while not self._heartbeat_stop.wait(self.signal_poll):
            self._wake_signalled()

    def _wake_signalled(self, batch: int = 1000) -> None:
        """Read the signals stored since the last look; wake the job of each WAITING flow waiting for one."""
        try:
            with self.persistence.get_connection() as conn:
                while not self._heartbeat_stop.is_set():
                    found = conn.signals_after(self._signal_cursor, limit=batch)
                    for seq, flow_uuid, name in found:
                        self._signal_cursor = seq
                        try:
                            fd = conn.get_flow_details(flow_uuid, lazy=True)
                        except exc.NotFound:
                            continue
                        wake = fd.meta.get(WAKE_KEY)
                        job = fd.meta.get(JOB_KEY)
                        if fd.state != states.WAITING or not isinstance(job, str) or not isinstance(wake, Mapping):
                            continue
                        if name in (wake.get("signals") or ()):
                            try:
                                self.board.wake(job)
                            except exc.NotFound:
                                pass
                    if len(found) < batch:
                        return
        except exc.FlowkitError as error:
            LOG.warning("conductor %r could not look for signals: %s", self.name, error)

    def _after_storage_failure(self, running: _Running, error: BaseException) -> None:
        if running.lost is not None or isinstance(error, exc.LeaseLost):
            self._lost(running, running.lost or str(error))
            return
        self._give_back(running, "%s: %s" % (type(error).__name__, error))

    def _give_back(self, running: _Running, reason: str) -> None:
        try:
            self.board.abandon(running.job, self.name, token=running.claim.token)
        except (exc.LeaseLost, exc.NotOwner) as lost:
            self._lost(running, "%s; abandoning failed: %s" % (reason, lost))
            return
        except exc.StorageFailure as failure:
            # The lease runs out on its own; then the job is claimable again.
            self._lost(running, "%s; abandoning failed: %s" % (reason, failure))
            return
        self._notify(JOB_ABANDONED, running.job, reason=reason)

    def _cannot_build(self, running: _Running, reason: str) -> None:
        """Give the job back with a backoff, or trash it if enough distinct conductors failed it."""
        job = running.job
        try:
            record = self.board.failures_of(job)
        except exc.FlowkitError as error:
            self._lost(running, "%s; reading its failed attempts failed: %s" % (reason, error))
            return
        failed_by = tuple(dict.fromkeys((*record.failed_by, self.name)))
        attempts = record.attempts + 1
        if len(failed_by) >= self.max_conductor_failures:
            LOG.error(
                "conductor %r trashes job %s (%r): %d conductor(s) could not build its flow (%s); last: %s",
                self.name, job.uuid, job.name, len(failed_by), ", ".join(failed_by), reason,
            )  # fmt: skip
            try:
                self.board.trash(job, self.name, token=running.claim.token, error=reason)
            except (exc.StorageFailure, exc.NotOwner) as failure:  # StorageFailure includes a lost lease
                self._lost(running, "%s; trashing failed: %s" % (reason, failure))
                return
            self._notify(JOB_TRASHED, job, reason=reason, attempts=attempts, failed_by=failed_by)
            return
        delay = min(self.max_backoff, self.backoff * 2.0 ** min(record.attempts, 64))
        LOG.warning(
            "conductor %r cannot build the flow of job %s (%r), attempt %d; claimable again in %.1fs: %s",
            self.name, job.uuid, job.name, attempts, delay, reason,
        )  # fmt: skip
        try:
            self.board.fail(job, self.name, reason, token=running.claim.token, delay=delay)
        except (exc.StorageFailure, exc.NotOwner) as failure:
            # The lease runs out on its own; then the job is claimable again.
            self._lost(running, "%s; giving it back failed: %s" % (reason, failure))
            return
        self._notify(JOB_ABANDONED, job, reason=reason, attempts=attempts, failed_by=failed_by, delay=delay)

    def _lost(self, running: _Running, reason: str) -> None:
        if running.lost_announced:
            return
        running.lost_announced = True
        LOG.warning("conductor %r lost job %s (%r): %s", self.name, running.job.uuid, running.job.name, reason)
        self._notify(JOB_LOST, running.job, reason=reason)

    # -- steering a running engine (any thread) ----------------------------------------

    def _steer(self, running: _Running) -> None:
        """Apply a pending cancel, suspend or loss to the job's engine, if it runs."""
        with running.lock:
            engine = running.engine
            if engine is None:
                return
            if running.lost is not None or running.suspend:
                engine.suspend()
            elif running.cancel is not None and not running.cancel_applied:
                try:
                    engine.cancel("cancel requested on board %r" % (self.board.name,), revert=running.cancel.revert)
                except exc.InvalidState:
                    return  # not running yet (or any more); the run loop retries at its next step
                running.cancel_applied = True

    def _poll_cancel(self, running: _Running) -> None:
        request = running.cancel
        if request is None:
            request = self.board.cancel_requested(running.job)
        self._cancel_seen(running, request)  # also announces one a claim check noted but could not
        self._steer(running)

    def _cancel_seen(self, running: _Running, request: CancelRequest | None, *, announce: bool = True) -> None:
        """Take note of a cancel request (from the heartbeat's poll or a claim check).

        The engine is told first, so once JOB_CANCELLING is announced (once
        per job) no new atom starts.
        """
        if request is None:
            return
        with running.lock:
            if running.cancel is None:
                running.cancel = request
            request = running.cancel
        self._steer(running)
        with running.lock:
            if not announce or running.cancel_announced:
                return
            running.cancel_announced = True
        self._notify(JOB_CANCELLING, running.job, revert=request.revert)

    def _heartbeat_loop(self) -> None:
        interval = self.ttl / 3.0
        while not self._heartbeat_stop.wait(interval):
            with self._cond:
                jobs = list(self._running.values())
            for running in jobs:
                self._heartbeat(running)

    def _heartbeat(self, running: _Running) -> None:
        if running.lost is not None:
            return
        stale = self._stale_attempt(running)
        if stale is not None:
            # Not renewed: the lease runs out and another conductor resumes the
            # job from the logbook, re-running the hung atom there.
            running.lost = "it stopped renewing the claim: %s" % (stale,)
            self._steer(running)
            # Announced now: the job thread may stay inside the hung attempt for ever.
            self._lost(running, running.lost)
            return
        try:
            claim = self.board.renew(running.claim, ttl=self.ttl)
        except exc.LeaseLost as error:
            running.lost = "renewing the claim failed: %s" % (error,)
            self._steer(running)
            return
        except exc.FlowkitError as error:
            # The board may be back before the lease runs out; the fence
            # rejects writes if it is not.
            LOG.warning("conductor %r could not renew the claim of job %s: %s", self.name, running.job.uuid, error)
            return
        running.claim = claim
        if running.fenced is not None:
            running.fenced.claim = claim
        try:
            self._poll_cancel(running)
        except exc.FlowkitError as error:
            LOG.warning(
                "conductor %r could not ask whether job %s was cancelled: %s", self.name, running.job.uuid, error
            )

    def _stale_attempt(self, running: _Running) -> str | None:
        """Why the job's running attempt counts as hung (no heartbeat for longer than its timeout), or None.

        The engine fails an ``execute`` attempt that stops heartbeating itself;
        what is left for the conductor is an attempt the engine did not end: a
        revert (which is never abandoned), or any attempt while the engine's
        loop cannot act.  Beats are compared from one renewal to the next, on
        this process's monotonic clock.
        """
        with running.lock:
            engine = running.engine
        if engine is None:
            running.pulses.clear()
            return None
        now = time.monotonic()
        seen: dict[object, tuple[int, float]] = {}
        stale: str | None = None
        for attempt, name, beats, timeout in engine.heartbeats():
            before = running.pulses.get(attempt)
            if before is None or before[0] != beats:
                seen[attempt] = (beats, now)
                continue
            seen[attempt] = before
            if stale is None and now - before[1] > timeout:
                stale = "atom %r sent no heartbeat for %.1f seconds (its heartbeat_timeout is %.6g)" % (
                    name,
                    now - before[1],
                    timeout,
                )
        running.pulses = seen
        return stale

    # -- events ---------------------------------------------------------------------------

    def _notify(self, event: str, job: Job, **details: Any) -> None:
        LOG.debug("conductor %r: %s %s (%r)", self.name, event, job.uuid, job.name)
        if self.notifier.has_listeners:
            self.notifier.notify(event, {"conductor": self.name, "job": job, **details})


def _pick_flow_detail(book: LogBook, flow_uuid: Any, what: str) -> FlowDetail:
    if flow_uuid is not None:
        found = book.find(flow_uuid)
        if found is None:
            raise _Unbuildable("%s names flow detail %s, which is not in logbook %s" % (what, flow_uuid, book.uuid))
        return found
    details = list(book)
    if len(details) != 1:
        raise _Unbuildable(
            "%s has %d flow details in logbook %s and no details['flow_uuid'] to choose one"
            % (what, len(details), book.uuid)
        )
    return details[0]


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).isoformat(timespec="seconds")
