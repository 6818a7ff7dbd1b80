"""What a flow detail records about its own integrity, shared by readers and the engine.

Three keys of ``FlowDetail.meta``:

``atom_details``
    How many atom details the engine has created for this flow detail
    (written in the same transaction as the details themselves).  flowkit
    never deletes one atom detail, so a flow detail read back with fewer has
    lost rows.
``unreadable``
    Set only by a *salvaging* read (``get_flow_details(..., salvage=True)``
    on the SQL backend): one entry per atom row that could not be decoded,
    which came back as a fresh PENDING atom detail with the row's uuid and
    name.  ``load_from_detail`` refuses such a flow detail unless repairing.
``repairs``
    What each repair re-ran and why: a list of ``{"at", "atoms", "problems"}``.

This module is free of SQL so that the engine can use it.
"""

from __future__ import annotations

from typing import Any

from flowkit.exceptions import CorruptLogbook
from flowkit.persistence.models import AtomDetail, FlowDetail

__all__ = ["ATOM_COUNT_KEY", "UNREADABLE_KEY", "REPAIRS_KEY", "mark_unreadable", "unreadable_problems"]

ATOM_COUNT_KEY = "atom_details"
UNREADABLE_KEY = "unreadable"
REPAIRS_KEY = "repairs"


def mark_unreadable(flow_detail: FlowDetail, placeholder: AtomDetail, problem: CorruptLogbook) -> None:
    """Put ``placeholder`` where an undecodable atom row was, and remember why."""
    flow_detail.add(placeholder)
    entries: list[dict[str, Any]] = flow_detail.meta.setdefault(UNREADABLE_KEY, [])
    entries.append(
        {
            "table": problem.table,
            "uuid": problem.uuid,
            "column": problem.column,
            "atom": problem.atom,
            "reason": problem.reason,
        }
    )


def unreadable_problems(flow_detail: FlowDetail) -> list[CorruptLogbook]:
    """The problems a salvaging read recorded in ``flow_detail`` (none for a normal read)."""
    found = []
    for entry in flow_detail.meta.get(UNREADABLE_KEY) or ():
        if not isinstance(entry, dict):
            continue
        found.append(
            CorruptLogbook(
                str(entry.get("reason")),
                table=entry.get("table"),
                uuid=entry.get("uuid"),
                column=entry.get("column"),
                atom=entry.get("atom"),
                flow_detail=flow_detail.uuid,
            )
        )
    return found
