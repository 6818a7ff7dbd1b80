"""A flow whose items run one after another, in the order added."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flowkit import flow

__all__ = ["Flow"]


class Flow(flow.Flow):
    """Runs its items in order; each sees what the items before it provided.

    Reverting goes the other way: the last completed item is undone first.
    """

    def iter_links(self) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
        children = self._children
        for before, after in zip(children, children[1:]):
            yield before, after, {"invariant": True}

    @property
    def requires(self) -> frozenset[str]:
        needed: set[str] = set()
        provided: set[str] = set(self._retry.provides) if self._retry is not None else set()
        for child in self._children:
            needed |= child.requires - provided
            provided |= child.provides
        return self._retry_requires(needed)
