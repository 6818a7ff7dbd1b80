"""The scheduler: what runs next, what reverts, when a retry controller is asked.

One :class:`Runtime` drives one ``run()`` of an engine.  It is rebuilt from the
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

import queue
from collections.abc import Iterator
from typing import Any

from flowkit import exceptions as exc
from flowkit import states
from flowkit.engines.executors import run_execute, run_revert
from flowkit.engines.reverting import ENGINE_FAILURES_KEY, REVERTED_SCOPES_KEY, Reverter
from flowkit.engines.runtime_base import (
    _DONE,
    _EXEC,
    _FAILURE,
    _IGNORE,
    _IGNORE_ALL,
    _IGNORE_ATOM,
    _PENDING,
    _PROGRESS,
    _RETRY_SCOPE,
    _RETRYING,
    _REVERT,
    _REVERT_ALL,
    _RUNNING,
    _SUCCESS,
    Region,
    S,
)
from flowkit.persistence import codec
from flowkit.retry import History
from flowkit.task import EVENT_UPDATE_PROGRESS
from flowkit.types.failure import Failure

__all__ = ["Runtime"]

class Runtime(Reverter):
    """Runs one pass of a compiled flow over its atom details."""

    def _rebuild(self) -> list[int]:
        """Work out counters, regions and ready atoms from the details; return unhandled failures."""
        c = self.c
        details = self.details
        preds = c.preds
        waiting = self.waiting
        for index in range(len(details)):
            count = 0
            for p in preds[index]:
                if details[p].state not in _DONE:
                    count += 1
            waiting[index] = count
            detail = details[index]
            if detail.state == _IGNORE and detail.meta.get("ignore_depth") == "ALL":
                for s in c.succs[index]:
                    self.ignore_flag[s] = _IGNORE_ALL
        fd = self.storage.flow_detail
        unhandled: list[int] = []
        if fd.state == S.REVERTED:
            # Running a reverted flow again runs what was reverted again.
            self._rerun_reverted()
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
            self.engine_failures.append(stored)
        for name in fd.meta.get(REVERTED_SCOPES_KEY) or ():
            r = c.names.get(name) if isinstance(name, str) else None
            if r is None or r not in c.scope_end:
                continue  # a scope the flow no longer has
            self.reverted = True
            for index in range(r, c.scope_end[r]):
                reverted_failure = details[index].failure
                if reverted_failure is not None:
                    self.final_failures.setdefault(details[index].name, reverted_failure)
        for record in fd.meta.get("regions") or ():
            retry_name = record.get("retry")
            outcome = record.get("outcome", _REVERT_ALL)
            if retry_name is None or retry_name not in c.names:
                region = Region(0, len(details), -1, _REVERT_ALL)
            else:
                r = c.names[retry_name]
                region = Region(r, c.scope_end[r], r, outcome)
            self._add_region(region)
        for r in c.scope_end:
            if details[r].intention == states.RETRY and self._region_of(r) is None:
                self._add_region(Region(r, c.scope_end[r], r, _RETRY_SCOPE))
        if fd.state == S.REVERTING and not self.regions:
            self._add_region(Region(0, len(details), -1, _REVERT_ALL))
        for index, detail in enumerate(details):
            if detail.state == S.REVERT_FAILURE:
                self.fatal = True
            if detail.state == _FAILURE and detail.intention == states.EXECUTE:
                unhandled.append(index)
        for region in self.regions:
            for index in range(region.start, region.end):
                failure = details[index].failure
                if failure is not None:
                    region.failures[details[index].name] = failure
        for index, detail in enumerate(details):
            if waiting[index] == 0 and detail.intention == states.EXECUTE:
                if detail.state in (_PENDING, _RUNNING, _RETRYING) and self._region_of(index) is None:
                    self.ready.push(index)
        return unhandled

    def run_iter(self) -> Iterator[S]:
        """Drive the flow until nothing can run; yield engine-loop states."""
        yield S.RESUMING
        local = self.executor.local
        if local:
            for index, atom in enumerate(self.c.atoms):
                if not self.c.is_retry[index]:
                    atom._progress_sink = _ProgressSink(self._completions, index)  # type: ignore[attr-defined]
        try:
            unhandled = self._rebuild()
            if self.regions and self.regions[0].outcome == _REVERT_ALL:
                self._set_flow_state(S.REVERTING)
            else:
                self._set_flow_state(S.RUNNING)
            for index in unhandled:
                self._handle_failure(index, self.details[index].failure)  # type: ignore[arg-type]
            for region in list(self.regions):
                if not region.reverting:
                    self._start_revert(region)
            get = self._completions.get
            get_nowait = self._completions.get_nowait
            while True:
                yield S.SCHEDULING
                self._schedule()
                if self._drain(get_nowait):
                    yield S.ANALYZING
                    continue
                if self.lost is not None:
                    break  # in-flight atoms may never report back
                if self.running:
                    yield S.WAITING
                    self._process(get())
                    self._drain(get_nowait)
                    yield S.ANALYZING
                    continue
                if self.suspending or self.fatal or self.lost is not None:
                    break
                if self.revert_ready or (len(self.ready) and not self.halted):
                    continue  # _schedule() takes at least one of these each time
                break
        finally:
            if local:
                for index, atom in enumerate(self.c.atoms):
                    if not self.c.is_retry[index]:
                        atom._progress_sink = None  # type: ignore[attr-defined]
        yield from self._finish()

    def _drain(self, get_nowait: Any) -> bool:
        """Process every queued completion; True if there was any."""
        processed = False
        while True:
            try:
                item = get_nowait()
            except queue.Empty:
                return processed
            processed = True
            self._process(item)

    def _finish(self) -> Iterator[S]:
        details = self.details
        if self.lost is not None:
            self._set_flow_state(S.SUSPENDED)
            yield S.SUSPENDED
            raise self.lost
        if self.fatal:
            self._set_flow_state(S.FAILURE)
            yield S.FAILURE
            # What stopped the flow is what is raised: the reverts that failed
            # (TaskFlow's rule: the execute failures they were undoing are not
            # re-raised), else what made the engine give up.
            named: list[tuple[str | None, Failure]] = [
                (d.name, d.revert_failure) for d in details if d.revert_failure is not None
            ]
            if not named:
                named = [(None, f) for f in self.engine_failures]
                named += [(d.name, d.failure) for d in details if d.failure is not None and d.state != _SUCCESS]
            self._reraise(named)
            return
        if self.reverted:
            self._set_flow_state(S.REVERTED)
            yield S.REVERTED
            named = [(None, f) for f in self.engine_failures]
            named += list(self.final_failures.items())
            self._reraise(named)
            return
        if all(d.state in _DONE for d in details):
            self._set_flow_state(S.SUCCESS)
            yield S.SUCCESS
            return
        if self.suspending:
            self._set_flow_state(S.SUSPENDED)
            yield S.SUSPENDED
            return
        stuck = [d.name for d in details if d.state not in _DONE][:5]
        raise exc.ExecutionFailure(
            "flow %r stopped with atoms that can neither run nor revert: %s"
            % (self.storage.flow_detail.name, ", ".join(repr(n) for n in stuck))
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
            flow_name=self.storage.flow_detail.name,
        )

    def _schedule(self) -> None:
        if self.cancel_requested is not None:
            self._cancel(self.cancel_requested)
        if self.suspending or self.fatal or self.lost is not None:
            return
        window = self.executor.max_in_flight
        details = self.details
        c = self.c
        to_submit: list[tuple[int, int, dict[str, Any]]] = []
        in_flight = len(self.running)
        # Reverts first: a region waiting on them holds up everything in it.
        revert_ready = self.revert_ready
        while revert_ready and in_flight + len(to_submit) < window:
            index = revert_ready.popleft()
            kwargs = self._begin_revert(index)
            if kwargs is not None:
                to_submit.append((index, _REVERT, kwargs))
        ready = self.ready
        regions = self.regions
        preds = c.preds
        while len(ready) and in_flight + len(to_submit) < window and not self.halted and not self.fatal:
            index = ready.pop()
            detail = details[index]
            if detail.state in _DONE or detail.intention != states.EXECUTE:
                continue
            if regions and self._region_of(index) is not None:
                continue  # held by a revert; a retry re-queues it
            if regions is not self.regions or self.reverted:
                # A revert ran since this atom was queued: make sure what it
                # depends on was not undone meanwhile.
                if any(details[p].state not in _DONE for p in preds[index]):
                    continue
            try:
                if self.ignore_flag[index] or (index in c.incoming_deciders and self._decided_no(index)):
                    self._ignore(index)
                    continue
            except exc.ExecutionFailure:
                # A decider that raises leaves the flow undecidable: stop, like a failed revert.
                self.engine_failures.append(Failure())
                self.fatal = True
                break
            if c.is_retry[index]:
                self._run_retry(index)
                continue
            try:
                kwargs = self._arguments(index)
            except exc.FlowkitError:
                self._mark_running(index)
                self._executed(index, False, Failure())
                continue
            to_submit.append((index, _EXEC, kwargs))
        if not to_submit:
            return
        if self.executor.inline:
            # Inline (serial): announce, persist and run one atom at a time, so
            # an atom that suspends or cancels the engine stops the rest of its round.
            for index, kind, kwargs in to_submit:
                old = None
                if kind == _EXEC:
                    if self._stopping():
                        self.ready.push(index)
                        continue
                    old = details[index].state
                    self._mark_running(index)
                # A stop requested while the atom was announced lets it run (it is
                # in flight); one that the write-ahead flush itself finds holds it back.
                announced = self._stopping()
                self.storage.connection.flush()
                if old is not None and not announced and self._stopping():
                    self._hold_back(index, old)
                    continue
                self._submit(index, kind, kwargs)
            return
        olds: dict[int, Any] = {}
        for index, kind, _kwargs in to_submit:
            if kind == _EXEC:
                olds[index] = details[index].state
                self._mark_running(index)
        announced = self._stopping()
        # Write ahead, in one commit: every RUNNING/REVERTING record is durable
        # before its atom starts.
        self.storage.connection.flush()
        stopping = not announced and self._stopping()
        for index, kind, kwargs in to_submit:
            if stopping and kind == _EXEC:
                self._hold_back(index, olds[index])
                continue
            self._submit(index, kind, kwargs)

    def _stopping(self) -> bool:
        """Whether a suspend or cancel arrived, so no new atom may start.

        Either can also arrive during a write-ahead flush, after its atoms
        were marked RUNNING: a job's claim check reports a cancel request
        there, and those atoms are then held back (:meth:`_hold_back`).
        """
        return self.suspending or self.cancel_requested is not None

    def _hold_back(self, index: int, old: Any) -> None:
        """Undo ``_mark_running`` of an atom that was not started after all; it is ready again."""
        detail = self.details[index]
        detail.state = old
        self._save(detail)
        self._notify_atom(index, old, _RUNNING)
        self.ready.push(index)

    def _submit(self, index: int, kind: int, kwargs: dict[str, Any]) -> None:
        self.running.add(index)
        fn = run_execute if kind == _EXEC else run_revert
        atom = self.c.atoms[index]
        try:
            future = self.executor.submit(fn, atom, kwargs)
        except Exception as error:
            failure = Failure.from_exception(
                exc.ExecutionFailure("atom %r could not be submitted to the executor: %s" % (atom.name, error))
            )
            self._completions.put((index, kind, _Done(False, failure)))
            return
        if self.executor.inline:
            # Done already.  A success is recorded at once: holding a whole
            # round of outcomes alive makes the garbage collector rescan them
            # again and again in large unordered flows.  Failures wait for the
            # end of the round, so every atom of the round runs (as on a
            # parallel engine) and all their failures are reported together.
            try:
                outcome = future.result()
            except BaseException as error:
                self._completions.put((index, kind, _Failed(error)))
                return
            if outcome[0] and not outcome[2]:
                self.running.discard(index)
                if kind == _EXEC:
                    self._executed(index, True, outcome[1])
                else:
                    self._reverted(index, True, outcome[1])
            else:
                self._completions.put((index, kind, _Done(*outcome)))
            return
        future.add_done_callback(_Completion(self._completions.put, index, kind))

    def _mark_running(self, index: int) -> None:
        detail = self.details[index]
        old = detail.state
        detail.state = _RUNNING
        self._save(detail)
        self._notify_atom(index, _RUNNING, old)
        self._notify_task_progress(index, 0.0)

    def _decided_no(self, index: int) -> bool:
        """Evaluate the deciders on links into ``index``; flag ignores; True if it is ignored."""
        ignored = False
        for ident in self.c.incoming_deciders[index]:
            decision = self.decisions.get(ident)
            link = self.c.deciders[ident]
            if decision is None:
                history: dict[str, Any] = {}
                for source in link.source:
                    found, value = self._result_of(source)
                    if found:
                        history[self.c.atoms[source].name] = value
                try:
                    decision = bool(link.decider(history))
                except Exception as error:
                    raise exc.ExecutionFailure(
                        "decider on the link %r -> %r raised %s: %s"
                        % (link.source_name, link.target_name, type(error).__name__, error)
                    ) from error
                self.decisions[ident] = decision
                if not decision:
                    flag = _IGNORE_ALL if link.depth == "ALL" else _IGNORE_ATOM
                    for target in link.target:
                        if self.ignore_flag[target] < flag:
                            self.ignore_flag[target] = flag
            if not decision:
                ignored = True
        return ignored

    def _ignore(self, index: int) -> None:
        detail = self.details[index]
        old = detail.state
        detail.state = _IGNORE
        propagate = self.ignore_flag[index] == _IGNORE_ALL
        if propagate:
            detail.meta["ignore_depth"] = "ALL"
        self._save(detail)
        self.counters["atoms_ignored"] += 1
        self._notify_atom(index, _IGNORE, old)
        for s in self.c.succs[index]:
            if propagate and self.ignore_flag[s] < _IGNORE_ALL:
                self.ignore_flag[s] = _IGNORE_ALL
            self.waiting[s] -= 1
            if self.waiting[s] == 0:
                self.ready.push(s)

    def _run_retry(self, index: int) -> None:
        """Run a retry controller's execute inline: controllers only decide."""
        detail = self.details[index]
        retry = self.c.atoms[index]
        self._mark_running(index)
        self.storage.connection.flush()  # write ahead, as for tasks
        try:
            kwargs = self._arguments(index)
            history = History([(r, f) for r, f in detail.results or ()])
            result = retry.execute(history, **kwargs)
        except Exception:
            self._executed(index, False, Failure())
            return
        self._executed(index, True, result)

    def _process(self, item: tuple[int, int, Any]) -> None:
        index, kind, future = item
        if kind == _PROGRESS:
            self._progress(index, future)
            return
        self.running.discard(index)
        try:
            ok, value, events = future.result()
        except exc.ExecutorLost as error:
            # Nobody knows whether the atom ran: keep it RUNNING for the resume.
            if self.lost is None:
                self.lost = error
            return
        except BaseException as error:  # the executor itself failed (lost process, bad pickle)
            ok, events = False, None
            value = Failure.from_exception(
                exc.ExecutionFailure(
                    "atom %r could not run on the executor: %s: %s"
                    % (self.c.atoms[index].name, type(error).__name__, error)
                )
            )
        if events:
            for progress in events:
                self._progress(index, progress)
        if kind == _EXEC:
            self._executed(index, ok, value)
        else:
            self._reverted(index, ok, value)

    def _progress(self, index: int, progress: float) -> None:
        detail = self.details[index]
        if detail.state != _RUNNING:
            return  # queued before the atom finished; its final progress is already recorded
        detail.meta["progress"] = progress
        if not self.executor.local:
            # A local task already told its own notifier; a remote one told a copy.
            self._notify_task_progress(index, progress)

    def _executed(self, index: int, ok: bool, value: Any) -> None:
        detail = self.details[index]
        c = self.c
        if ok and value is not None:
            # Canonical before anyone sees it: successors, listeners and the
            # logbook get the value a resumed run would read back.
            try:
                value = codec.canonical(value, max_bytes=self.storage.connection.backend.result_limit)
            except exc.ResultNotStorable as error:
                ok, value = False, self._unstorable(index, "returned a result", error)
        if ok and not c.is_retry[index] and c.atoms[index].save_as:
            try:
                self._check_provides(index, value)
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
            detail.failure = None
            detail.state = _SUCCESS
            self._save(detail)
        self.counters["atoms_executed"] += 1
        if ok:
            self._notify_atom(index, _SUCCESS, _RUNNING, value)
            if not c.is_retry[index]:
                self._notify_task_progress(index, 1.0)
            region = self._region_of(index) if self.regions else None
            if region is not None:
                region.running -= 1
                if region.running == 0 and not region.reverting:
                    self._start_revert(region)
                return
            waiting = self.waiting
            ready = self.ready
            for s in c.succs[index]:
                waiting[s] -= 1
                if waiting[s] == 0:
                    ready.push(s)
            return
        detail.state = _FAILURE
        detail.failure = value
        if c.is_retry[index]:
            detail.results = detail.results or []
        else:
            detail.results = None
        self._save(detail)
        self.counters["atoms_failed"] += 1
        self._notify_atom(index, _FAILURE, _RUNNING, value)
        self._handle_failure(index, value)

    def _notify_task_progress(self, index: int, progress: float) -> None:
        """Publish ``progress`` on the engine-side task's own notifier, if anyone listens."""
        notifier = getattr(self.c.atoms[index], "_notifier", None)
        if notifier is not None and notifier.has_listeners:
            notifier.notify(EVENT_UPDATE_PROGRESS, {"progress": progress})


class _Completion:
    """Future callback that hands a finished atom to the engine's loop."""

    __slots__ = ("put", "index", "kind")

    def __init__(self, put: Any, index: int, kind: int) -> None:
        self.put = put
        self.index = index
        self.kind = kind

    def __call__(self, future: Any) -> None:
        self.put((self.index, self.kind, future))


class _Done:
    """A future-like, already known outcome (inline runs, or a failed submit)."""

    __slots__ = ("outcome",)

    def __init__(self, ok: bool, value: Any, events: Any = None) -> None:
        self.outcome = (ok, value, events)

    def result(self) -> Any:
        return self.outcome


class _Failed:
    """A future-like error raised by the executor itself."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def result(self) -> Any:
        raise self.error


class _ProgressSink:
    """Receives ``update_progress`` from a task running in this process."""

    __slots__ = ("put", "index")

    def __init__(self, completions: queue.SimpleQueue[tuple[int, int, Any]], index: int) -> None:
        self.put = completions.put
        self.index = index

    def __call__(self, progress: float) -> None:
        self.put((self.index, _PROGRESS, progress))
