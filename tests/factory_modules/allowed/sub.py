"""A module below the allowed prefix."""

from __future__ import annotations

from typing import Any

from flowkit.patterns import linear_flow
from tests.support import Name


def make_single() -> Any:
    """One task."""
    return linear_flow.Flow("single").add(Name(name="only"))
