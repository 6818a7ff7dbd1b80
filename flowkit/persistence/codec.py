"""The one place a value becomes stored data: canonical JSON, checked once.

Every value an atom hands to the logbook (an execute result, a revert
result) goes through :func:`canonical` when the atom returns, before any
successor sees it and before anything is written.  It walks the value once
and returns a fresh copy in the form every backend gives back after a round
trip through JSON: tuples become lists, ``str``/``int``/``float`` subclasses
(enums among them) become the plain type, dicts and lists are new objects.
So a successor sees the same value whether the flow ran uninterrupted in
memory or was resumed from a database after a crash, and a task that keeps
and later mutates the object it returned cannot change what was recorded.

What is storable: ``None``, ``bool``, ``int``, finite ``float``, ``str``,
lists and tuples of storable values, dicts with ``str`` keys and storable
values, and captured :class:`~flowkit.types.failure.Failure` objects (a
retry controller's history holds them).  Anything else raises
:class:`~flowkit.exceptions.ResultNotStorable` whose message says which part
is not storable and why (``result['x'][2] is nan``).  NaN and the infinities
are refused: JSON has no spelling for them (Python writes ``NaN``, which
other JSON readers, PostgreSQL's ``jsonb`` among them, reject).  Nothing is
ever pickled.

:func:`canonical` also bounds the encoded size, which is what
``max_result_bytes`` (see :class:`~flowkit.persistence.base.Backend`) is
checked against; :func:`encode` and :func:`encoded_size` give the exact
JSON text and its length.

There is no hook for user types (``datetime``, ``Decimal``): a value of such
a type is refused, so convert it to JSON data in the task (an ISO string, a
decimal string) and back where it is used.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flowkit.exceptions import ResultNotStorable
from flowkit.types.failure import Failure

__all__ = ["canonical", "encode", "encoded_size", "MAX_DEPTH", "FAILURE_KEY"]

#: Deeper values are refused (the JSON decoders of Python and of the servers recurse).
MAX_DEPTH = 200

#: The key under which a Failure is tagged in stored JSON (``{"__failure__": {...}}``).
#: A dict whose only key is this one would read back as a Failure, so it is refused.
FAILURE_KEY = "__failure__"

# Upper bounds of the encoded size of one item, with json.dumps' defaults
# (ensure_ascii: a character takes at most 12 bytes, a surrogate pair's
# escapes; ", " and ": " separators).
_STR_BYTES_PER_CHAR = 12
_NUMBER_BYTES = 32  # a float's repr, or an int below 2**64
_SEPARATOR_BYTES = 2


def canonical(value: Any, *, what: str = "result", max_bytes: int | None = None) -> Any:
    """``value`` as the JSON data it will read back as; raise ResultNotStorable if it cannot be stored.

    Returns a new object (containers are never shared with ``value``);
    scalars of exact types and Failures are returned as they are.  ``what``
    names the value in messages (the path of the offending part starts
    with it).  With ``max_bytes``, a value whose JSON encoding is longer
    is refused too, with its size and the limit in the message.
    """
    walker = _Walker()
    try:
        result = walker.copy(value, 0)
    except _Refused as refused:
        error = ResultNotStorable("%s%s %s" % (what, "".join(reversed(refused.path)), refused.reason))
        raise error from refused.__cause__
    if max_bytes is not None and walker.bound > max_bytes:
        # The bound is generous (it assumes every character needs an escape),
        # so only a value near the limit pays for an exact encoding.
        size = encoded_size(result)
        if size > max_bytes:
            raise ResultNotStorable(
                "%s is %d bytes as JSON, more than the limit of %d bytes (the backend's "
                "max_result_bytes); keep large data elsewhere and return where it is" % (what, size, max_bytes)
            )
    return result


def encode(value: Any) -> str:
    """The JSON text of a canonical value (Failures tagged under :data:`FAILURE_KEY`)."""
    return json.dumps(value, allow_nan=False, default=_tag_failure)


def encoded_size(value: Any) -> int:
    """The length in bytes of :func:`encode` of ``value`` (ASCII, so characters are bytes)."""
    return len(encode(value))


def _tag_failure(value: Any) -> Any:
    if isinstance(value, Failure):
        return {FAILURE_KEY: value.to_dict()}
    raise TypeError("%s is not JSON data" % (type(value).__qualname__,))


class _Refused(Exception):
    """Why a part cannot be stored; the path to it is collected on the way out (it costs nothing otherwise)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


_SMALL_INT = 2**64


class _Walker:
    """One walk over a value: copies it into canonical form and bounds its encoded size."""

    __slots__ = ("bound",)

    def __init__(self) -> None:
        self.bound = 0

    def copy(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            self.bound += 2 + _STR_BYTES_PER_CHAR * len(value)
            return value
        if kind is bool or value is None:
            self.bound += 5
            return value
        if kind is int:
            self.bound += _NUMBER_BYTES if -_SMALL_INT < value < _SMALL_INT else _int_size(value)
            return value
        if kind is float:
            if not math.isfinite(value):
                raise _Refused("is %r, which JSON cannot represent" % (value,))
            self.bound += _NUMBER_BYTES
            return value
        if kind is list or kind is tuple:
            return self._list(value, depth)
        if kind is dict:
            return self._dict(value, depth)
        if isinstance(value, Failure):
            self.bound += encoded_size(value)
            return value
        # Subclasses of the plain types (enums among them) read back as the plain type.
        if isinstance(value, str):
            return self.copy(str.__str__(value), depth)
        if isinstance(value, int):
            return self.copy(int(value), depth)
        if isinstance(value, float):
            return self.copy(float(value), depth)
        if isinstance(value, (list, tuple)):
            return self._list(value, depth)
        if isinstance(value, dict):
            return self._dict(value, depth)
        raise _Refused(
            "is a %s.%s, which is not JSON data (store dicts with str keys, lists, str, "
            "finite numbers, bool and None)" % (kind.__module__, kind.__qualname__)
        )

    def _list(self, value: list[Any] | tuple[Any, ...], depth: int) -> list[Any]:
        if depth >= MAX_DEPTH:
            raise _Refused("is nested more than %d levels deep" % (MAX_DEPTH,))
        bound = 2 + _SEPARATOR_BYTES * len(value)
        result: list[Any] = []
        append = result.append
        copy = self.copy
        for index, item in enumerate(value):
            kind = type(item)
            # Plain strings and small ints inline: they are most of what lists hold.
            if kind is str:
                bound += 2 + _STR_BYTES_PER_CHAR * len(item)
                append(item)
            elif kind is int and -_SMALL_INT < item < _SMALL_INT:
                bound += _NUMBER_BYTES
                append(item)
            else:
                try:
                    append(copy(item, depth + 1))
                except _Refused as refused:
                    refused.path.append("[%d]" % index)
                    raise
        self.bound += bound
        return result

    def _dict(self, value: dict[Any, Any], depth: int) -> dict[str, Any]:
        if depth >= MAX_DEPTH:
            raise _Refused("is nested more than %d levels deep" % (MAX_DEPTH,))
        if len(value) == 1 and FAILURE_KEY in value:
            raise _Refused(
                "is a dict whose only key is %r, which would read back as a captured Failure" % (FAILURE_KEY,)
            )
        bound = 2 + 2 * _SEPARATOR_BYTES * len(value)
        result: dict[str, Any] = {}
        copy = self.copy
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise _Refused(
                        "has a key %s of type %s (only str keys can be stored)" % (_short(key), type(key).__qualname__)
                    )
                key = str.__str__(key)
            bound += 2 + _STR_BYTES_PER_CHAR * len(key)
            try:
                result[key] = copy(item, depth + 1)
            except _Refused as refused:
                refused.path.append("[%s]" % _short(key))
                raise
        self.bound += bound
        return result


def _int_size(value: int) -> int:
    try:
        return len(repr(value))
    except ValueError as error:  # more digits than sys.get_int_max_str_digits()
        raise _Refused("is an int too large to write as JSON: %s" % (error,)) from error


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else "%s...(%d characters)" % (text[:limit], len(text))
