"""What may be stored in a logbook: JSON data, checked before it is written.

Every backend stores results as JSON (no pickle: a tampered database must not
be able to run code).  The engine checks each result here, for every backend
including the in-memory one, so a flow that passes its tests in memory does
not start failing when it is pointed at a database.
"""

from __future__ import annotations

from typing import Any

from flowkit.types.failure import Failure

__all__ = ["unstorable_part"]

_SCALARS = (str, int, float, bool, type(None))


def unstorable_part(value: Any, _path: str = "result", _depth: int = 0) -> str | None:
    """None if ``value`` is JSON data; else a description of the first part that is not.

    JSON data is None, bool, int, float, str, lists/tuples of JSON data, and
    dicts with str keys and JSON values (a captured Failure is allowed too).
    """
    if isinstance(value, _SCALARS):
        return None
    if _depth > 200:
        return "%s is nested more than 200 levels deep" % _path
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if not isinstance(item, _SCALARS):
                problem = unstorable_part(item, "%s[%d]" % (_path, index), _depth + 1)
                if problem:
                    return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "%s has a key %r of type %s (only str keys can be stored)" % (
                    _path,
                    key,
                    type(key).__qualname__,
                )
            if not isinstance(item, _SCALARS):
                problem = unstorable_part(item, "%s[%r]" % (_path, key), _depth + 1)
                if problem:
                    return problem
        return None
    if isinstance(value, Failure):
        return None
    return "%s is a %s.%s, which is not JSON data" % (
        _path,
        type(value).__module__,
        type(value).__qualname__,
    )
