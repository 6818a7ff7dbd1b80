"""How far a graph flow's decider reaches when it says "no" (TaskFlow's ``deciders``).

``graph_flow.Flow.link(u, v, decider=fn, decider_depth=Depth.FLOW)``: when
``fn(history)`` returns False, ``v`` is marked IGNORE instead of running, and
so is, by depth:

``Depth.ALL`` (the default)
    everything that runs after ``v``, in this flow, nested flows and the
    flows around it.
``Depth.FLOW``
    the atoms of this graph flow that run after ``v`` through atoms of this
    same flow; atoms inside nested flows and outside this flow still run.
``Depth.NEIGHBORS``
    the tasks that run directly after ``v`` (one step, no further).
``Depth.ATOM``
    only ``v`` (all of its atoms, when ``v`` is a flow).

With every depth but ALL, what runs after an ignored atom may require a
value it would have provided: such an atom fails with the missing symbol.
"""

from __future__ import annotations

from collections.abc import Iterable

from flowkit.patterns.graph_flow import Depth

__all__ = ["Depth", "pick_widest"]

_WIDEST_FIRST = (Depth.ALL, Depth.FLOW, Depth.NEIGHBORS, Depth.ATOM)


def pick_widest(depths: Iterable[Depth | str]) -> Depth:
    """The depth among ``depths`` that reaches furthest (ALL > FLOW > NEIGHBORS > ATOM)."""
    found = [Depth.translate(depth) for depth in depths]
    if not found:
        raise ValueError("pick_widest needs at least one depth")
    return min(found, key=_WIDEST_FIRST.index)
