"""Reached through an entry point of a test distribution."""

from __future__ import annotations

from typing import Any

from flowkit.patterns import linear_flow
from tests.support import Name

LOADS = []  # one entry per import of this module


LOADS.append(1)


def make_entry() -> Any:
    """One task named ``entry``."""
    return linear_flow.Flow("from-entry-point").add(Name(name="entry"))
