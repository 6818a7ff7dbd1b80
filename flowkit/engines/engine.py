"""The engine: compile a flow once, then run it against its logbook.

``Engine`` is the only place where patterns, storage, persistence and
executors meet.  Engine modes differ only in the executor they use.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import types
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from flowkit import exceptions as exc
from flowkit import states
from flowkit._names import MAX_NAME_LENGTH, check_name
from flowkit.cancellation import CANCEL_KEY, CancelRequest
from flowkit.clock import Clock, as_clock
from flowkit.engines import _compiler as compiler
from flowkit.engines import _observers
from flowkit.engines._cancel_watch import CancelWatch
from flowkit.engines._scheduler import Scheduler
from flowkit.engines._state import ENGINE_FAILURES_KEY, IGNORED_BY_KEY, REGIONS_KEY, REVERTED_SCOPES_KEY, RunState
from flowkit.engines.executors import AtomExecutor, make_executor
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.policies import ERRORS_KEY, RetryPolicy
from flowkit.storage import Storage
from flowkit.types.cancellation import CancelToken
from flowkit.types.failure import Failure
from flowkit.types.notifier import Notifier
from flowkit.versioning import STRUCTURE_KEY, fingerprint

if TYPE_CHECKING:
    from flowkit.engines._plan import Plan

__all__ = ["Engine", "EngineStatistics"]


@dataclasses.dataclass(frozen=True)
class EngineStatistics:
    """What an engine did so far (a snapshot; call ``statistics()`` again for fresh numbers)."""

    atoms_total: int
    atoms_executed: int
    atoms_failed: int
    atoms_reverted: int
    atoms_ignored: int
    retries: int
    runs: int
    compile_seconds: float
    prepare_seconds: float
    run_seconds: float


#: The key of ``FlowDetail.meta`` that records ``load(..., defer_reverts=True)``.
DEFER_REVERTS_KEY = "defer_reverts"


def _new_counters() -> dict[str, int]:
    return {"atoms_executed": 0, "atoms_failed": 0, "atoms_reverted": 0, "atoms_ignored": 0, "retries": 0}


class Engine:
    """Runs one flow detail of one flow.  Build it with :func:`flowkit.engines.load`."""

    def __init__(
        self,
        flow: Any,
        flow_detail: FlowDetail,
        backend: Backend,
        *,
        mode: str,
        executor: Any = None,
        max_workers: int | None = None,
        clock: Any = None,
        retry_policy: RetryPolicy | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._flow = flow
        self._options = types.MappingProxyType(dict(options or {}))
        self._clock = as_clock(clock)
        self._retry_policy = RetryPolicy.check(retry_policy, "engine for flow %r" % (getattr(flow, "name", flow),))
        self._flow_detail = flow_detail
        self._backend = backend
        self._mode = mode
        self._executor: AtomExecutor = make_executor(mode, executor, max_workers)
        self._connection = backend.get_connection()
        self._storage = Storage(flow_detail, self._connection)
        self.notifier = Notifier()
        """Flow state events: ``callback(state, details)`` with flow_name, flow_uuid, old_state."""
        self.atom_notifier = Notifier()
        """Atom state events: ``callback(state, details)`` with atom_name, old_state, result."""
        self._compilation: compiler.Compilation | None = None
        # The atoms load_from_detail(repair=True) re-runs because their rows could not be read.
        self._repairing: frozenset[str] = frozenset()
        self._details: list[Any] | None = None
        self._run_state: RunState | None = None
        self._lock = threading.Lock()
        # Held while a cancel request found in the logbook is applied, so it
        # reaches the run it was found for or none.
        self._cancel_lock = threading.Lock()
        self._counters = _new_counters()
        self._times = {"compile": 0.0, "prepare": 0.0, "run": 0.0}
        self._runs = 0
        self._executor_checked = False
        self.trace_carriers: dict[str, dict[str, str]] | None = None
        """Set by :mod:`flowkit.tracing`: atom uuid -> the trace context its next run carries (None: not traced)."""
        if _observers.ENGINE_OBSERVERS:
            _observers.observe(_observers.ENGINE_OBSERVERS, self)

    # -- what it works on ---------------------------------------------------------

    @property
    def flow(self) -> Any:
        """The flow (or single atom) this engine runs."""
        return self._flow

    @property
    def options(self) -> Mapping[str, Any]:
        """The options ``load()`` was given (those not left at None), read-only (TaskFlow's ``options``)."""
        return self._options

    @property
    def storage(self) -> Storage:
        """Values, states and results of this run (see :class:`flowkit.storage.Storage`)."""
        return self._storage

    @property
    def backend(self) -> Backend:
        """The persistence backend the logbook is written to."""
        return self._backend

    @property
    def flow_detail(self) -> FlowDetail:
        """The flow detail this engine drives."""
        return self._flow_detail

    @property
    def compilation(self) -> compiler.Compilation:
        """The compiled flow (compiling it if needed)."""
        self.compile()
        assert self._compilation is not None
        return self._compilation

    @property
    def clock(self) -> Clock:
        """The clock timer and signal atoms read the time on."""
        return self._clock

    @property
    def mode(self) -> str:
        """``"serial"``, ``"parallel"`` or ``"distributed"``."""
        return self._mode

    @property
    def defer_reverts(self) -> bool:
        """Whether a REVERT decision defers to the enclosing scope (``load(..., defer_reverts=True)``).

        Recorded in the flow detail, so a resumed run (``load_from_detail``,
        ``flowkit resume``, a conductor) reverts the same atoms as the run it
        continues.
        """
        return self._flow_detail.meta.get(DEFER_REVERTS_KEY) is True

    # -- before running ---------------------------------------------------------------

    def compile(self) -> None:
        """Flatten and check the flow; raises DefinitionError subclasses before anything runs."""
        if self._compilation is not None:
            return
        started = time.perf_counter()
        self._compilation = compiler.compile_flow(self._flow, self._retry_policy)
        self._times["compile"] += time.perf_counter() - started

    def validate(self) -> None:
        """Check everything that can be checked without running.

        Compiles the flow, then checks that every requirement is provided by an
        atom in scope or by the store (so call it after injecting values), and
        that the executor can run every atom (a process executor needs
        picklable tasks).  ``run()`` always validates first.
        """
        self.compile()
        assert self._compilation is not None
        missing = compiler.missing_requirements(self._compilation, self._storage.injected)
        if missing:
            parts = [
                "atom %r requires %s" % (name, ", ".join(repr(s) for s in sorted(symbols)))
                for name, symbols in sorted(missing.items())
            ]
            symbols = sorted({s for symbols in missing.values() for s in symbols})
            hint = _misspelt_store_keys(symbols, self._storage.injected, self._compilation)
            raise exc.MissingDependencies(
                ", ".join(repr(name) for name in sorted(missing)),
                symbols,
                message="flow %r: %s, but no atom that runs before it in its scope provides that and "
                "the store does not have it%s" % (self._flow.name, "; ".join(parts), hint),
            )
        self._check_executor()

    def _check_executor(self) -> None:
        assert self._compilation is not None
        if self._executor_checked:
            return
        if type(self._executor).check_atom is AtomExecutor.check_atom:
            self._executor_checked = True  # the default: every atom can run
            return
        for index, atom in enumerate(self._compilation.atoms):
            if not self._compilation.is_retry[index]:
                self._executor.check_atom(atom)
        self._executor_checked = True

    def prepare(self) -> None:
        """Compile, check the executor can run every atom, and create the atom details durably.

        Idempotent.  Values may still be injected after ``prepare()``; missing
        requirements are reported by :meth:`validate` (and by ``run()``).
        """
        self._prepare()
        self._connection.flush()

    def _prepare(self) -> None:
        """:meth:`prepare` with the new atom details only buffered.

        ``run()`` uses this: its first write-ahead record flushes them in the
        same transaction, and until then nothing has run that a crash could lose.
        """
        started = time.perf_counter()
        self.compile()
        assert self._compilation is not None
        self._check_executor()
        if self._details is None:
            if STRUCTURE_KEY not in self._flow_detail.meta and self._flow_detail.state in (None, states.PENDING):
                # What a resume compares the code with (flowkit.versioning); written
                # with the new atom details.
                self._flow_detail.meta[STRUCTURE_KEY] = fingerprint(self._compilation)
            self._details = self._storage.attach(self._compilation)
        self._times["prepare"] += time.perf_counter() - started

    def plan(self) -> Plan:
        """What :meth:`run` would do now, atom by atom, without running or writing anything.

        Done atoms are skipped, atoms that were in flight run again
        (``step.at_least_once``), the rest run; a flow (or retry scope) that
        was reverting reverts; waits say until when.  The plan assumes that
        nothing fails from here on.  See :mod:`flowkit.plan`, which also
        plans a flow detail straight from the logbook (``flowkit plan UUID``).
        """
        from flowkit.engines._plan import plan_run
        from flowkit.versioning import compare

        self.compile()
        assert self._compilation is not None
        fd = self._flow_detail
        changes = compare(self._compilation, fd) if STRUCTURE_KEY in fd.meta else []
        return plan_run(self._compilation, fd, changes, any(not d.compatible for d in changes))

    # -- running --------------------------------------------------------------------------

    def run(self, *, park: bool = False) -> None:
        """Run the flow to its end (SUCCESS, REVERTED, FAILURE or SUSPENDED).

        A flow that reverted re-raises the failure that caused it (several at
        once as :class:`~flowkit.exceptions.WrappedFailure`, which names the
        atom of each).  A flow that ended FAILURE because a ``revert()`` raised
        raises what the revert raised (see :meth:`retry_reverts`).

        When only timers and signals (:mod:`flowkit.waits`) are left, the
        flow is WAITING: this thread blocks (no pool or Dask worker is held)
        until the next deadline or signal, then carries on.  With
        ``park=True`` it returns at once instead, the flow WAITING in the
        logbook (``flow_detail.meta["wake"]`` says until when); running it
        again later, in this process or another, continues the waits.  The
        backoff of a :class:`~flowkit.policies.RetryPolicy` between attempts is such a
        wait.  A policy that gives up with ``on_exhausted="broken"`` ends the
        flow BROKEN and raises :class:`~flowkit.exceptions.Broken` (see
        :meth:`retry` and :meth:`revert`).
        """
        for _ in self._states(park, rounds=False):
            pass

    def run_iter(self, *, park: bool = False) -> Iterator[states.State]:
        """Run the flow, yielding each state the engine passes through (``park``: see :meth:`run`)."""
        return self._states(park, rounds=True)

    def _states(self, park: bool, rounds: bool) -> Iterator[states.State]:
        # ``rounds``: yield every round, for a caller that acts between them
        # (run() has none, and a serial run then skips the empty ones).
        if not self._lock.acquire(blocking=False):
            raise exc.InvalidState("engine for flow %r is already running" % (self._flow.name,))
        try:
            self._prepare()
            self.validate()
            assert self._compilation is not None and self._details is not None
            run_state = RunState(
                self._compilation,
                self._details,
                self._storage,
                self._executor,
                self.notifier,
                self.atom_notifier,
                self._counters,
                defer_reverts=self.defer_reverts,
                clock=self._clock,
                park=park,
                trace_carriers=self.trace_carriers,
            )
            flow_lock = self._connection.lock_flow(self._flow_detail)
            try:
                self._check_not_stale()
            except BaseException:
                flow_lock.release()
                raise
            self._run_state = run_state
            self._runs += 1
            started = time.perf_counter()
            unsubscribe = self._wake_on_time_and_signals(run_state)
            watch = CancelWatch(self._backend, self._flow_detail, lambda found: self._cancel_seen(run_state, found))
            flag: Any = None
            try:
                self._executor.start()
                try:
                    flag = self._executor.cancel_flag()
                    token = CancelToken(flag)
                    if run_state.cancelled.is_set():
                        token.set()  # a suspend or cancel that came while the executor started
                    run_state.cancelled = token
                    self._check_cancel_request(watch)
                    watch.start()
                    yield from Scheduler(run_state, rounds).run_iter()
                finally:
                    watch.stop()
                    for stop in unsubscribe:
                        stop()
                    if flag is not None:
                        flag.close()
                    self._executor.stop()
                    with self._cancel_lock:
                        self._run_state = None
                    self._times["run"] += time.perf_counter() - started
                    try:
                        if watch.applied is not None:
                            # Acted on: the next request of this flow detail gets the next number.
                            self._flow_detail.meta[CANCEL_KEY] = watch.applied.record()
                            self._storage.save_flow()
                        self._connection.flush()
                        run_state.deliver()
                    except exc.StorageFailure:
                        # Already failing on the same outage: the first error
                        # is the one to report; the buffer is kept for resume.
                        if sys.exc_info()[1] is None:
                            raise
            finally:
                flow_lock.release()
        finally:
            self._lock.release()

    def _check_cancel_request(self, watch: CancelWatch) -> None:
        """Act on a cancel request stored before this run started, before any atom starts.

        A request found on a flow that has ended (it came as the last run
        finished) is recorded as seen, with nothing to act on.
        """
        if self._flow_detail.state in (states.SUCCESS, states.REVERTED, states.FAILURE):
            from flowkit.cancellation import pending_request

            found = pending_request(self._connection, self._flow_detail.uuid, self._flow_detail.meta)
            if found is not None:
                self._flow_detail.meta[CANCEL_KEY] = found.record()
            return
        watch.check(self._connection)

    def _cancel_seen(self, run_state: RunState, found: CancelRequest) -> bool:
        """Apply cancel request ``found`` to the run of ``run_state`` (any thread); False if that run is over."""
        with self._cancel_lock:
            if self._run_state is not run_state:
                return False
            if found.revert:
                self.cancel("%s (cancel request %d)" % (found.reason, found.seq))
            else:
                self.suspend()
            return True

    def _wake_on_time_and_signals(self, run_state: RunState) -> list[Any]:
        """Wake ``run_state``'s loop when the clock jumps or a signal is sent in this process."""
        assert self._compilation is not None
        if not self._compilation.waits and not self._compilation.has_policies and not self._compilation.heartbeats:
            return []
        from flowkit.signals import subscribe

        return [self._clock.on_change(run_state.wake), subscribe(self._flow_detail.uuid, run_state.wake)]

    def signal(self, name: str, value: Any = None, *, idempotency_key: str | None = None) -> bool:
        """Send the signal ``name`` with ``value`` (JSON data) to this engine's flow.

        The same as :func:`flowkit.signals.send` for this flow detail: stored
        durably first, so it reaches a :class:`~flowkit.waits.WaitFor` whether
        the flow waits for it now, later, or in another process after a
        restart.  A running engine waiting for it wakes at once.
        """
        from flowkit.signals import send

        return send(self._backend, self._flow_detail.uuid, name, value, idempotency_key=idempotency_key)

    def _check_not_stale(self) -> None:
        """Refuse to run from a flow detail that another engine changed since this one read it.

        The lock is taken when ``run()`` starts, but the flow detail was read
        when the engine was loaded: an engine loaded while another was driving
        the flow (or before another ran it) would otherwise run again atoms the
        other one finished.  With the lock held, the stored atom details must
        still be the ones this engine holds.  While writes of this engine's own
        wait in the buffer (new atom details, a reset, a flush an outage
        refused), only the atoms' identities are compared: its states are then
        newer than the stored ones.
        """
        fd = self._flow_detail
        conn = self._connection
        if not conn.has_flow_detail(fd.uuid):
            return
        try:
            stored = conn.get_atom_states(fd.uuid)
        except exc.CorruptLogbook:
            # Rows that cannot be decoded were checked when the flow detail was
            # loaded (load_from_detail refuses them unless repairing, and a
            # repair rewrites them as the atoms run again): nothing to compare.
            return
        buffered = conn.pending
        repaired = self._repairing
        for own in fd:
            theirs = stored.get(own.name)
            if theirs is None:
                continue
            uuid, state, intention = theirs
            if own.uuid != uuid:
                why = "atom %r has another atom detail there (%s, not %s)" % (own.name, uuid, own.uuid)
            elif own.name in repaired and own.state == states.PENDING:
                # A repair put a fresh atom detail where an unreadable row is;
                # the row's readable columns say what it was, not what runs now.
                continue
            elif not buffered and (own.state != state or own.intention != intention):
                why = "atom %r is %s there, %s here" % (own.name, state, own.state)
            else:
                continue
            raise exc.InvalidState(
                "flow %r (flow detail %s) was changed in the logbook by another engine since this engine "
                "read it (%s); load it again (load_from_detail, flowkit resume) to continue from what is "
                "stored" % (self._flow.name, fd.uuid, why)
            )

    def heartbeats(self) -> list[tuple[object, str, int, float]]:
        """The running attempts with a heartbeat timeout, as ``(attempt, atom name, beats so far, timeout)``.

        Safe from any thread: a conductor's lease thread asks it to see whether
        an attempt stopped heartbeating while the engine could not act on it.
        ``attempt`` is the same object for as long as the same attempt runs.
        Empty when the engine is not running.
        """
        run_state = self._run_state
        if run_state is None:
            return []
        found: list[tuple[object, str, int, float]] = []
        for watch in list(run_state.beating.values()):
            try:
                beats = watch.pulse.look()[0]
            except Exception:  # a channel that cannot be read now: no news of that attempt
                continue
            found.append((watch, watch.name, beats, watch.timeout))
        return found

    def suspend(self) -> None:
        """Stop starting atoms; in-flight ones finish and the flow ends SUSPENDED.

        Safe to call from any thread, including from inside a task or a
        notifier callback.  ``run()`` again continues where it stopped.
        Running tasks see ``self.context.cancelled`` set; one that then raises
        :class:`~flowkit.exceptions.Cancelled` is PENDING again and runs again
        when the flow is resumed.
        """
        run_state = self._run_state
        if run_state is None or run_state.suspending:
            return
        run_state.suspending = True
        run_state.cancelled.set()  # tasks that are running see it
        run_state.wake()  # a loop blocked on a wait notices at once
        if self.notifier.has_listeners:
            self.notifier.notify(
                states.SUSPENDING,
                {
                    "flow_name": self._flow_detail.name,
                    "flow_uuid": self._flow_detail.uuid,
                    "old_state": self._flow_detail.state,
                },
            )

    def cancel(self, reason: str = "cancelled", *, revert: bool = True) -> None:
        """Stop the flow at the next atom boundary and revert what ran.

        Safe to call from any thread.  In-flight atoms finish first; then
        everything that completed is reverted and ``run()`` raises
        :class:`~flowkit.exceptions.Cancelled`.  With ``revert=False`` this is
        :meth:`suspend`.  Running tasks see ``self.context.cancelled`` set; one
        that then raises :class:`~flowkit.exceptions.Cancelled` is not counted
        as failed: it is PENDING again, and not reverted (it did not finish).
        To cancel a flow from another process, or one that is not running, see
        :mod:`flowkit.cancellation` (``flowkit cancel UUID``).
        """
        if not revert:
            self.suspend()
            return
        run_state = self._run_state
        if run_state is None:
            raise exc.InvalidState("flow %r is not running; there is nothing to cancel" % (self._flow.name,))
        try:
            raise exc.Cancelled("flow %r was cancelled: %s" % (self._flow.name, reason))
        except exc.Cancelled:
            run_state.cancel_requested = Failure()
        run_state.cancelled.set()
        run_state.wake()

    def retry(self, atom: str | None = None) -> None:
        """Clear BROKEN so the next ``run()`` runs the broken atom (``atom``) or atoms (None) again.

        For a flow that ended BROKEN (a :class:`~flowkit.policies.RetryPolicy` with
        ``on_exhausted="broken"`` ran out): each atom is PENDING again with its
        error count at zero and a new attempt number (its attempt history is
        kept); the flow is PENDING unless other atoms stay BROKEN.  Written to
        the logbook at once (``flowkit retry UUID [ATOM]`` does the same from
        another process).  Raises :class:`~flowkit.exceptions.InvalidState` when
        nothing (or not ``atom``) is BROKEN, or while the engine runs.
        """
        if self._run_state is not None:
            raise exc.InvalidState("cannot retry flow %r while it runs" % (self._flow.name,))
        self.prepare()
        assert self._details is not None
        fd = self._flow_detail
        broken = [d for d in self._details if d.state == states.BROKEN]
        chosen = [d for d in broken if atom is None or d.name == atom]
        if not chosen:
            raise exc.InvalidState(
                "flow %r (%s) has %s to retry: it is %s%s"
                % (
                    self._flow.name,
                    fd.uuid,
                    "no BROKEN atom" if atom is None else "no BROKEN atom %r" % (atom,),
                    fd.state,
                    "" if not broken else " (BROKEN: %s)" % ", ".join(repr(d.name) for d in broken),
                )
            )
        flow_lock = self._connection.lock_flow(fd)
        try:
            for detail in chosen:
                detail.reset(states.PENDING)
                detail.meta[ERRORS_KEY] = 0
                self._storage.save_atom(detail)
            if len(chosen) == len(broken):
                self._storage.set_flow_state(states.PENDING)
            else:
                self._connection.flush()
        finally:
            flow_lock.release()

    def revert(self) -> None:
        """Make the next ``run()`` revert a BROKEN flow instead of retrying it.

        Every BROKEN atom counts as failed with its last failure; the run
        reverts the whole flow and ends REVERTED, raising that failure.
        Written to the logbook at once (``flowkit revert UUID``).  Raises
        :class:`~flowkit.exceptions.InvalidState` unless the flow is BROKEN.
        """
        if self._run_state is not None:
            raise exc.InvalidState("cannot revert flow %r while it runs" % (self._flow.name,))
        self.prepare()
        assert self._details is not None
        fd = self._flow_detail
        if fd.state != states.BROKEN:
            raise exc.InvalidState(
                "flow %r (%s) is %s, not BROKEN: there is nothing to revert" % (self._flow.name, fd.uuid, fd.state)
            )
        flow_lock = self._connection.lock_flow(fd)
        try:
            for detail in self._details:
                if detail.state == states.BROKEN:
                    detail.state = states.FAILURE
                    detail.intention = states.REVERT
                    self._storage.save_atom(detail)
            self._storage.set_flow_state(states.REVERTING)
        finally:
            flow_lock.release()

    def retry_reverts(self) -> None:
        """Let the next ``run()`` try again the reverts that failed.

        For a flow that ended FAILURE because a ``revert()`` raised (the atom
        is REVERT_FAILURE, the atoms before it still SUCCESS): once the cause
        is fixed, call this, then ``run()``.  The run reverts the atoms whose
        revert failed again, then carries on as if they had succeeded the first
        time: the earlier atoms are reverted and the flow ends REVERTED,
        re-raising the failure that made it revert (or, inside a retry scope
        that was retrying, the scope runs again).  The change is written to the
        logbook at once, so a later resume in another process (``flowkit
        resume``) carries on from it; ``flowkit resume --retry-reverts UUID``
        does both steps.

        Raises :class:`~flowkit.exceptions.InvalidState` when the flow did not
        end FAILURE with a failed revert, or while the engine runs.
        """
        if self._run_state is not None:
            raise exc.InvalidState("cannot retry the reverts of flow %r while it runs" % (self._flow.name,))
        self.prepare()
        assert self._details is not None
        fd = self._flow_detail
        failed = [d for d in self._details if d.state == states.REVERT_FAILURE]
        if fd.state != states.FAILURE or not failed:
            raise exc.InvalidState(
                "flow %r (%s) has no failed revert to retry: it is %s%s"
                % (
                    self._flow.name,
                    fd.uuid,
                    fd.state,
                    "" if fd.state != states.FAILURE else " without any atom in REVERT_FAILURE",
                )
            )
        # With the lock, so that no other engine is driving the flow detail
        # while its atoms change state.
        flow_lock = self._connection.lock_flow(fd)
        try:
            for detail in failed:
                # REVERTING is what an interrupted revert looks like: every
                # run, in this process or another, reverts it again.
                detail.state = states.REVERTING
                detail.intention = states.REVERT
                detail.revert_failure = None
                self._storage.save_atom(detail)
            regions = fd.meta.get(REGIONS_KEY) or ()
            whole = not regions or any(isinstance(r, Mapping) and r.get("retry") is None for r in regions)
            self._storage.set_flow_state(states.REVERTING if whole else states.RUNNING)
        finally:
            flow_lock.release()

    def reset(self) -> None:
        """Put every atom and the flow back to PENDING so the flow can run from the start."""
        if self._run_state is not None:
            raise exc.InvalidState("cannot reset flow %r while it runs" % (self._flow.name,))
        self.prepare()
        assert self._details is not None
        for detail in self._details:
            detail.reset(states.PENDING)
            detail.meta.pop("progress", None)
            detail.meta.pop(ERRORS_KEY, None)
            detail.meta.pop("ignore_depth", None)
            detail.meta.pop(IGNORED_BY_KEY, None)
            self._storage.save_atom(detail)
        self._flow_detail.meta.pop(REGIONS_KEY, None)
        self._flow_detail.meta.pop(ENGINE_FAILURES_KEY, None)
        self._flow_detail.meta.pop(REVERTED_SCOPES_KEY, None)
        self._storage.set_flow_state(states.PENDING)

    def statistics(self) -> EngineStatistics:
        """A snapshot of counters and timings."""
        counters = self._counters
        return EngineStatistics(
            atoms_total=len(self._compilation) if self._compilation is not None else 0,
            atoms_executed=counters["atoms_executed"],
            atoms_failed=counters["atoms_failed"],
            atoms_reverted=counters["atoms_reverted"],
            atoms_ignored=counters["atoms_ignored"],
            retries=counters["retries"],
            runs=self._runs,
            compile_seconds=self._times["compile"],
            prepare_seconds=self._times["prepare"],
            run_seconds=self._times["run"],
        )

    def close(self) -> None:
        """Release the engine's persistence connection (the backend stays open)."""
        if self._run_state is not None:
            raise exc.InvalidState("cannot close the engine of flow %r while it runs" % (self._flow.name,))
        self._connection.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<Engine %s flow=%r state=%s>" % (self._mode, self._flow.name, self._flow_detail.state)


def make_flow_detail(
    flow: Any,
    book: LogBook | None,
    flow_detail: FlowDetail | None,
    store: Mapping[str, Any] | None,
    defer_reverts: bool | None = None,
) -> tuple[LogBook, FlowDetail]:
    """The logbook and flow detail an engine for ``flow`` should use.

    Their names are checked like atom names (:class:`~flowkit.exceptions.InvalidName`)
    before anything is written.  ``defer_reverts`` True or False is recorded in
    the flow detail; None keeps what it records (False for a new one).
    """
    if flow_detail is None:
        flow_detail = FlowDetail(name=flow.name)
    if book is None:
        # Within the name columns' width even for the longest flow name.
        book = LogBook(name="%s-book" % flow.name[: MAX_NAME_LENGTH - len("-book")])
    check_name(book.name, "logbook name")
    check_name(flow_detail.name, "flow detail name")
    if book.find(flow_detail.uuid) is None:
        book.add(flow_detail)
    if store:
        current = dict(flow_detail.meta.get("store") or {})
        current.update(store)
        flow_detail.meta["store"] = current
    if defer_reverts:
        flow_detail.meta[DEFER_REVERTS_KEY] = True
    elif defer_reverts is not None:
        flow_detail.meta.pop(DEFER_REVERTS_KEY, None)
    return book, flow_detail


def _misspelt_store_keys(symbols: list[str], injected: Any, compilation: Any) -> str:
    """``" (did you mean ...?)"`` naming store keys nothing requires that look like a missing symbol, or ``""``."""
    import difflib

    unused = sorted(set(injected) - set(compilation.store_requires))
    hints = []
    for symbol in symbols:
        close = difflib.get_close_matches(symbol, unused, n=1, cutoff=0.6)
        if close:
            hints.append("store key %r for %r" % (close[0], symbol))
    if not hints:
        return ""
    return " (did you mean %s? no atom requires %s)" % (
        ", ".join(hints),
        "it" if len(hints) == 1 else "them",
    )

