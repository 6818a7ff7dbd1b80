"""The commonest atom detail meta, which backends store without encoding or copying it (internal).

A task that succeeded without reporting progress ends with exactly
``{"progress": 1.0}`` (the scheduler sets it).  The SQL backend writes it as a
known text and the memory backend keeps one marker for it instead of a dict
per atom; both ask :func:`is_finished` which metas that is.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_finished"]


def is_finished(meta: Any) -> bool:
    """Whether ``meta`` is exactly ``{"progress": 1.0}``, the float (1 and True are other values as JSON)."""
    if type(meta) is not dict or len(meta) != 1:
        return False
    progress = meta.get("progress")
    return type(progress) is float and progress == 1.0
