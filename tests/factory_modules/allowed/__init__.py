"""A module of undecorated factories, reached only through an allowlist.

``system`` is re-exported from :mod:`os`: allowing this module must not make
os's code callable under this module's name.
"""

from __future__ import annotations

from os import system  # noqa: F401  (the re-export the tests try to reach)
from typing import Any

from flowkit.patterns import linear_flow
from tests.support import Name


def make_pair(prefix: str = "p") -> Any:
    """``<prefix>-a -> <prefix>-b``."""
    return linear_flow.Flow("pair").add(Name(name=prefix + "-a"), Name(name=prefix + "-b"))
