"""What a ``run()`` of a flow detail would do, worked out from its atom details without running anything.

The rules are the scheduler's (:meth:`flowkit.engines._scheduler.Scheduler._rebuild`)
and the reverter's, read rather than applied: the regions being reverted
(recorded in ``meta["regions"]``, a retry controller whose intention is
RETRY, a flow that was REVERTING), then each atom's state outside them.  The
plan assumes that nothing fails from here on: a failure during the resume
is decided by its retry controller then, as always.  Where the outcome
depends on a decision no one has made yet (a failure recorded just before a
crash, before its controller was asked; a decider on a link), the plan says
so instead of guessing.  :mod:`flowkit.plan` is the public face.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Sequence
from typing import Any

from flowkit import states
from flowkit.engines._compiler import NO_RETRY, Compilation
from flowkit.engines._state import NEEDS_REVERT, REGIONS_KEY, REVERTED_SCOPES_KEY, RegionOutcome
from flowkit.persistence.models import AtomDetail, FlowDetail
from flowkit.versioning import DROPPED_KEY, Difference
from flowkit.waits import WAIT_KEY

__all__ = ["Action", "PlanStep", "Plan", "plan_run"]


class Action(str, enum.Enum):
    """What a resume does with one atom."""

    SKIP = "skip"  # done: its result stands, it does not run again
    RERUN = "rerun"  # was in flight when the run stopped: runs again (at least once)
    RUN = "run"  # has not run: runs
    REVERT = "revert"  # its revert runs (the flow, or its retry scope, is being reverted)
    REVERT_AND_RUN = "revert-and-run"  # reverted, then runs again (its retry scope retries)
    WAIT = "wait"  # waits on a timer, a signal or a retry policy's backoff, then goes on
    DECIDE = "decide"  # failed just before the run stopped: its retry controller decides first
    NONE = "none"  # nothing happens to it


_DONE = frozenset([states.SUCCESS, states.IGNORE])
_ENDED = frozenset([states.SUCCESS, states.REVERTED, states.FAILURE])


@dataclasses.dataclass(frozen=True)
class PlanStep:
    """One atom in a :class:`Plan`: its state in the logbook and what the resume does with it."""

    atom: str
    kind: str
    state: str
    action: Action
    note: str = ""
    #: For a wait: the clock time (seconds) it ends at, or None (a signal with no timeout).
    until: float | None = None
    #: For a wait: the signal it waits for.
    signal: str | None = None
    #: The version it ran with (the atom detail's), or None when it has no detail yet.
    version: tuple[int, int] | None = None

    @property
    def at_least_once(self) -> bool:
        """Whether the atom may have run already and runs again (it was in flight)."""
        return self.action is Action.RERUN

    def to_data(self) -> dict[str, Any]:
        """The step as JSON data."""
        return {
            "atom": self.atom,
            "kind": self.kind,
            "state": self.state,
            "action": self.action.value,
            "note": self.note,
            "until": self.until,
            "signal": self.signal,
            "version": None if self.version is None else list(self.version),
        }


@dataclasses.dataclass(frozen=True)
class Plan:
    """What resuming a flow detail would do, atom by atom (see :func:`flowkit.plan.plan_flow_detail`).

    ``steps`` follow the atoms' order in the compiled flow; ``changes`` are
    the structural differences between the code and the logbook (with
    ``refused`` True when one is incompatible: the resume would raise
    :class:`~flowkit.exceptions.FlowChanged`); ``outcome`` is the state the
    flow ends in if nothing fails (``"UNDECIDED"`` when a retry controller's
    decision is pending).
    """

    flow_name: str
    flow_uuid: str
    flow_state: str
    steps: tuple[PlanStep, ...]
    outcome: str
    changes: tuple[Difference, ...] = ()
    refused: bool = False
    notes: tuple[str, ...] = ()

    def step(self, atom: str) -> PlanStep:
        """The step of atom ``atom`` (KeyError if the flow has none)."""
        for step in self.steps:
            if step.atom == atom:
                return step
        raise KeyError(atom)

    def atoms(self, *actions: Action) -> list[str]:
        """The atoms whose action is one of ``actions``, in order."""
        return [s.atom for s in self.steps if s.action in actions]

    def to_data(self) -> dict[str, Any]:
        """The plan as JSON data (``flowkit plan --json``)."""
        return {
            "flow": self.flow_name,
            "flow_detail": self.flow_uuid,
            "state": self.flow_state,
            "outcome": self.outcome,
            "refused": self.refused,
            "changes": [d.to_data() for d in self.changes],
            "notes": list(self.notes),
            "steps": [s.to_data() for s in self.steps],
        }


@dataclasses.dataclass
class _Region:
    start: int
    end: int
    retry: int
    outcome: RegionOutcome


def _regions(c: Compilation, details: Sequence[AtomDetail | None], fd: FlowDetail) -> list[_Region]:
    """The regions a run starts reverting, as the scheduler rebuilds them."""
    regions: list[_Region] = []

    def add(region: _Region) -> None:
        for other in regions:
            if other.start <= region.start and region.end <= other.end:
                return
        regions[:] = [o for o in regions if not (region.start <= o.start and o.end <= region.end)] + [region]

    whole = len(c.atoms)
    records = fd.meta.get(REGIONS_KEY) or ()
    for record in records if isinstance(records, list) else ():
        name = record.get("retry") if isinstance(record, dict) else None
        if name is None or name not in c.names or c.names[name] not in c.scope_end:
            add(_Region(0, whole, NO_RETRY, RegionOutcome.REVERT_ALL))
            continue
        r = c.names[name]
        try:
            outcome = RegionOutcome(record.get("outcome"))
        except ValueError:
            outcome = RegionOutcome.REVERT_SCOPE
        add(_Region(r, c.scope_end[r], r, outcome))
    for r in c.scope_end:
        detail = details[r]
        if detail is not None and detail.intention == states.RETRY and not _region_of(regions, r):
            add(_Region(r, c.scope_end[r], r, RegionOutcome.RETRY_SCOPE))
    if fd.state == states.REVERTING and not regions:
        add(_Region(0, whole, NO_RETRY, RegionOutcome.REVERT_ALL))
    return regions


def _region_of(regions: Sequence[_Region], index: int) -> _Region | None:
    for region in regions:
        if region.start <= index < region.end:
            return region
    return None


def _when(seconds: float) -> str:
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "%.3f" % (seconds,)


def _wait(detail: AtomDetail | None) -> tuple[float | None, str | None, str]:
    info = detail.meta.get(WAIT_KEY) if detail is not None else None
    if not isinstance(info, dict):
        return None, None, "waits"
    until = info.get("until")
    signal = info.get("signal")
    until = float(until) if isinstance(until, (int, float)) and not isinstance(until, bool) else None
    signal = signal if isinstance(signal, str) else None
    if "retry" in info:
        note = "retry policy backoff before attempt %s" % (info.get("retry"),)
    elif signal is not None:
        note = "waits for signal %r" % (signal,)
    else:
        note = "waits on a timer"
    if until is not None:
        note += " until %s" % (_when(until),)
    return until, signal, note


def plan_run(c: Compilation, fd: FlowDetail, changes: Sequence[Difference] = (), refused: bool = False) -> Plan:
    """The plan of a ``run()`` of ``fd`` with the flow compiled as ``c`` (``fd`` as the resume sees it)."""
    by_name = {ad.name: ad for ad in fd if not isinstance(ad.meta.get(DROPPED_KEY), dict)}
    details: list[AtomDetail | None] = [by_name.get(atom.name) for atom in c.atoms]
    n = len(c.atoms)
    state = [str(d.state) if d is not None else str(states.PENDING) for d in details]
    intention = [str(d.intention) if d is not None else str(states.EXECUTE) for d in details]
    flow_state = str(fd.state or states.PENDING)
    actions: list[Action] = [Action.NONE] * n
    notes: list[str] = [""] * n
    plan_notes: list[str] = []
    outcome = str(states.SUCCESS)
    if flow_state == states.REVERTED:
        # Running a reverted flow again runs again what was reverted.
        for i in range(n):
            done = state[i] == states.SUCCESS and intention[i] == states.EXECUTE
            actions[i] = Action.SKIP if done else Action.RUN
        plan_notes.append("the flow ended REVERTED: running it again runs what was reverted again")
        return _plan(c, fd, details, state, actions, notes, outcome, changes, refused, plan_notes)
    if any(s == states.REVERT_FAILURE for s in state):
        plan_notes.append(
            "a revert failed (REVERT_FAILURE): nothing runs until 'flowkit resume --retry-reverts %s'" % (fd.uuid,)
        )
        return _plan(c, fd, details, state, actions, notes, str(states.FAILURE), changes, refused, plan_notes)
    if flow_state in _ENDED and all(s in _DONE for s in state):
        for i in range(n):
            actions[i] = Action.SKIP
        return _plan(c, fd, details, state, actions, notes, flow_state, changes, refused, plan_notes)
    regions = _regions(c, details, fd)
    reverted_scopes = [
        c.names[name]
        for name in (fd.meta.get(REVERTED_SCOPES_KEY) or ())
        if isinstance(name, str) and name in c.names and c.names[name] in c.scope_end
    ]
    broken = [i for i in range(n) if state[i] == states.BROKEN]
    undecided = False
    for i in range(n):
        s = state[i]
        region = _region_of(regions, i)
        if region is not None:
            if region.outcome is RegionOutcome.RETRY_SCOPE:
                if i == region.retry:
                    actions[i] = Action.RUN
                    notes[i] = "retry controller: asked again, then its scope runs again"
                elif s in NEEDS_REVERT:
                    actions[i] = Action.REVERT_AND_RUN
                    notes[i] = "its retry scope (%r) retries" % (c.atoms[region.retry].name,)
                else:
                    actions[i] = Action.RUN
                    notes[i] = "its retry scope (%r) retries" % (c.atoms[region.retry].name,)
                    if s == states.RUNNING:
                        notes[i] += "; it was in flight: it may have run already"
            elif s in NEEDS_REVERT:
                actions[i] = Action.REVERT
                whose = "the flow" if region.retry == NO_RETRY else "the scope of %r" % (c.atoms[region.retry].name,)
                notes[i] = "%s is reverting" % (whose,)
            elif s == states.RUNNING:
                notes[i] = "was in flight as its region started reverting: not reverted (it did not finish)"
            continue
        if s in _DONE:
            actions[i] = Action.SKIP
        elif s == states.RUNNING and intention[i] == states.EXECUTE:
            actions[i] = Action.RERUN
            notes[i] = "was in flight when the run stopped: it may have run already"
        elif s == states.RETRYING:
            actions[i] = Action.RUN
            notes[i] = "retry controller: asked again"
        elif s == states.WAITING:
            actions[i] = Action.WAIT
            notes[i] = _wait(details[i])[2]
        elif s == states.PENDING and intention[i] == states.EXECUTE:
            actions[i] = Action.RUN
            if i in c.waits:
                actions[i] = Action.WAIT
                notes[i] = "starts its wait"
        elif s == states.FAILURE and intention[i] == states.EXECUTE:
            actions[i] = Action.DECIDE
            notes[i] = "failed as the run stopped: its retry controller (or the flow) decides what reverts"
            undecided = True
        elif s == states.BROKEN:
            notes[i] = "BROKEN: 'flowkit retry %s' or 'flowkit revert %s' first" % (fd.uuid, fd.uuid)
    if broken:
        for i in range(n):
            if actions[i] in (Action.RUN, Action.RERUN, Action.WAIT) and _region_of(regions, i) is None:
                actions[i] = Action.NONE
                notes[i] = "the flow is BROKEN: nothing new starts"
        outcome = str(states.BROKEN)
    # What cannot be reached: an atom runs only once everything before it is done.
    finishes = [a in (Action.SKIP, Action.RUN, Action.RERUN, Action.WAIT, Action.REVERT_AND_RUN) for a in actions]
    for i in range(n):
        if actions[i] not in (Action.RUN, Action.RERUN, Action.WAIT) or _region_of(regions, i) is not None:
            continue
        blocked = [p for p in c.preds[i] if not finishes[p]]
        if blocked:
            actions[i] = Action.NONE
            notes[i] = "not reached: %r before it does not finish" % (c.atoms[blocked[0]].name,)
            finishes[i] = False
        elif i in c.incoming_deciders and actions[i] is Action.RUN:
            links = [c.deciders[ident] for ident in c.incoming_deciders[i]]
            notes[i] = "runs unless the decider on the link from %s says no" % (
                ", ".join(repr(link.source_name) for link in links),
            )
    if undecided:
        outcome = "UNDECIDED"
        plan_notes.append("a failure recorded as the run stopped is decided first; what follows depends on it")
    elif outcome != states.BROKEN and (
        any(r.outcome is not RegionOutcome.RETRY_SCOPE for r in regions) or reverted_scopes
    ):
        outcome = str(states.REVERTED)
    return _plan(c, fd, details, state, actions, notes, outcome, changes, refused, plan_notes)


def _plan(
    c: Compilation,
    fd: FlowDetail,
    details: Sequence[AtomDetail | None],
    state: Sequence[str],
    actions: Sequence[Action],
    notes: Sequence[str],
    outcome: str,
    changes: Sequence[Difference],
    refused: bool,
    plan_notes: Sequence[str],
) -> Plan:
    steps = []
    for i, atom in enumerate(c.atoms):
        detail = details[i]
        until: float | None = None
        signal: str | None = None
        if actions[i] is Action.WAIT and state[i] == states.WAITING:
            until, signal, _ = _wait(detail)
        steps.append(
            PlanStep(
                atom=atom.name,
                kind=c.kinds[i].value,
                state=state[i] if detail is not None else "NEW" if fd.state is not None else str(states.PENDING),
                action=actions[i],
                note=notes[i],
                until=until,
                signal=signal,
                version=None if detail is None or detail.version is None else tuple(detail.version),  # type: ignore[arg-type]
            )
        )
    if refused:
        plan_notes = [*plan_notes, "the resume is refused (FlowChanged) unless a migration resolves the changes"]
    return Plan(
        flow_name=fd.name,
        flow_uuid=fd.uuid,
        flow_state=str(fd.state or states.PENDING),
        steps=tuple(steps),
        outcome=outcome,
        changes=tuple(changes),
        refused=refused,
        notes=tuple(plan_notes),
    )
