"""A flow whose items are independent and may run in any order, or at once."""

from __future__ import annotations

from flowkit import flow

__all__ = ["Flow"]


class Flow(flow.Flow):
    """Runs its items in any order (in parallel on a parallel engine).

    Items must not depend on each other's results: an item requiring what a
    sibling provides is a :class:`~flowkit.exceptions.DependencyFailure` when
    the flow is compiled.
    """

    @property
    def requires(self) -> frozenset[str]:
        needed: set[str] = set()
        for child in self._children:
            needed |= child.requires
        return self._retry_requires(needed)
