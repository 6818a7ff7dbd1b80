"""Is a flow detail safe to resume?  The check ``load_from_detail`` runs first.

An engine resuming a flow detail trusts its atom details: an atom with a
result is not run again, an atom without a detail is new and runs.  A lost or
unreadable row breaks that trust silently (the atom would run twice), so
before resuming, the flow detail is checked against the flow rebuilt from
code.  Problems found:

* **unreadable** atom rows, recorded by a salvaging read (see
  :mod:`flowkit.persistence._integrity`);
* **missing** atom details.  An atom of the flow has no detail although it
  must have had one, by either rule:

  1. a successor of it in the execution graph (directly or further down) has
     left PENDING.  Write-ahead (DESIGN invariant 3) makes a successor start
     only after its predecessors' results are durable, so they had details;
  2. the flow detail records (``meta["atom_details"]``, written in the same
     transaction as the details it counts) more atom details than it has.
     flowkit never deletes a single atom detail, so rows were lost; which
     ones cannot be told apart from atoms added to the flow since, so every
     atom without a detail is named.

  An atom without a detail in a flow detail that passes both rules is simply
  new (a flow never run, or an atom added to the code) and runs, as before.

Without ``repair`` a flow detail with problems is refused with
:class:`~flowkit.exceptions.InconsistentLogbook` naming each.  With
``repair``, the atoms concerned run again (tasks are idempotent, DESIGN
invariant 3): an unreadable row's stand-in detail (same uuid, PENDING)
replaces the row at the first write, a missing detail is created as for a
new atom.  What was repaired is recorded in ``meta["repairs"]`` and logged.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from flowkit import exceptions as exc
from flowkit import states
from flowkit.engines._compiler import Compilation, compile_flow
from flowkit.persistence._integrity import ATOM_COUNT_KEY, REPAIRS_KEY, UNREADABLE_KEY, unreadable_problems
from flowkit.persistence.models import AtomDetail, FlowDetail

__all__ = ["check_resumable"]

_LOG = logging.getLogger("flowkit.engines")


def _started(detail: AtomDetail) -> bool:
    return detail.state != states.PENDING or detail.failure is not None or detail.revert_failure is not None


def _started_successor(compilation: Compilation, index: int, started: list[bool]) -> int | None:
    """The first atom after ``index`` in the execution graph that has started, if any."""
    seen = {index}
    stack = list(compilation.succs[index])
    while stack:
        s = stack.pop()
        if s in seen:
            continue
        seen.add(s)
        if started[s]:
            return s
        stack.extend(compilation.succs[s])
    return None


def find_problems(
    compilation: Compilation, flow_detail: FlowDetail, table: str | None, added: frozenset[str] = frozenset()
) -> list[exc.CorruptLogbook]:
    """Every reason resuming ``flow_detail`` with ``compilation`` could run a finished atom again.

    ``added`` names atoms known to be new in the code (not in the structure
    the flow detail recorded, see :mod:`flowkit.versioning`): they have no
    detail because they never had one, not because it was lost.
    """
    problems = unreadable_problems(flow_detail)
    by_name = {ad.name: ad for ad in flow_detail}
    details = [by_name.get(atom.name) for atom in compilation.atoms]
    missing = [i for i, d in enumerate(details) if d is None and compilation.atoms[i].name not in added]
    if not missing:
        return problems
    started = [d is not None and _started(d) for d in details]
    recorded = flow_detail.meta.get(ATOM_COUNT_KEY)
    if not isinstance(recorded, int):
        recorded = 0
    lost_rows = max(0, recorded - len(flow_detail))
    for index in missing:
        name = compilation.atoms[index].name
        successor = _started_successor(compilation, index, started)
        if successor is not None:
            after = details[successor]
            assert after is not None
            reason = "no atom detail, but atom %r after it is %s: it ran, and its record is lost" % (
                after.name,
                after.state,
            )
        elif lost_rows:
            reason = "no atom detail, and the flow detail recorded %d atom details but has %d: %d row%s lost" % (
                recorded,
                len(flow_detail),
                lost_rows,
                " was" if lost_rows == 1 else "s were",
            )
        else:
            continue
        problems.append(exc.CorruptLogbook(reason, table=table, atom=name, flow_detail=flow_detail.uuid))
    return problems


def check_resumable(
    flow: Any,
    flow_detail: FlowDetail,
    backend: Any,
    *,
    repair: bool,
    compilation: Compilation | None = None,
    added: frozenset[str] = frozenset(),
) -> Compilation:
    """Compile ``flow`` and check ``flow_detail`` can be resumed with it; return the compilation.

    Raises :class:`~flowkit.exceptions.InconsistentLogbook` naming every
    problem unless ``repair``; with ``repair``, records and logs what will
    run again (see the module docstring) and returns.
    """
    if compilation is None:
        compilation = compile_flow(flow)
    tables = getattr(backend, "tables", None)
    table = getattr(getattr(tables, "atoms", None), "name", None)
    problems = find_problems(compilation, flow_detail, table, added)
    if not problems:
        return compilation
    if not repair:
        raise exc.InconsistentLogbook(flow_detail.name, flow_detail.uuid, problems)
    rerun = sorted({p.atom for p in problems if p.atom is not None})
    record = {
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "atoms": rerun,
        "problems": [p.located_text() for p in problems],
    }
    repairs = flow_detail.meta.get(REPAIRS_KEY)
    flow_detail.meta[REPAIRS_KEY] = [*repairs, record] if isinstance(repairs, list) else [record]
    flow_detail.meta.pop(UNREADABLE_KEY, None)
    _LOG.warning(
        "repairing flow %r (%s): re-running %s: %s",
        flow_detail.name,
        flow_detail.uuid,
        ", ".join(repr(a) for a in rerun),
        "; ".join(record["problems"]),
    )
    return compilation
