"""Reverting: what a failure undoes, in what order, and what happens after.

A failed atom's retry controllers are asked (innermost first) what to do; the
answer names a :class:`~flowkit.engines._state.Region` to revert: the
scope of the controller that said RETRY (then the controller runs again), the
innermost scope that said REVERT, or the whole flow.  A region stops starting
atoms, waits for its in-flight atoms, then reverts what ran in reverse
dependency order.  A flow with ``revert_with`` has a hidden first atom (see
``Compilation.undos``): when that atom is reverted with its region, the flow's
other atoms are marked REVERTED without running their reverts, and the hidden
atom's revert (the flow's undo) runs once, after them.  Regions are recorded
in the flow detail (``REGIONS_KEY``), so a crash in the middle of a revert
resumes the revert.
"""

from __future__ import annotations

import collections
from typing import Any

from flowkit import exceptions as exc
from flowkit import states
from flowkit.atom import signature_of
from flowkit.engines._compiler import NO_RETRY
from flowkit.engines._state import (
    DONE,
    ENGINE_FAILURES_KEY,
    IGNORED_BY_KEY,
    NEEDS_REVERT,
    REGIONS_KEY,
    RETRY_SCOPE,
    REVERT_ALL,
    REVERT_SCOPE,
    REVERTED_SCOPES_KEY,
    Region,
    RunState,
)
from flowkit.persistence import codec
from flowkit.policies import ERRORS_KEY
from flowkit.retry import Decision, History
from flowkit.states import (
    FAILURE,
    PENDING,
    RETRYING,
    REVERT_FAILURE,
    REVERTED,
    REVERTING,
    RUNNING,
    SUCCESS,
    WAITING,
)
from flowkit.types.failure import Failure
from flowkit.waits import WAIT_KEY

__all__ = ["Reverter"]


class Reverter:
    """Opens, reverts and closes the regions of one run's :class:`RunState`."""

    __slots__ = ("state",)

    def __init__(self, state: RunState) -> None:
        self.state = state

    def rerun_reverted(self) -> None:
        """Reset what a reverted flow reverted, so running it again runs that again."""
        st = self.state
        details = st.details
        c = st.c
        for detail in details:
            if detail.state != SUCCESS or detail.intention != states.EXECUTE:
                detail.reset(PENDING)
                detail.meta.pop("ignore_depth", None)
                detail.meta.pop(IGNORED_BY_KEY, None)
                detail.meta.pop(ERRORS_KEY, None)
                st.save(detail)
        st.storage.flow_detail.meta.pop(REGIONS_KEY, None)
        st.storage.flow_detail.meta.pop(ENGINE_FAILURES_KEY, None)
        st.storage.flow_detail.meta.pop(REVERTED_SCOPES_KEY, None)
        for index in range(len(details)):
            st.waiting[index] = sum(1 for p in c.preds[index] if details[p].state not in DONE)
            if st.waiting[index] == 0 and details[index].state == PENDING:
                st.ready.push(index)

    def add_region(self, region: Region) -> None:
        """Add ``region``, merging with regions it contains or that contain it."""
        st = self.state
        for other in st.regions:
            if other.start <= region.start and region.end <= other.end:
                other.failures.update(region.failures)
                return
        kept = []
        for other in st.regions:
            if region.start <= other.start and other.end <= region.end:
                region.failures.update(other.failures)
            else:
                kept.append(other)
        st.regions = kept + [region]

    def save_regions(self) -> None:
        """Record the regions being reverted in the flow detail (one write)."""
        st = self.state
        fd = st.storage.flow_detail
        records = [
            {"retry": None if r.retry == -1 else st.c.atoms[r.retry].name, "outcome": r.outcome.value}
            for r in st.regions
        ]
        if records:
            fd.meta[REGIONS_KEY] = records
        else:
            fd.meta.pop(REGIONS_KEY, None)
        st.storage.save_flow()
        st.deliver()

    def cancel(self, failure: Failure) -> None:
        """Revert the whole flow because it was cancelled (once)."""
        st = self.state
        st.cancel_requested = None
        if any(region.outcome == REVERT_ALL for region in st.regions) or st.reverted:
            return
        st.engine_failures.append(failure)
        # Recorded (the region's write below saves it) so that a run that
        # finishes this revert later, after a crash or retry_reverts(), still
        # raises Cancelled.
        st.storage.flow_detail.meta[ENGINE_FAILURES_KEY] = [f.to_dict() for f in st.engine_failures]
        self.open_region(Region(0, len(st.details), -1, REVERT_ALL), {})

    def handle_failure(self, index: int, failure: Failure) -> None:
        """Atom ``index`` failed: join the region holding it, or open the one its controllers choose."""
        st = self.state
        name = st.details[index].name
        region = st.region_of(index) if st.regions else None
        if region is not None:
            # Already being reverted (it was in flight when its region failed).
            region.failures[name] = failure
            if index in region.member or region.reverting:
                return
            region.running -= 1
            if region.running == 0 and not region.reverting:
                self.start_revert(region)
            return
        self.open_region(self.decide(index, failure), {name: failure})

    def decide(self, index: int, failure: Failure) -> Region:
        """Ask the failed atom's controllers, innermost first, what to revert."""
        st = self.state
        c = st.c
        name = st.details[index].name
        key = name  # whose failure this controller's history records
        r = c.parent_retry[index] if c.is_retry[index] else c.owner[index]
        revert_scope = NO_RETRY
        while r != NO_RETRY:
            detail = st.details[r]
            if not detail.results:
                detail.results = [[None, {}]]
            detail.results[-1][1][key] = failure
            st.save(detail)
            retry = c.atoms[r]
            try:
                kwargs = st.arguments(r, lenient=True)
                history = History([(res, f) for res, f in detail.results])
                decision = Decision(retry.on_failure(history, **kwargs))  # type: ignore[attr-defined]
            except Exception as error:
                # A controller that cannot decide cannot be trusted to retry.
                wrapped = exc.ExecutionFailure(
                    "retry controller %r failed to decide after %r failed: %s: %s"
                    % (retry.name, name, type(error).__name__, error)
                )
                st.final_failures[retry.name] = Failure.from_exception(wrapped)
                revert_scope = NO_RETRY
                break
            if decision is Decision.RETRY:
                st.counters["retries"] += 1
                return Region(r, c.scope_end[r], r, RETRY_SCOPE)
            if decision is Decision.REVERT_ALL:
                revert_scope = NO_RETRY
                break
            # REVERT: the enclosing controller may still choose RETRY or
            # REVERT_ALL; if none does, only the innermost scope that said
            # REVERT is reverted (TaskFlow's rule), or with defer_reverts the
            # whole flow (TaskFlow's option: REVERT always defers outward).
            if revert_scope == NO_RETRY and not st.defer_reverts:
                revert_scope = r
            # The enclosing controller hears of the failure under the name of
            # the controller that passed it on, as in TaskFlow.
            key = retry.name
            r = c.parent_retry[r]
        if revert_scope != NO_RETRY:
            return Region(revert_scope, c.scope_end[revert_scope], revert_scope, REVERT_SCOPE)
        return Region(0, len(st.details), -1, REVERT_ALL)

    def open_region(self, region: Region, failures: dict[str, Failure]) -> None:
        """Start reverting ``region``: mark its atoms, then revert once its in-flight atoms are back."""
        st = self.state
        region.failures.update(failures)
        self.add_region(region)
        if region not in st.regions:
            return  # already inside a region being reverted
        self.save_regions()
        details = st.details
        start, end = region.start, region.end
        keep = region.retry if region.outcome == RETRY_SCOPE else -1
        if st.waits:
            self.abort_waits(start, end)
        for index in range(start, end):
            detail = details[index]
            if detail.state in NEEDS_REVERT or detail.state == RUNNING:
                if index != keep and detail.intention != states.REVERT:
                    detail.intention = states.REVERT
                    st.save(detail)
        if region.outcome == REVERT_ALL:
            st.halted = True
            st.set_flow_state(REVERTING)
        elif region.outcome == RETRY_SCOPE:
            detail = details[region.retry]
            detail.intention = states.RETRY
            st.save(detail)
        region.running = sum(1 for i in st.running if start <= i < end)
        if region.running == 0:
            self.start_revert(region)

    def abort_waits(self, start: int, end: int) -> None:
        """Stop the waits in ``range(start, end)``, whose region reverts: back to PENDING (nothing to undo)."""
        st = self.state
        for index in [i for i in st.waits if start <= i < end]:
            del st.waits[index]
            detail = st.details[index]
            detail.state = PENDING
            detail.meta.pop(WAIT_KEY, None)
            st.save(detail)
            st.notify_atom(index, PENDING, WAITING)

    def start_revert(self, region: Region) -> None:
        """Queue the reverts of ``region`` (whose atoms are all back) in reverse dependency order."""
        st = self.state
        region.reverting = True
        details = st.details
        member = region.member
        keep = region.retry if region.outcome == RETRY_SCOPE else -1
        for index in range(region.start, region.end):
            if index == keep:
                continue
            if details[index].state in NEEDS_REVERT:
                member.add(index)
        succs = st.c.succs
        waits = region.waits
        for index in member:
            count = 0
            for s in succs[index]:
                if s in member:
                    count += 1
            waits[index] = count
        region.remaining = len(member)
        undos = st.c.undos
        if undos:
            skip = region.skip
            for undo in undos:
                if undo in member:
                    skip.update(i for i in undos[undo] if i in member)
        self.queue_reverts(region, [index for index in sorted(member, reverse=True) if waits[index] == 0])
        if region.remaining == 0:
            self.finish_region(region)

    def queue_reverts(self, region: Region, indices: list[int]) -> None:
        """Queue the reverts of ``indices`` (members of ``region`` whose successors are reverted).

        A member whose revert its flow's ``revert_with`` replaces is marked
        REVERTED at once, without running anything, and what that unblocks
        is queued in turn; the flow's undo comes after all of them.
        """
        st = self.state
        skip = region.skip
        if not skip:
            st.revert_ready.extend(indices)
            return
        todo = collections.deque(indices)
        member = region.member
        waits = region.waits
        preds = st.c.preds
        while todo:
            index = todo.popleft()
            if index not in skip:
                st.revert_ready.append(index)
                continue
            detail = st.details[index]
            old = detail.state
            detail.state = REVERTED
            detail.intention = states.REVERT
            st.save(detail)
            st.notify_atom(index, REVERTED, old)
            region.remaining -= 1
            for p in preds[index]:
                if p in member:
                    waits[p] -= 1
                    if waits[p] == 0:
                        todo.append(p)

    def begin_revert(self, index: int) -> dict[str, Any] | None:
        """Mark ``index`` REVERTING; run a controller's revert inline (None) or return task kwargs."""
        st = self.state
        detail = st.details[index]
        region = st.region_of(index)
        assert region is not None
        old = detail.state
        detail.state = REVERTING
        detail.intention = states.REVERT
        st.save(detail)
        st.notify_atom(index, REVERTING, old)
        kwargs = st.arguments(index, lenient=True)
        atom = st.c.atoms[index]
        if st.c.is_retry[index]:
            st.flush()  # write ahead, as for tasks
            try:
                history = History([(r, f) for r, f in detail.results or ()])
                result = atom.revert(history, **kwargs)  # type: ignore[attr-defined]
            except Exception:
                self.revert_done(index, False, Failure())
            else:
                self.revert_done(index, True, result)
            return None
        if index in st.c.undos:
            return {"results": self.flow_results(index), "flow_failures": dict(region.failures)}
        # A task that failed is reverted with its Failure as the result.
        failed = old == FAILURE or (detail.failure is not None and old != SUCCESS)
        kwargs["result"] = detail.failure if failed else detail.results
        kwargs["flow_failures"] = dict(region.failures)
        sig = self.revert_signature(atom)
        if sig is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in sig}
        return kwargs

    def flow_results(self, undo: int) -> dict[str, Any]:
        """What the atoms of the flow whose ``revert_with`` is atom ``undo`` provided: symbol -> value."""
        st = self.state
        c = st.c
        results: dict[str, Any] = {}
        for index in c.undos[undo]:
            detail = st.details[index]
            if c.is_retry[index] or index in c.undos or detail.failure is not None:
                continue
            if detail.state not in (SUCCESS, REVERTING, REVERTED):
                continue
            value = detail.results
            for symbol, where in c.atoms[index].save_as.items():
                if where is None:
                    results[symbol] = value
                    continue
                try:
                    results[symbol] = value[where]
                except (LookupError, TypeError):
                    continue
        return results

    def revert_signature(self, atom: Any) -> frozenset[str] | None:
        """Names ``revert`` accepts, or None when it takes ``**kwargs``."""
        func = getattr(atom, "revert_function", None) or atom.revert
        sig = signature_of(func)
        if sig.var_kwargs:
            return None
        return sig.all_args

    def revert_done(self, index: int, ok: bool, value: Any) -> None:
        """Record the revert of atom ``index`` (its result, or its Failure) and what it unblocks."""
        st = self.state
        detail = st.details[index]
        region = st.region_of(index)
        if ok and value is not None:
            # An unstorable revert result is a failed revert (REVERT_FAILURE,
            # the flow ends FAILURE), never a revert left to run again.
            try:
                value = codec.canonical(value, what="revert result", max_bytes=st.result_limit)
            except exc.ResultNotStorable as error:
                ok, value = False, st.unstorable(index, "returned from revert() a value", error)
        if ok:
            detail.state = REVERTED
            detail.revert_results = value
            detail.revert_failure = None
            st.save(detail)
            st.counters["atoms_reverted"] += 1
            st.notify_atom(index, REVERTED, REVERTING, value)
        else:
            detail.state = REVERT_FAILURE
            detail.revert_failure = value
            st.save(detail)
            st.notify_atom(index, REVERT_FAILURE, REVERTING, value)
            # A failed revert leaves the world in an unknown state: stop everything.
            st.fatal = True
        if region is None:
            return
        if index not in region.member:
            # A revert of a region this one absorbed, in flight when it grew.
            region.running -= 1
            if region.running == 0 and not region.reverting:
                self.start_revert(region)
            return
        region.remaining -= 1
        if ok:
            unblocked = []
            for p in st.c.preds[index]:
                if p in region.member:
                    region.waits[p] -= 1
                    if region.waits[p] == 0:
                        unblocked.append(p)
            if unblocked:
                self.queue_reverts(region, unblocked)
        if region.remaining == 0 and not st.fatal:
            self.finish_region(region)

    def finish_region(self, region: Region) -> None:
        """Close a reverted ``region``: the flow will end REVERTED, or the scope runs again (RETRY)."""
        st = self.state
        st.regions.remove(region)
        if region.outcome != RETRY_SCOPE:
            if region.retry != -1:
                # A scope reverted while the rest of the flow runs on: recorded
                # (in the same write that drops the region), so that a run
                # resumed after a crash still ends REVERTED.
                fd = st.storage.flow_detail
                done = [n for n in fd.meta.get(REVERTED_SCOPES_KEY) or () if isinstance(n, str)]
                name = st.c.atoms[region.retry].name
                if name not in done:
                    fd.meta[REVERTED_SCOPES_KEY] = done + [name]
            self.save_regions()
            # The flow ends REVERTED once whatever else can still run has run.
            st.reverted = True
            for name, failure in region.failures.items():
                st.final_failures.setdefault(name, failure)
            return
        # RETRY: forget this attempt inside the scope and run the controller again.
        c = st.c
        details = st.details
        retry = region.retry
        for index in range(region.start, region.end):
            st.ignore_flag[index] = 0
            if index == retry:
                continue
            detail = details[index]
            old = detail.state
            if old == PENDING and detail.intention == states.EXECUTE and detail.failure is None:
                continue
            detail.reset(PENDING)
            # A scope run again gives each atom's retry policy its attempts again.
            detail.meta.pop(ERRORS_KEY, None)
            if c.is_retry[index]:
                detail.results = []
            st.save(detail)
            st.notify_atom(index, PENDING, old)
        for ident, link in enumerate(c.deciders):
            if link.target.start < region.end and region.start < link.target.stop:
                st.decisions.pop(ident, None)
        detail = details[retry]
        old = detail.state
        detail.state = RETRYING
        detail.intention = states.EXECUTE
        st.save(detail)
        st.notify_atom(retry, RETRYING, old)
        # Recount after the controller left SUCCESS: it is unfinished again.
        affected = set(range(region.start, region.end))
        for index in range(region.start, region.end):
            affected.update(c.succs[index])
        for index in affected:
            st.waiting[index] = sum(1 for p in c.preds[index] if details[p].state not in DONE)
        # Last, and in the same commit as the resets: the region is over.
        self.save_regions()
        if st.waiting[retry] == 0:
            st.ready.push(retry)
