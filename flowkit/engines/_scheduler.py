"""The scheduler: what runs next, what reverts, when a retry controller is asked.

One :class:`Scheduler` drives one ``run()`` of an engine.  It is rebuilt from the
atom details every time, so a suspended flow, a flow resumed in another
process after a crash and a fresh flow all go through the same code.

Cost stays linear: every atom keeps a counter of unfinished predecessors that
completions decrement, and an atom is queued the moment its counter reaches
zero.  Nothing rescans all atoms per step and nothing sleeps to poll: the loop
blocks on a queue that completions are put on.

Failures are handled by *regions*: a failed atom's retry controllers are asked
(innermost first) and the answer names a region to revert: the scope of the
controller that said RETRY, or the whole flow.  A region stops starting atoms,
waits for its in-flight atoms, reverts what ran in reverse dependency order,
then either resets its atoms and runs the controller again (RETRY) or ends
the flow REVERTED.  Atoms outside a retrying region carry on meanwhile.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

from flowkit import exceptions as exc
from flowkit import states
from flowkit.engines._compiler import DeciderLink
from flowkit.engines._heartbeats import AttemptThread, Watch, WatchedCompletion, poll_interval
from flowkit.engines._reverter import Reverter
from flowkit.engines._state import (
    DONE,
    ENGINE_FAILURES_KEY,
    EXEC,
    IGNORE_ALL,
    IGNORE_ATOM,
    IGNORED_BY_KEY,
    PROGRESS,
    REGIONS_KEY,
    RETRY_SCOPE,
    REVERT,
    REVERT_ALL,
    REVERT_SCOPE,
    REVERTED_SCOPES_KEY,
    STARTED,
    WAKE,
    Region,
    RegionOutcome,
    RunState,
    S,
    short,
)
from flowkit.engines.executors import Outcome, SerialExecutor, run_execute, run_revert
from flowkit.patterns.graph_flow import Depth
from flowkit.persistence import codec
from flowkit.persistence.models import ATTEMPT_KEY
from flowkit.policies import ATTEMPTS_KEY, ERRORS_KEY, MAX_RECORDED_ATTEMPTS, RetryPolicy
from flowkit.retry import History
from flowkit.signals import DEFAULT_SIGNAL_POLL
from flowkit.states import (
    ANALYZING,
    BROKEN,
    FAILURE,
    IGNORE,
    PENDING,
    RESUMING,
    RETRYING,
    REVERT_FAILURE,
    REVERTED,
    REVERTING,
    RUNNING,
    SCHEDULING,
    SUCCESS,
    SUSPENDED,
    WAITING,
)
from flowkit.task import EVENT_UPDATE_PROGRESS, TaskContext
from flowkit.types.failure import Failure
from flowkit.types.heartbeat import HEARTBEAT_KEY, SAVE_EVERY, Pulse
from flowkit.waits import WAIT_KEY, WAKE_KEY

#: The key of ``AtomDetail.meta`` holding when the running attempt of an atom with a policy started.
ATTEMPT_STARTED_KEY = "attempt_started"

__all__ = ["Scheduler"]

_log = logging.getLogger(__name__)
# Ints in this range are their own canonical form (codec.canonical returns them as they are).
_SMALL_INT = 2**53
# The decider depths that ignore more than the target, chosen when the decider says no.
_REACHING = (Depth.FLOW, Depth.NEIGHBORS)


class Scheduler:
    """Runs one pass of a compiled flow over the :class:`RunState` it is handed."""

    __slots__ = ("state", "reverter", "rounds", "here")

    def __init__(self, state: RunState, rounds: bool = True) -> None:
        self.state = state
        self.reverter = Reverter(state)
        #: Whether every round is yielded (run_iter()); without, a serial
        #: run goes from one round's atoms to the next's without leaving
        #: _schedule() when nothing happened between them (run()).
        self.rounds = rounds
        #: Whether this thread runs each execute itself (_execute_here): the
        #: serial executor, whose call(fn, *args) is fn(*args), in a run
        #: that is not traced (run_execute does that).
        self.here = type(state.executor).call is SerialExecutor.call and state.trace_carriers is None

    def _rebuild(self) -> list[int]:
        """Work out counters, regions and ready atoms from the details; return unhandled failures."""
        st = self.state
        c = st.c
        details = st.details
        preds = c.preds
        waiting = st.waiting
        ignored_by: list[int] = []
        for index in range(len(details)):
            count = 0
            for p in preds[index]:
                if details[p].state not in DONE:
                    count += 1
            waiting[index] = count
            detail = details[index]
            if detail.state == IGNORE and detail.meta.get("ignore_depth") == Depth.ALL:
                for s in c.succs[index]:
                    st.ignore_flag[s] = IGNORE_ALL
            if detail.state == IGNORE and IGNORED_BY_KEY in detail.meta:
                ignored_by.append(index)
        if ignored_by:
            # A FLOW/NEIGHBORS decider said no before the crash: what it
            # ignores besides its target may not have been reached yet.
            links = {(link.source_name, link.target_name): link for link in c.deciders}
            for index in ignored_by:
                named = details[index].meta[IGNORED_BY_KEY]
                found = links.get(tuple(named)) if isinstance(named, list) else None
                if found is not None and found.depth in _REACHING:
                    self._flag_reach(found)
        fd = st.storage.flow_detail
        unhandled: list[int] = []
        if fd.state == REVERTED:
            # Running a reverted flow again runs what was reverted again.
            self.reverter.rerun_reverted()
            return unhandled
        records = fd.meta.get(ENGINE_FAILURES_KEY) or []
        for data in records if isinstance(records, list) else [records]:
            try:
                stored = Failure.from_dict(data)
            except ValueError as error:
                raise exc.StorageFailure(
                    "flow detail %r (%s): meta[%r] holds something that is not a failure: %s"
                    % (fd.name, fd.uuid, ENGINE_FAILURES_KEY, error)
                ) from error
            if stored.check(exc.Cancelled):
                # flowkit's own exception: raise it as itself again, not as data.
                stored = Failure.from_exception(exc.Cancelled(stored.exception_str))
            st.engine_failures.append(stored)
        for name in fd.meta.get(REVERTED_SCOPES_KEY) or ():
            r = c.names.get(name) if isinstance(name, str) else None
            if r is None or r not in c.scope_end:
                continue  # a scope the flow no longer has
            st.reverted = True
            for index in range(r, c.scope_end[r]):
                reverted_failure = details[index].failure
                if reverted_failure is not None:
                    st.final_failures.setdefault(details[index].name, reverted_failure)
        for record in fd.meta.get(REGIONS_KEY) or ():
            retry_name = record.get("retry")
            if retry_name is None or retry_name not in c.names:
                region = Region(0, len(details), -1, REVERT_ALL)
            else:
                r = c.names[retry_name]
                try:
                    outcome = RegionOutcome(record.get("outcome"))
                except ValueError:
                    outcome = REVERT_SCOPE  # what a scope's region does unless it retries
                region = Region(r, c.scope_end[r], r, outcome)
            self.reverter.add_region(region)
        for r in c.scope_end:
            if details[r].intention == states.RETRY and st.region_of(r) is None:
                self.reverter.add_region(Region(r, c.scope_end[r], r, RETRY_SCOPE))
        if fd.state == REVERTING and not st.regions:
            self.reverter.add_region(Region(0, len(details), -1, REVERT_ALL))
        for index, detail in enumerate(details):
            if detail.state == REVERT_FAILURE:
                st.fatal = True
            elif detail.state == BROKEN:
                st.broken.append(index)
            if detail.state == FAILURE and detail.intention == states.EXECUTE:
                unhandled.append(index)
        for region in st.regions:
            for index in range(region.start, region.end):
                failure = details[index].failure
                if failure is not None:
                    region.failures[details[index].name] = failure
        for index, detail in enumerate(details):
            if waiting[index] == 0 and detail.intention == states.EXECUTE:
                if detail.state in (PENDING, RUNNING, RETRYING, WAITING) and st.region_of(index) is None:
                    st.ready.push(index)
        return unhandled

    def run_iter(self) -> Iterator[S]:
        """Drive the flow until nothing can run; yield engine-loop states."""
        st = self.state
        yield RESUMING
        unhandled = self._rebuild()
        if st.regions and st.regions[0].outcome == REVERT_ALL:
            st.set_flow_state(REVERTING)
        else:
            st.set_flow_state(RUNNING)
        for index in unhandled:
            self.reverter.handle_failure(index, st.details[index].failure)  # type: ignore[arg-type]
        for region in list(st.regions):
            if not region.reverting:
                self.reverter.start_revert(region)
        # The rounds TaskFlow's users drive engines by: SCHEDULING (start what
        # can start), WAITING (for what is in flight), ANALYZING (record what
        # ended); then SCHEDULING again if that made work, WAITING if only
        # in-flight atoms or timers remain, or the end.  They are markers: a
        # round with nothing to wait for does not block.
        step: S | None = SCHEDULING
        while step is not None:
            if step is SCHEDULING:
                yield SCHEDULING
                self._schedule()
            yield WAITING
            self._wait()
            yield ANALYZING
            step = self._next_step()
        yield from self._finish()

    def _wait(self) -> None:
        """Take what ended since the last round; block for it when nothing has yet."""
        st = self.state
        if st.waits and self._check_waits():
            return
        if self._drain(st.completions.get_nowait) or st.lost is not None:
            return
        if not st.running:
            if st.suspending or st.fatal or not self._only_waits_left():
                return
            # Only waits are left: the flow is WAITING (durably, so another
            # process sees it) while this thread blocks until one can end.
            self._set_waiting()
        elif st.unflushed:
            # Results that started nothing new: commit them before idling,
            # rather than holding them (and their listeners) until the next
            # atom finishes.
            st.flush()
        self._block()
        self._drain(st.completions.get_nowait)

    def _only_waits_left(self) -> bool:
        st = self.state
        if st.revert_ready or (len(st.ready) and not st.halted and not st.broken):
            return False
        return bool(st.waits) and not st.park and not st.broken

    def _next_step(self) -> S | None:
        """SCHEDULING, WAITING or None (the run is over) after a round's ANALYZING."""
        st = self.state
        if st.lost is not None:
            return None  # in-flight atoms may never report back
        if st.cancel_requested is not None:
            return SCHEDULING
        if not (st.suspending or st.fatal):
            if st.revert_ready or (len(st.ready) and not st.halted and not st.broken):
                return SCHEDULING  # _schedule() takes at least one of these each time
        if st.running:
            return WAITING
        if st.suspending or st.fatal:
            return None
        return WAITING if self._only_waits_left() else None

    # -- waits ------------------------------------------------------------------------

    def _start_wait(self, index: int) -> bool:
        """Start (or, after a resume, pick up) the wait of atom ``index``; True if it was written now."""
        st = self.state
        detail = st.details[index]
        atom = st.c.atoms[index]
        info = detail.meta.get(WAIT_KEY) if detail.state == WAITING else None
        started = info is None
        if started:
            now = st.clock.now()
            info = {"until": atom.deadline(now), "signal": atom.signal, "started": now}  # type: ignore[attr-defined]
            old = detail.state
            detail.state = WAITING
            detail.meta[WAIT_KEY] = info
            st.save(detail)
            st.notify_atom(index, WAITING, old)
        until, signal = _wait_of(detail.name, st.storage.flow_detail.name, info)
        st.waits[index] = (until, signal)
        if signal is not None:
            st.look_for_signals = True  # it may have been sent already
        return started

    def _check_waits(self) -> bool:
        """End the waits whose signal came or whose deadline passed; True if any ended."""
        st = self.state
        received: dict[str, Any] = {}
        if st.look_for_signals:
            st.look_for_signals = False
            names = sorted({signal for _until, signal in st.waits.values() if signal is not None})
            if names:
                received = st.storage.connection.get_signals(st.flow_uuid, names)
        now = st.clock.now()
        ended = False
        for index, (until, signal) in list(st.waits.items()):
            if signal is not None and signal in received:
                del st.waits[index]
                self._executed(index, True, received[signal])
                ended = True
            elif until is not None and until <= now:
                del st.waits[index]
                ended = True
                if index not in st.c.waits:
                    self._backoff_over(index)
                    continue
                if signal is None:
                    self._executed(index, True, None)
                    continue
                name = st.details[index].name
                try:
                    raise exc.WaitTimeout(
                        "atom %r of flow %r: signal %r did not arrive within %s seconds"
                        % (name, st.storage.flow_detail.name, signal, getattr(st.c.atoms[index], "timeout", "?"))
                    )
                except exc.WaitTimeout:
                    self._executed(index, False, Failure())
        if ended:
            if st.storage.flow_detail.state == WAITING:
                st.set_flow_state(RUNNING)
            st.flush()
        return ended

    def _block(self) -> None:
        """Wait for a completion, a wake-up, or the next deadline; handle what came."""
        st = self.state
        timeout: float | None = None
        if st.waits:
            deadlines = [until for until, _signal in st.waits.values() if until is not None]
            if deadlines:
                timeout = st.clock.timeout(min(deadlines))
            if any(signal is not None for _until, signal in st.waits.values()):
                timeout = DEFAULT_SIGNAL_POLL if timeout is None else min(timeout, DEFAULT_SIGNAL_POLL)
        if st.beating:
            poll = poll_interval(st.beating.values())
            timeout = poll if timeout is None else min(timeout, poll)
            deadlines = [w.since + w.timeout for w in st.beating.values() if not w.reported]
            due = st.clock.timeout(min(deadlines)) if deadlines else None
            if due is not None:
                timeout = min(timeout, due)
        try:
            item = st.completions.get(timeout=timeout)
        except queue.Empty:
            st.look_for_signals = True
        else:
            self._process(item)
        if st.beating:
            self._check_heartbeats()

    def _set_waiting(self) -> None:
        """The flow is WAITING: record that, and what it waits for (``meta[WAKE_KEY]``), durably."""
        st = self.state
        fd = st.storage.flow_detail
        deadlines = [until for until, _signal in st.waits.values() if until is not None]
        signals = sorted({signal for _until, signal in st.waits.values() if signal is not None})
        wake = {"due": min(deadlines) if deadlines else None, "signals": signals}
        changed = fd.meta.get(WAKE_KEY) != wake
        fd.meta[WAKE_KEY] = wake
        if fd.state != WAITING:
            st.set_flow_state(WAITING)
        elif changed:
            st.storage.save_flow()
            st.deliver()

    def _drain(self, get_nowait: Any) -> bool:
        """Process every queued completion; True if there was any."""
        # This thread is the only one taking from the queue, so one that is not
        # empty has an item; asking first spares a raised Empty in every round
        # of a serial run, whose successes never go through the queue.
        empty = self.state.completions.empty
        processed = False
        while not empty():
            processed = True
            self._process(get_nowait())
        return processed

    def _finish(self) -> Iterator[S]:
        st = self.state
        details = st.details
        for watch in st.beating.values():
            watch.pulse.close()  # the run ends with them in flight (a lost executor)
        if st.attempt_thread is not None:
            st.attempt_thread.close()
        if st.lost is not None:
            st.set_flow_state(SUSPENDED)
            yield SUSPENDED
            raise st.lost
        if st.fatal:
            st.set_flow_state(FAILURE)
            yield FAILURE
            # What stopped the flow is what is raised: the reverts that failed
            # (TaskFlow's rule: the execute failures they were undoing are not
            # re-raised), else what made the engine give up.
            named: list[tuple[str | None, Failure]] = [
                (d.name, d.revert_failure) for d in details if d.revert_failure is not None
            ]
            if not named:
                named = [(None, f) for f in st.engine_failures]
                named += [(d.name, d.failure) for d in details if d.failure is not None and d.state != SUCCESS]
            self._reraise(named)
            return
        if st.broken and not st.suspending:
            st.set_flow_state(BROKEN)
            yield BROKEN
            self._raise_broken()
            return
        if st.waits and not st.suspending:
            self._set_waiting()
            yield WAITING
            return
        st.storage.flow_detail.meta.pop(WAKE_KEY, None)
        if st.reverted:
            st.set_flow_state(REVERTED)
            yield REVERTED
            named = [(None, f) for f in st.engine_failures]
            named += list(st.final_failures.items())
            self._reraise(named)
            return
        if all(d.state in DONE for d in details):
            st.set_flow_state(SUCCESS)
            yield SUCCESS
            return
        if st.suspending:
            st.set_flow_state(SUSPENDED)
            yield SUSPENDED
            return
        stuck = [d.name for d in details if d.state not in DONE][:5]
        raise exc.ExecutionFailure(
            "flow %r stopped with atoms that can neither run nor revert: %s"
            % (st.storage.flow_detail.name, ", ".join(repr(n) for n in stuck))
        )

    def _raise_broken(self) -> None:
        st = self.state
        flow = st.storage.flow_detail.name
        names = [st.details[i].name for i in st.broken]
        failures = [f for f in (st.details[i].failure for i in st.broken) if f is not None]
        causes = "; ".join(
            "atom %r failed %d times, last with %s"
            % (st.details[i].name, _errors(st.details[i]), _what(st.details[i].failure))
            for i in st.broken
        )
        raise exc.Broken(
            "flow %r is BROKEN: %s (its retry policy gives up with on_exhausted='broken'); nothing was "
            "reverted: engine.retry() / `flowkit retry %s` runs it again, engine.revert() / `flowkit revert %s` "
            "undoes the flow" % (flow, causes, st.flow_uuid, st.flow_uuid),
            flow,
            names,
            failures,
        )

    def _reraise(self, named: list[tuple[str | None, Failure]]) -> None:
        """Raise one failure as itself, several (or one without its exception object) wrapped; none: return."""
        if not named:
            return
        if len(named) == 1 and named[0][1].exception is not None:
            named[0][1].reraise()
        raise exc.WrappedFailure(
            [failure for _name, failure in named],
            atom_names=[name for name, _failure in named],
            flow_name=self.state.storage.flow_detail.name,
        )

    def _schedule(self) -> None:
        self._schedule_round()
        if self.rounds or not self.state.executor.inline:
            return
        while self._only_scheduling_next():
            self._schedule_round()

    def _only_scheduling_next(self) -> bool:
        """Whether the next round would do nothing but schedule: its WAITING and ANALYZING have nothing to take.

        That is _wait() finding no wait, completion or lost executor, and
        _next_step() answering SCHEDULING for atoms ready to start.
        """
        st = self.state
        return (
            len(st.ready) > 0
            and not st.running
            and not st.waits
            and st.lost is None
            and st.cancel_requested is None
            and not (st.suspending or st.fatal or st.halted or st.broken)
            and st.completions.empty()
        )

    def _schedule_round(self) -> None:
        st = self.state
        if st.cancel_requested is not None:
            self.reverter.cancel(st.cancel_requested)
        if st.suspending or st.fatal or st.lost is not None:
            return
        if st.beating and st.executor.inline:
            return  # serial: a watched attempt runs on a thread of its own, and nothing beside it
        details = st.details
        c = st.c
        executor = st.executor
        window = executor.max_in_flight
        # Atoms beyond the executor's free workers wait in its queue (see AtomExecutor.workers),
        # except in flows whose attempts are timed: their clocks would run while they wait.
        free = None
        if executor.workers is not None:
            if c.heartbeats or c.has_policies:
                window = executor.workers
            else:
                free = executor.workers - len(st.running)
        to_submit: list[tuple[int, int, dict[str, Any]]] = []
        in_flight = len(st.running)
        # Reverts first: a region waiting on them holds up everything in it.
        revert_ready = st.revert_ready
        while revert_ready and in_flight + len(to_submit) < window:
            index = revert_ready.popleft()
            if st.executor.inline and index in c.heartbeats:
                # Serial: a watched revert runs on a thread of its own, alone (see _submit_watched).
                if to_submit:
                    revert_ready.appendleft(index)
                    break
                kwargs = self.reverter.begin_revert(index)
                if kwargs is not None:
                    to_submit.append((index, REVERT, kwargs))
                    break
                continue
            kwargs = self.reverter.begin_revert(index)
            if kwargs is not None:
                if index in c.waits:
                    self.reverter.revert_done(index, True, None)  # a wait has nothing to undo
                    continue
                to_submit.append((index, REVERT, kwargs))
        ready = st.ready
        regions = st.regions
        preds = c.preds
        started_waits = False
        while len(ready) and in_flight + len(to_submit) < window and not st.halted and not st.fatal:
            if st.broken:
                break  # an operator decides; the ready atoms stay PENDING
            index = ready.pop()
            detail = details[index]
            if detail.state in DONE or detail.intention != states.EXECUTE:
                continue
            if regions and st.region_of(index) is not None:
                continue  # held by a revert; a retry re-queues it
            if regions is not st.regions or st.reverted:
                # A revert ran since this atom was queued: make sure what it
                # depends on was not undone meanwhile.
                if any(details[p].state not in DONE for p in preds[index]):
                    continue
            try:
                if st.ignore_flag[index] or (index in c.incoming_deciders and self._decided_no(index)):
                    self._ignore(index)
                    continue
            except exc.ExecutionFailure:
                # A decider that raises leaves the flow undecidable: stop, like a failed revert.
                st.engine_failures.append(Failure())
                st.fatal = True
                break
            if c.is_retry[index]:
                self._run_retry(index)
                continue
            if index in c.waits:
                started_waits |= self._start_wait(index)
                continue
            if detail.state == WAITING:
                # A retry policy's backoff, picked up again after a resume: keep its due time.
                st.waits[index] = _wait_of(detail.name, st.storage.flow_detail.name, detail.meta.get(WAIT_KEY))
                continue
            try:
                kwargs = st.arguments(index)
            except exc.FlowkitError:
                self._mark_running(index)
                self._executed(index, False, Failure())
                continue
            to_submit.append((index, EXEC, kwargs))
        if started_waits and not to_submit:
            st.flush()  # the deadlines, written ahead
        if not to_submit:
            return
        if st.executor.inline:
            # Inline (serial): announce, persist and run one atom at a time, so
            # an atom that suspends or cancels the engine stops the rest of its round.
            flush = st.storage.connection.flush
            for position, (index, kind, kwargs) in enumerate(to_submit):
                if st.beating:
                    # A watched attempt started on its thread: the rest of the round waits for it.
                    for later, later_kind, _kwargs in to_submit[position:]:
                        if later_kind == EXEC:
                            st.ready.push(later)
                        else:
                            self._submit(later, later_kind, _kwargs)
                    return
                old: S | str | None = None
                earlier = len(st.unflushed)
                # (_stopping(), spelled out: this runs a few times per atom.)
                if kind == EXEC:
                    if st.suspending or st.cancel_requested is not None:
                        st.ready.push(index)
                        continue
                    old = details[index].state
                    self._mark_running(index)
                # A stop requested while the atom was announced lets it run (it is
                # in flight); one that the write-ahead flush itself finds holds it back.
                announced = st.suspending or st.cancel_requested is not None
                announcing = len(st.unflushed) - earlier
                flush()
                held_back = self._announce(earlier, announcing, old is not None and not announced)
                if held_back and old is not None:
                    self._hold_back(index, old)
                    continue
                self._submit(index, kind, kwargs)
            return
        olds: dict[int, S | str] = {}
        earlier = len(st.unflushed)
        for index, kind, _kwargs in to_submit:
            if free is not None:
                free -= 1
            if kind == EXEC:
                olds[index] = details[index].state
                if free is not None and free < 0:
                    st.queued[index] = olds[index]
                    self._mark_running(index, announce=False)  # announced when a worker starts it
                else:
                    self._mark_running(index)
        announced = self._stopping()
        announcing = len(st.unflushed) - earlier
        # Write ahead, in one commit: every RUNNING/REVERTING record is durable
        # before its atom starts.
        st.storage.connection.flush()
        stopping = self._announce(earlier, announcing, not announced)
        for index, kind, kwargs in to_submit:
            if stopping and kind == EXEC:
                st.queued.pop(index, None)
                self._hold_back(index, olds[index])
                continue
            self._submit(index, kind, kwargs)

    def _announce(self, earlier: int, announcing: int, may_hold_back: bool) -> bool:
        """After a write-ahead flush: notify what it made durable; True if the new RUNNING atoms are held back.

        The ``earlier`` notifications come first (the successes the flush
        made durable, say).  A stop that the flush itself or a listener of
        one of those brings holds back the atoms just marked RUNNING (if
        ``may_hold_back``): their ``announcing`` RUNNING notifications are
        dropped, as they never start.  A stop that a listener of those
        RUNNING notifications asks for lets them run: they were announced.
        """
        st = self.state
        if earlier:
            st.deliver(earlier)
        hold = may_hold_back and (st.suspending or st.cancel_requested is not None)
        if announcing:
            if hold:
                del st.unflushed[:announcing]
            else:
                st.deliver(announcing)
        return hold

    def _stopping(self) -> bool:
        """Whether a suspend or cancel arrived, so no new atom may start.

        Either can also arrive during a write-ahead flush, after its atoms
        were marked RUNNING: a job's claim check reports a cancel request
        there, and those atoms are then held back (:meth:`_hold_back`).
        """
        st = self.state
        return st.suspending or st.cancel_requested is not None

    def _hold_back(self, index: int, old: S | str) -> None:
        """Undo ``_mark_running`` of an atom that was not started after all; it is ready again."""
        st = self.state
        detail = st.details[index]
        detail.state = S(old)
        st.save(detail)  # its RUNNING notification was dropped: listeners saw no change
        st.ready.push(index)

    def _submit(self, index: int, kind: int, kwargs: dict[str, Any]) -> None:
        st = self.state
        st.running.add(index)
        fn = run_execute if kind == EXEC else run_revert
        atom = st.c.atoms[index]
        executor = st.executor
        heartbeats = st.c.heartbeats
        if heartbeats and index in heartbeats:
            self._submit_watched(index, kind, kwargs, heartbeats[index])
            return
        if self.here and kind == EXEC:
            # (What executor.call(run_execute, ...) below does, with the
            # context made only if the task asks for it.)
            try:
                ok, value = _execute_here(atom, kwargs, self._context, index)
            except SystemExit:
                raise
            except BaseException as error:
                st.completions.put((index, kind, error))
                return
            if ok:
                st.running.discard(index)
                self._executed(index, True, value)
            else:
                st.completions.put((index, kind, Outcome(False, value)))
            return
        context = self._context(index)
        if executor.inline:
            # Run now.  A success is recorded at once: holding a whole round
            # of outcomes alive makes the garbage collector rescan them again
            # and again in large unordered flows.  Failures wait for the end
            # of the round, so every atom of the round runs (as on a parallel
            # engine) and all their failures are reported together.
            try:
                outcome = executor.call(fn, atom, kwargs, context)
            except SystemExit:
                raise  # the process is exiting: not a failure of the atom
            except BaseException as error:
                st.completions.put((index, kind, error))
                return
            if outcome.ok and not outcome.progress:
                st.running.discard(index)
                if kind == EXEC:
                    self._executed(index, True, outcome.value)
                else:
                    self.reverter.revert_done(index, True, outcome.value)
            else:
                st.completions.put((index, kind, outcome))
            return
        try:
            if st.queued and index in st.queued:
                gate = (self._may_start, st.completions.put, index)
                future = executor.submit(_start_if, *gate, fn, atom, kwargs, context)
            else:
                future = executor.submit(fn, atom, kwargs, context)
        except Exception as error:
            failure = Failure.from_exception(
                exc.ExecutionFailure("atom %r could not be submitted to the executor: %s" % (atom.name, error))
            )
            st.completions.put((index, kind, Outcome(False, failure)))
            return
        future.add_done_callback(_Completion(st.completions.put, index, kind))

    def _context(self, index: int, heartbeat_details: Any = None, pulse: Pulse | None = None) -> TaskContext:
        """The context of atom ``index``'s attempt (or revert) about to be submitted."""
        st = self.state
        detail = st.details[index]
        attempt = detail.meta.get(ATTEMPT_KEY)
        carriers = st.trace_carriers
        return TaskContext(
            st.c.atoms[index].name,
            st.flow_uuid,
            # A task in this process reports progress straight to the engine's
            # loop; elsewhere its run collects it (see run_execute).
            st.progress_sink if st.executor.local else None,
            # (The first attempt's key by concatenation: formatting costs more, once per atom.)
            detail.uuid + "-0"
            if attempt is None
            else "%s-%d" % (detail.uuid, attempt if isinstance(attempt, int) else 0),
            st.cancelled,
            heartbeat_details,
            pulse,
            trace_context=carriers.get(detail.uuid) if carriers is not None else None,
        )

    def _submit_watched(self, index: int, kind: int, kwargs: dict[str, Any], timeout: float) -> None:
        """Submit an attempt of a task with a heartbeat timeout (or its revert, which sees the details)."""
        st = self.state
        atom = st.c.atoms[index]
        executor = st.executor
        stored = st.details[index].meta.get(HEARTBEAT_KEY)
        details = stored.get("details") if isinstance(stored, dict) else None
        try:
            pulse = Pulse(executor.heartbeat_channel())
        except Exception as error:
            failure = Failure.from_exception(
                exc.ExecutionFailure("atom %r: no heartbeat channel to its executor: %s" % (atom.name, error))
            )
            st.completions.put((index, kind, Outcome(False, failure)))
            return
        context = self._context(index, details, pulse)
        fn = run_execute if kind == EXEC else run_revert
        watch = Watch(index, kind, atom.name, timeout, pulse, st.clock.now())
        try:
            if executor.inline:
                if st.attempt_thread is None:
                    st.attempt_thread = AttemptThread(st.storage.flow_detail.name)
                future = st.attempt_thread.submit(fn, atom, kwargs, context)
            else:
                future = executor.submit(fn, atom, kwargs, context)
        except Exception as error:
            pulse.close()
            failure = Failure.from_exception(
                exc.ExecutionFailure("atom %r could not be submitted to the executor: %s" % (atom.name, error))
            )
            st.completions.put((index, kind, Outcome(False, failure)))
            return
        watch.future = future
        st.beating[index] = watch
        future.add_done_callback(WatchedCompletion(st.completions.put, index, kind, watch))

    def _check_heartbeats(self) -> None:
        """Look at every watched attempt: note beats, store new details, abandon the overdue ones."""
        st = self.state
        now = st.clock.now()
        mono = time.monotonic()
        watches = st.beating
        if mono - st.heartbeats_looked < poll_interval(watches.values()) / 2 and all(
            not w.overdue(now) for w in watches.values()
        ):
            return
        st.heartbeats_looked = mono
        wrote = False
        for index, watch in list(watches.items()):
            watch.look(now)
            if watch.overdue(now):
                if watch.kind == EXEC:
                    self._heartbeat_timeout(index, watch, now)
                    continue
                watch.reported = True
                _log.warning(
                    "atom %r of flow %r: its revert sent no heartbeat for %.6g seconds (its heartbeat_timeout is "
                    "%.6g); a revert is not abandoned, it is left to finish (a conductor gives up the job)",
                    watch.name,
                    st.storage.flow_detail.name,
                    now - watch.since,
                    watch.timeout,
                )
            if watch.version != watch.saved_version and mono - watch.saved_at >= SAVE_EVERY:
                wrote |= self._save_heartbeat(index, watch, now)
        if wrote:
            st.storage.connection.flush()

    def _save_heartbeat(self, index: int, watch: Watch, now: float) -> bool:
        """Put the watch's latest details in the atom detail (for the next flush); True if they changed."""
        if watch.version == watch.saved_version:
            return False
        st = self.state
        detail = st.details[index]
        watch.saved_version = watch.version
        watch.saved_at = time.monotonic()
        try:
            details = codec.canonical(
                watch.details, what="heartbeat details of atom %r" % (detail.name,), max_bytes=st.result_limit
            )
        except exc.ResultNotStorable as error:
            _log.warning(
                "atom %r of flow %r: %s; keeping the last ones", detail.name, st.storage.flow_detail.name, error
            )
            return False
        detail.meta[HEARTBEAT_KEY] = {"details": details, "at": now}
        st.save(detail)
        return True

    def _heartbeat_timeout(self, index: int, watch: Watch, now: float) -> None:
        """Fail the attempt of ``watch``: no heartbeat came for longer than its timeout."""
        if not watch.abandon():
            return  # it finished first; its outcome is on the queue
        st = self.state
        del st.beating[index]
        st.running.discard(index)
        self._save_heartbeat(index, watch, now)
        if st.attempt_thread is not None:
            st.attempt_thread.abandon()
        if watch.future is not None:
            try:
                st.executor.abandon(watch.future)
            except Exception:  # the attempt is failed all the same
                _log.warning("atom %r: stopping its abandoned attempt failed", watch.name, exc_info=True)
        watch.pulse.close()
        flow = st.storage.flow_detail.name
        message = (
            "atom %r of flow %r sent no heartbeat for %.6g seconds (its heartbeat_timeout is %.6g); "
            "the attempt was abandoned" % (watch.name, flow, now - watch.since, watch.timeout)
        )
        _log.warning("%s", message)
        self._executed(index, False, Failure.from_exception(exc.HeartbeatTimeout(message)))

    def _mark_running(self, index: int, announce: bool = True) -> None:
        st = self.state
        detail = st.details[index]
        old = detail.state
        detail.state = RUNNING
        if st.c.has_policies and st.c.policies[index] is not None:
            detail.meta[ATTEMPT_STARTED_KEY] = st.clock.now()
        st.save(detail)
        if announce:
            self._announce_running(index, old)

    def _announce_running(self, index: int, old: S | str) -> None:
        st = self.state
        st.notify_atom(index, RUNNING, old)
        # (_notify_task_progress(), spelled out: this runs once per atom.)
        notifier = getattr(st.c.atoms[index], "_notifier", None)
        if notifier is not None and notifier.has_listeners:
            notifier.notify(EVENT_UPDATE_PROGRESS, {"progress": 0.0})

    def _may_start(self, index: int) -> bool:
        """Whether atom ``index``, taken up by a worker after waiting in the executor's queue, may start.

        Read in the worker's thread: a stop or revert the engine is setting up
        at that moment may be missed, and the atom then runs as one started
        just before it would.
        """
        st = self.state
        if self._stopping() or st.halted or st.fatal or st.lost is not None or st.broken:
            return False
        return not (st.regions and st.region_of(index) is not None)

    def _not_started(self, index: int) -> None:
        """Atom ``index`` waited in the executor's queue and was not started: back as it was, never announced."""
        st = self.state
        detail = st.details[index]
        detail.state = S(st.queued.pop(index))
        st.save(detail)
        self._requeue(index)

    def _decided_no(self, index: int) -> bool:
        """Evaluate the deciders on links into ``index``; flag ignores; True if it is ignored."""
        st = self.state
        ignored = False
        for ident in st.c.incoming_deciders[index]:
            decision = st.decisions.get(ident)
            link = st.c.deciders[ident]
            if decision is None:
                history: dict[str, Any] = {}
                for source in link.source:
                    found, value = st.result_of(source)
                    if found:
                        history[st.c.atoms[source].name] = value
                try:
                    decision = bool(link.decider(history))
                except Exception as error:
                    raise exc.ExecutionFailure(
                        "decider on the link %r -> %r raised %s: %s"
                        % (link.source_name, link.target_name, type(error).__name__, error)
                    ) from error
                st.decisions[ident] = decision
                if not decision:
                    flag = IGNORE_ALL if link.depth == Depth.ALL else IGNORE_ATOM
                    reaching = link.depth in _REACHING
                    for target in link.target:
                        if st.ignore_flag[target] < flag:
                            st.ignore_flag[target] = flag
                        if reaching:
                            st.ignored_by[target] = ident
                    if reaching:
                        self._flag_reach(link)
            if not decision:
                ignored = True
        return ignored

    def _flag_reach(self, link: DeciderLink) -> None:
        """Flag what a FLOW or NEIGHBORS decider ignores besides its target."""
        flags = self.state.ignore_flag
        for index in link.reach:
            if flags[index] < IGNORE_ATOM:
                flags[index] = IGNORE_ATOM

    def _ignore(self, index: int) -> None:
        st = self.state
        detail = st.details[index]
        old = detail.state
        detail.state = IGNORE
        propagate = st.ignore_flag[index] == IGNORE_ALL
        if propagate:
            detail.meta["ignore_depth"] = Depth.ALL.value  # stored as the plain string
        ident = st.ignored_by.get(index)
        if ident is not None:
            link = st.c.deciders[ident]
            detail.meta[IGNORED_BY_KEY] = [link.source_name, link.target_name]
        else:
            detail.meta.pop(IGNORED_BY_KEY, None)
        st.save(detail)
        st.counters["atoms_ignored"] += 1
        st.notify_atom(index, IGNORE, old)
        for s in st.c.succs[index]:
            if propagate and st.ignore_flag[s] < IGNORE_ALL:
                st.ignore_flag[s] = IGNORE_ALL
            st.waiting[s] -= 1
            if st.waiting[s] == 0:
                st.ready.push(s)

    def _run_retry(self, index: int) -> None:
        """Run a retry controller's execute inline: controllers only decide."""
        st = self.state
        detail = st.details[index]
        retry = st.c.atoms[index]
        self._mark_running(index)
        st.flush()  # write ahead, as for tasks
        try:
            kwargs = st.arguments(index)
            history = History([(r, f) for r, f in detail.results or ()])
            result = retry.execute(history, **kwargs)
        except Exception:
            self._executed(index, False, Failure())
            return
        self._executed(index, True, result)

    def _process(self, item: tuple[int, int, Any]) -> None:
        """Handle one completion: an atom's Outcome, what its executor raised, or live progress."""
        st = self.state
        index, kind, payload = item
        if kind == PROGRESS:
            self._progress(index, payload)
            return
        if kind == WAKE:
            st.look_for_signals = True
            return
        if kind == STARTED:
            self._announce_running(index, st.queued.pop(index))
            return
        st.running.discard(index)
        if st.beating:
            watch = st.beating.pop(index, None)
            if watch is not None:
                watch.look(st.clock.now())
                self._save_heartbeat(index, watch, st.clock.now())
                watch.pulse.close()
        if payload is _NOT_STARTED:
            self._not_started(index)
            return
        if st.queued and index in st.queued:
            # Queued and ended without a worker starting it (the executor failed it): heard RUNNING first.
            self._announce_running(index, st.queued.pop(index))
        if isinstance(payload, BaseException):
            if isinstance(payload, exc.ExecutorLost):
                # Nobody knows whether the atom ran: keep it RUNNING for the resume.
                if st.lost is None:
                    st.lost = payload
                return
            # The executor itself failed (lost process, bad pickle).
            payload = Outcome(
                False,
                Failure.from_exception(
                    exc.ExecutionFailure(
                        "atom %r could not run on the executor: %s: %s"
                        % (st.c.atoms[index].name, type(payload).__name__, payload)
                    )
                ),
            )
        for progress in payload.progress:
            self._progress(index, progress)
        if kind == EXEC and not payload.ok and st.cancelled.is_set() and payload.value.check(exc.Cancelled):
            self._interrupted(index)
            return
        if kind == EXEC:
            self._executed(index, payload.ok, payload.value)
        else:
            self.reverter.revert_done(index, payload.ok, payload.value)

    def _interrupted(self, index: int) -> None:
        """Atom ``index`` stopped because the run is being stopped: PENDING again, to run on resume, not reverted."""
        st = self.state
        detail = st.details[index]
        detail.state = PENDING
        detail.failure = None
        detail.results = None
        st.save(detail)
        st.notify_atom(index, PENDING, RUNNING)
        self._requeue(index)

    def _requeue(self, index: int) -> None:
        """Atom ``index``, submitted and not run to its end, is ready again (or done with, for its reverting region)."""
        st = self.state
        region = st.region_of(index) if st.regions else None
        if region is None:
            st.ready.push(index)  # held back while stopping; the next run starts it
            return
        region.running -= 1
        if region.running == 0 and not region.reverting:
            self.reverter.start_revert(region)

    def _progress(self, index: int, progress: float) -> None:
        st = self.state
        detail = st.details[index]
        if detail.state != RUNNING:
            return  # queued before the atom finished; its final progress is already recorded
        detail.meta["progress"] = progress
        if not st.executor.local:
            # A local task already told its own notifier; a remote one told a copy.
            self._notify_task_progress(index, progress)

    def _executed(self, index: int, ok: bool, value: Any) -> None:
        st = self.state
        detail = st.details[index]
        c = st.c
        if (
            ok
            and value is not None
            and (type(value) is not int or not -_SMALL_INT < value < _SMALL_INT or not st.small_ints_fit)
        ):
            # Canonical before anyone sees it: successors, listeners and the
            # logbook get the value a resumed run would read back.  (A small
            # int, the commonest result, is its own canonical form.)
            try:
                value = codec.canonical(value, max_bytes=st.result_limit)
            except exc.ResultNotStorable as error:
                ok, value = False, st.unstorable(index, "returned a result", error)
        if ok and index in c.picks_parts:
            try:
                st.check_provides(index, value)
            except exc.ExecutionFailure:
                ok, value = False, Failure()
        if ok:
            if c.is_retry[index]:
                if detail.results is None:
                    detail.results = []
                detail.results.append([value, {}])
            else:
                detail.results = value
                detail.meta["progress"] = 1.0
                if c.has_policies and c.policies[index] is not None:
                    detail.meta.pop(ATTEMPT_STARTED_KEY, None)
                    if detail.meta.get(ERRORS_KEY):
                        detail.meta[ERRORS_KEY] = 0  # the error count restarts when the atom succeeds
            detail.failure = None
            detail.state = SUCCESS
            st.save(detail)
        st.counters["atoms_executed"] += 1
        if ok:
            st.notify_atom(index, SUCCESS, RUNNING, value)
            if not c.is_retry[index]:
                notifier = getattr(c.atoms[index], "_notifier", None)
                if notifier is not None and notifier.has_listeners:
                    notifier.notify(EVENT_UPDATE_PROGRESS, {"progress": 1.0})
            region = st.region_of(index) if st.regions else None
            if region is not None:
                region.running -= 1
                if region.running == 0 and not region.reverting:
                    self.reverter.start_revert(region)
                return
            waiting = st.waiting
            ready = st.ready
            for s in c.succs[index]:
                waiting[s] -= 1
                if waiting[s] == 0:
                    ready.push(s)
            return
        if c.has_policies:
            policy = c.policies[index]
            # An atom whose region is being reverted (it was in flight) is not retried: the revert waits for it.
            if policy is not None and not st.halted and (not st.regions or st.region_of(index) is None):
                value = self._policy_failed(index, policy, value)
                if value is None:
                    return  # it waits for its next attempt, or it is BROKEN
        detail.state = FAILURE
        detail.failure = value
        if c.is_retry[index]:
            detail.results = detail.results or []
        else:
            detail.results = None
        st.save(detail)
        st.counters["atoms_failed"] += 1
        st.notify_atom(index, FAILURE, RUNNING, value)
        self.reverter.handle_failure(index, value)

    # -- retry policies ---------------------------------------------------------------

    def _policy_failed(self, index: int, policy: RetryPolicy, failure: Failure) -> Failure | None:
        """Record a failed attempt of atom ``index``; None if it is retried (or BROKEN), else the failure to raise."""
        st = self.state
        detail = st.details[index]
        meta = detail.meta
        now = st.clock.now()
        errors = _errors(detail) + 1
        meta[ERRORS_KEY] = errors
        started = meta.pop(ATTEMPT_STARTED_KEY, None)
        attempts = meta.get(ATTEMPTS_KEY)
        history = list(attempts) if isinstance(attempts, list) else []
        history.append({"attempt": errors, "started": started, "ended": now, "failure": failure.to_dict()})
        meta[ATTEMPTS_KEY] = history[-MAX_RECORDED_ATTEMPTS:]
        retry, why = policy.decide(failure, errors)
        name = detail.name
        flow = st.storage.flow_detail.name
        if retry:
            due = now + policy.delay(errors)
            attempt = meta.get(ATTEMPT_KEY)
            meta[ATTEMPT_KEY] = (attempt if isinstance(attempt, int) and attempt >= 0 else 0) + 1
            meta[WAIT_KEY] = {"until": due, "signal": None, "started": now, "retry": errors + 1}
            detail.state = WAITING
            detail.failure = None
            st.save(detail)
            st.counters["atoms_failed"] += 1
            st.notify_atom(index, WAITING, RUNNING)
            st.waits[index] = (due, None)
            st.flush()  # the due time, written ahead: a resume keeps it
            return None
        if why.startswith("retry_if raised"):
            stopped = exc.ExecutionFailure(
                "atom %r of flow %r failed with %s, and its retry policy's %s" % (name, flow, _what(failure), why)
            )
            failure = Failure.from_exception(stopped)
        if policy.on_exhausted == "broken" and errors >= policy.max_attempts:
            detail.state = BROKEN
            detail.failure = failure
            detail.results = None
            st.save(detail)
            st.counters["atoms_failed"] += 1
            st.notify_atom(index, BROKEN, RUNNING, failure)
            st.broken.append(index)
            st.flush()
            return None
        return failure

    def _backoff_over(self, index: int) -> None:
        """A retry policy's backoff of atom ``index`` ended: it is ready to run its next attempt."""
        st = self.state
        detail = st.details[index]
        detail.meta.pop(WAIT_KEY, None)
        detail.state = PENDING
        st.save(detail)
        st.notify_atom(index, PENDING, WAITING)
        if st.region_of(index) is None:
            st.ready.push(index)

    def _notify_task_progress(self, index: int, progress: float) -> None:
        """Publish ``progress`` on the engine-side task's own notifier, if anyone listens."""
        notifier = getattr(self.state.c.atoms[index], "_notifier", None)
        if notifier is not None and notifier.has_listeners:
            notifier.notify(EVENT_UPDATE_PROGRESS, {"progress": progress})


#: What :func:`_start_if` hands back for an atom it did not start.
_NOT_STARTED = Outcome(False, None)


def _execute_here(
    task: Any, kwargs: dict[str, Any], make: Callable[[int], TaskContext], index: int
) -> tuple[bool, Any]:
    """run_execute() for an atom the serial engine runs in its own thread: ``(ok, result or Failure)``.

    The context is made by ``make(index)`` only if the task asks for it
    (TaskContext.activate_later), and no Outcome is built: in this thread
    there is no progress to carry back, no heartbeat and no trace.
    """
    token = TaskContext.activate_later(make, index)
    try:
        task.pre_execute()
        try:
            result = task.execute(**kwargs)
        finally:
            task.post_execute()
    except Exception:
        return False, Failure()
    finally:
        TaskContext.deactivate(token)
    return True, result


def _start_if(
    may_start: Callable[[int], bool],
    tell: Callable[[tuple[int, int, Any]], None],
    index: int,
    fn: Callable[..., Outcome],
    *args: Any,
) -> Outcome:
    """In an executor's worker: ``fn(*args)`` for atom ``index``, which waited in its queue.

    Unless ``may_start(index)`` says the run no longer wants it; else the
    engine is told (``tell``, the run's completion queue) that it started,
    before its outcome, so listeners hear of it RUNNING first.
    """
    if not may_start(index):
        return _NOT_STARTED
    tell((index, STARTED, None))
    return fn(*args)


class _Completion:
    """Future callback that hands a finished atom's Outcome (or what its executor raised) to the engine's loop."""

    __slots__ = ("put", "index", "kind")

    def __init__(self, put: Any, index: int, kind: int) -> None:
        self.put = put
        self.index = index
        self.kind = kind

    def __call__(self, future: Any) -> None:
        try:
            payload = future.result()
        except BaseException as error:
            payload = error
        self.put((self.index, self.kind, payload))


def _errors(detail: Any) -> int:
    """How many times the atom of ``detail`` failed since it last succeeded (its meta, checked)."""
    errors = detail.meta.get(ERRORS_KEY)
    return errors if isinstance(errors, int) and not isinstance(errors, bool) and errors >= 0 else 0


def _what(failure: Failure | None) -> str:
    if failure is None:
        return "nothing recorded"
    return "%s: %s" % (failure.exception_type_name.rsplit(".", 1)[-1], failure.exception_str)


def _wait_of(atom: str, flow: str, info: Any) -> tuple[float | None, str | None]:
    """(deadline, signal) of a started wait as its atom detail records it; CorruptLogbook if it is not one."""
    if isinstance(info, dict):
        until = info.get("until")
        signal = info.get("signal")
        if (until is None or (isinstance(until, (int, float)) and not isinstance(until, bool))) and (
            signal is None or isinstance(signal, str)
        ):
            return (None if until is None else float(until)), signal
    raise exc.CorruptLogbook(
        "atom %r of flow %r is WAITING, but its meta[%r] is %s, not a wait (a deadline and a signal name)"
        % (atom, flow, WAIT_KEY, short(info))
    )
