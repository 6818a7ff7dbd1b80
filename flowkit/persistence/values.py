"""What may be stored in a logbook: JSON data, checked before it is written.

Every backend stores results as JSON (no pickle: a tampered database must not
be able to run code).  The check itself lives in
:mod:`flowkit.persistence.codec`, which the engine runs on every result for
every backend, including the in-memory one, so a flow that passes its tests in
memory does not start failing when it is pointed at a database.
"""

from __future__ import annotations

from typing import Any

from flowkit.exceptions import ResultNotStorable
from flowkit.persistence import codec

__all__ = ["unstorable_part"]


def unstorable_part(value: Any, _path: str = "result") -> str | None:
    """None if ``value`` can be stored; else a description of the first part that cannot.

    The same walk as :func:`flowkit.persistence.codec.canonical` (which the
    engine uses), answering with the reason instead of raising it.
    """
    try:
        codec.canonical(value, what=_path)
    except ResultNotStorable as error:
        return str(error)
    return None
