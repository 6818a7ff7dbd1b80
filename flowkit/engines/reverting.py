"""Reverting: what a failure undoes, in what order, and what happens after.

A failed atom's retry controllers are asked (innermost first) what to do; the
answer names a :class:`~flowkit.engines.runtime_base.Region` to revert: the
scope of the controller that said RETRY (then the controller runs again), the
innermost scope that said REVERT, or the whole flow.  A region stops starting
atoms, waits for its in-flight atoms, then reverts what ran in reverse
dependency order.  Regions are recorded in the flow detail, so a crash in the
middle of a revert resumes the revert.
"""

from __future__ import annotations

from typing import Any

from flowkit import exceptions as exc
from flowkit import states
from flowkit.atom import signature_of
from flowkit.engines import compiler as comp_mod
from flowkit.engines.runtime_base import (
    _DONE,
    _FAILURE,
    _NEEDS_REVERT,
    _PENDING,
    _RETRY_SCOPE,
    _RETRYING,
    _REVERT_ALL,
    _REVERT_SCOPE,
    _REVERTED,
    _REVERTING,
    _RUNNING,
    _SUCCESS,
    Region,
    RuntimeBase,
    S,
)
from flowkit.persistence import codec
from flowkit.retry import Decision, History
from flowkit.types.failure import Failure

__all__ = ["Reverter"]

#: The key of ``FlowDetail.meta`` holding failures that belong to no atom (a
#: cancellation) while the revert they caused is not over.
ENGINE_FAILURES_KEY = "engine_failures"
#: The key of ``FlowDetail.meta`` naming the retry controllers whose scope was
#: reverted (REVERT) while the rest of the flow went on.
REVERTED_SCOPES_KEY = "reverted_scopes"


class Reverter(RuntimeBase):
    """Opens, reverts and closes regions; the scheduler subclasses it."""

    def _rerun_reverted(self) -> None:
        details = self.details
        c = self.c
        for detail in details:
            if detail.state != _SUCCESS or detail.intention != states.EXECUTE:
                detail.reset(_PENDING)
                detail.meta.pop("ignore_depth", None)
                self._save(detail)
        self.storage.flow_detail.meta.pop("regions", None)
        self.storage.flow_detail.meta.pop(ENGINE_FAILURES_KEY, None)
        self.storage.flow_detail.meta.pop(REVERTED_SCOPES_KEY, None)
        for index in range(len(details)):
            self.waiting[index] = sum(1 for p in c.preds[index] if details[p].state not in _DONE)
            if self.waiting[index] == 0 and details[index].state == _PENDING:
                self.ready.push(index)

    def _add_region(self, region: Region) -> None:
        """Add ``region``, merging with regions it contains or that contain it."""
        for other in self.regions:
            if other.start <= region.start and region.end <= other.end:
                other.failures.update(region.failures)
                return
        kept = []
        for other in self.regions:
            if region.start <= other.start and other.end <= region.end:
                region.failures.update(other.failures)
            else:
                kept.append(other)
        self.regions = kept + [region]

    def _save_regions(self) -> None:
        fd = self.storage.flow_detail
        records = [
            {"retry": None if r.retry == -1 else self.c.atoms[r.retry].name, "outcome": r.outcome}
            for r in self.regions
        ]
        if records:
            fd.meta["regions"] = records
        else:
            fd.meta.pop("regions", None)
        self.storage.save_flow()

    def _cancel(self, failure: Failure) -> None:
        """Revert the whole flow because it was cancelled (once)."""
        self.cancel_requested = None
        if any(region.outcome == _REVERT_ALL for region in self.regions) or self.reverted:
            return
        self.engine_failures.append(failure)
        # Recorded (the region's write below saves it) so that a run that
        # finishes this revert later, after a crash or retry_reverts(), still
        # raises Cancelled.
        self.storage.flow_detail.meta[ENGINE_FAILURES_KEY] = [f.to_dict() for f in self.engine_failures]
        self._open_region(Region(0, len(self.details), -1, _REVERT_ALL), {})

    def _handle_failure(self, index: int, failure: Failure) -> None:
        name = self.details[index].name
        region = self._region_of(index) if self.regions else None
        if region is not None:
            # Already being reverted (it was in flight when its region failed).
            region.failures[name] = failure
            if index in region.member or region.reverting:
                return
            region.running -= 1
            if region.running == 0 and not region.reverting:
                self._start_revert(region)
            return
        self._open_region(self._decide(index, failure), {name: failure})

    def _decide(self, index: int, failure: Failure) -> Region:
        """Ask the failed atom's controllers, innermost first, what to revert."""
        c = self.c
        name = self.details[index].name
        key = name  # whose failure this controller's history records
        r = c.parent_retry[index] if c.is_retry[index] else c.owner[index]
        revert_scope = comp_mod.NO_RETRY
        while r != comp_mod.NO_RETRY:
            detail = self.details[r]
            if not detail.results:
                detail.results = [[None, {}]]
            detail.results[-1][1][key] = failure
            self._save(detail)
            retry = c.atoms[r]
            try:
                kwargs = self._arguments(r, lenient=True)
                history = History([(res, f) for res, f in detail.results])
                decision = Decision(retry.on_failure(history, **kwargs))  # type: ignore[attr-defined]
            except Exception as error:
                # A controller that cannot decide cannot be trusted to retry.
                wrapped = exc.ExecutionFailure(
                    "retry controller %r failed to decide after %r failed: %s: %s"
                    % (retry.name, name, type(error).__name__, error)
                )
                self.final_failures[retry.name] = Failure.from_exception(wrapped)
                revert_scope = comp_mod.NO_RETRY
                break
            if decision is Decision.RETRY:
                self.counters["retries"] += 1
                return Region(r, c.scope_end[r], r, _RETRY_SCOPE)
            if decision is Decision.REVERT_ALL:
                revert_scope = comp_mod.NO_RETRY
                break
            # REVERT: the enclosing controller may still choose RETRY or
            # REVERT_ALL; if none does, only the innermost scope that said
            # REVERT is reverted (TaskFlow's rule), or with defer_reverts the
            # whole flow (TaskFlow's option: REVERT always defers outward).
            if revert_scope == comp_mod.NO_RETRY and not self.defer_reverts:
                revert_scope = r
            # The enclosing controller hears of the failure under the name of
            # the controller that passed it on, as in TaskFlow.
            key = retry.name
            r = c.parent_retry[r]
        if revert_scope != comp_mod.NO_RETRY:
            return Region(revert_scope, c.scope_end[revert_scope], revert_scope, _REVERT_SCOPE)
        return Region(0, len(self.details), -1, _REVERT_ALL)

    def _open_region(self, region: Region, failures: dict[str, Failure]) -> None:
        region.failures.update(failures)
        self._add_region(region)
        if region not in self.regions:
            return  # already inside a region being reverted
        self._save_regions()
        details = self.details
        start, end = region.start, region.end
        keep = region.retry if region.outcome == _RETRY_SCOPE else -1
        for index in range(start, end):
            detail = details[index]
            if detail.state in _NEEDS_REVERT or detail.state == _RUNNING:
                if index != keep and detail.intention != states.REVERT:
                    detail.intention = states.REVERT
                    self._save(detail)
        if region.outcome == _REVERT_ALL:
            self.halted = True
            self._set_flow_state(S.REVERTING)
        elif region.outcome == _RETRY_SCOPE:
            detail = details[region.retry]
            detail.intention = states.RETRY
            self._save(detail)
        region.running = sum(1 for i in self.running if start <= i < end)
        if region.running == 0:
            self._start_revert(region)

    def _start_revert(self, region: Region) -> None:
        region.reverting = True
        details = self.details
        member = region.member
        keep = region.retry if region.outcome == _RETRY_SCOPE else -1
        for index in range(region.start, region.end):
            if index == keep:
                continue
            if details[index].state in _NEEDS_REVERT:
                member.add(index)
        succs = self.c.succs
        waits = region.waits
        for index in member:
            count = 0
            for s in succs[index]:
                if s in member:
                    count += 1
            waits[index] = count
        region.remaining = len(member)
        if not member:
            self._finish_region(region)
            return
        for index in sorted(member, reverse=True):
            if waits[index] == 0:
                self.revert_ready.append(index)

    def _begin_revert(self, index: int) -> dict[str, Any] | None:
        """Mark ``index`` REVERTING; run a controller's revert inline (None) or return task kwargs."""
        detail = self.details[index]
        region = self._region_of(index)
        assert region is not None
        old = detail.state
        detail.state = _REVERTING
        detail.intention = states.REVERT
        self._save(detail)
        self._notify_atom(index, _REVERTING, old)
        kwargs = self._arguments(index, lenient=True)
        atom = self.c.atoms[index]
        if self.c.is_retry[index]:
            self.storage.connection.flush()  # write ahead, as for tasks
            try:
                history = History([(r, f) for r, f in detail.results or ()])
                result = atom.revert(history, **kwargs)  # type: ignore[attr-defined]
            except Exception:
                self._reverted(index, False, Failure())
            else:
                self._reverted(index, True, result)
            return None
        # A task that failed is reverted with its Failure as the result.
        failed = old == _FAILURE or (detail.failure is not None and old != _SUCCESS)
        kwargs["result"] = detail.failure if failed else detail.results
        kwargs["flow_failures"] = dict(region.failures)
        sig = self._revert_signature(atom)
        if sig is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in sig}
        return kwargs

    def _revert_signature(self, atom: Any) -> frozenset[str] | None:
        """Names ``revert`` accepts, or None when it takes ``**kwargs``."""
        func = getattr(atom, "revert_function", None) or atom.revert
        sig = signature_of(func)
        if sig.var_kwargs:
            return None
        return sig.all_args

    def _reverted(self, index: int, ok: bool, value: Any) -> None:
        detail = self.details[index]
        region = self._region_of(index)
        if ok and value is not None:
            # An unstorable revert result is a failed revert (REVERT_FAILURE,
            # the flow ends FAILURE), never a revert left to run again.
            try:
                value = codec.canonical(
                    value, what="revert result", max_bytes=self.storage.connection.backend.result_limit
                )
            except exc.ResultNotStorable as error:
                ok, value = False, self._unstorable(index, "returned from revert() a value", error)
        if ok:
            detail.state = _REVERTED
            detail.revert_results = value
            detail.revert_failure = None
            self._save(detail)
            self.counters["atoms_reverted"] += 1
            self._notify_atom(index, _REVERTED, _REVERTING, value)
        else:
            detail.state = S.REVERT_FAILURE
            detail.revert_failure = value
            self._save(detail)
            self._notify_atom(index, S.REVERT_FAILURE, _REVERTING, value)
            # A failed revert leaves the world in an unknown state: stop everything.
            self.fatal = True
        if region is None:
            return
        if index not in region.member:
            # A revert of a region this one absorbed, in flight when it grew.
            region.running -= 1
            if region.running == 0 and not region.reverting:
                self._start_revert(region)
            return
        region.remaining -= 1
        if ok:
            for p in self.c.preds[index]:
                if p in region.member:
                    region.waits[p] -= 1
                    if region.waits[p] == 0:
                        self.revert_ready.append(p)
        if region.remaining == 0 and not self.fatal:
            self._finish_region(region)

    def _unstorable(self, index: int, what: str, error: exc.ResultNotStorable) -> Failure:
        """The Failure of atom ``index`` whose value (``what`` it did) the codec refused."""
        wrapped = exc.ResultNotStorable(
            "atom %r of flow %r %s that cannot be stored: %s"
            % (self.c.atoms[index].name, self.storage.flow_detail.name, what, error)
        )
        wrapped.__cause__ = error
        return Failure.from_exception(wrapped)

    def _finish_region(self, region: Region) -> None:
        self.regions.remove(region)
        if region.outcome != _RETRY_SCOPE:
            if region.retry != -1:
                # A scope reverted while the rest of the flow runs on: recorded
                # (in the same write that drops the region), so that a run
                # resumed after a crash still ends REVERTED.
                fd = self.storage.flow_detail
                done = [n for n in fd.meta.get(REVERTED_SCOPES_KEY) or () if isinstance(n, str)]
                name = self.c.atoms[region.retry].name
                if name not in done:
                    fd.meta[REVERTED_SCOPES_KEY] = done + [name]
            self._save_regions()
            # The flow ends REVERTED once whatever else can still run has run.
            self.reverted = True
            for name, failure in region.failures.items():
                self.final_failures.setdefault(name, failure)
            return
        # RETRY: forget this attempt inside the scope and run the controller again.
        c = self.c
        details = self.details
        retry = region.retry
        for index in range(region.start, region.end):
            self.ignore_flag[index] = 0
            if index == retry:
                continue
            detail = details[index]
            old = detail.state
            if old == _PENDING and detail.intention == states.EXECUTE and detail.failure is None:
                continue
            detail.reset(_PENDING)
            if c.is_retry[index]:
                detail.results = []
            self._save(detail)
            self._notify_atom(index, _PENDING, old)
        for ident, link in enumerate(c.deciders):
            if link.target.start < region.end and region.start < link.target.stop:
                self.decisions.pop(ident, None)
        detail = details[retry]
        old = detail.state
        detail.state = _RETRYING
        detail.intention = states.EXECUTE
        self._save(detail)
        self._notify_atom(retry, _RETRYING, old)
        # Recount after the controller left SUCCESS: it is unfinished again.
        affected = set(range(region.start, region.end))
        for index in range(region.start, region.end):
            affected.update(c.succs[index])
        for index in affected:
            self.waiting[index] = sum(1 for p in c.preds[index] if details[p].state not in _DONE)
        # Last, and in the same commit as the resets: the region is over.
        self._save_regions()
        if self.waiting[retry] == 0:
            self.ready.push(retry)
