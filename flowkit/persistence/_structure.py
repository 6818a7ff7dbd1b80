"""A flow detail's ``meta["structure"]`` as a backend stores it, made once per object (internal).

``meta["structure"]`` (:mod:`flowkit.versioning`) has an entry per atom, and a
flow detail's record is written at every flow state change: storing it anew
each time (encoding it, or copying it) would make a run's cost grow with the
square of its size, as storing its atom details with it would.  It is only
ever replaced, never changed in place, so what a backend makes of it is kept
beside the very object it was made from, for the few flows written last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["STRUCTURE_KEY", "StoredForms", "structure_of"]

#: The meta key (``flowkit.versioning.STRUCTURE_KEY``, which is this one).
STRUCTURE_KEY = "structure"

_T = TypeVar("_T")


def structure_of(meta: Any) -> dict[str, Any] | None:
    """The structure a flow detail's ``meta`` holds, when it is a plain dict in a plain dict; else None."""
    if type(meta) is not dict:
        return None
    found = meta.get(STRUCTURE_KEY)
    return found if type(found) is dict else None


class StoredForms(Generic[_T]):
    """``make(structure)``, made once per structure object, for the last ``kept`` objects asked about."""

    def __init__(self, make: Callable[[dict[str, Any]], _T], kept: int = 16) -> None:
        self._make = make
        self._kept = kept
        # id -> (the object, what was made of it): holding the object keeps its id from being reused.
        self._forms: dict[int, tuple[dict[str, Any], _T]] = {}

    def __call__(self, structure: dict[str, Any]) -> _T:
        found = self._forms.get(id(structure))
        if found is not None and found[0] is structure:
            return found[1]
        made = self._make(structure)
        if len(self._forms) >= self._kept:
            self._forms.clear()  # a few flows are written at a time; the next writes make theirs again
        self._forms[id(structure)] = (structure, made)
        return made
