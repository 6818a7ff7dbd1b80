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
values, captured :class:`~flowkit.types.failure.Failure` objects (a
retry controller's history holds them) and values of types registered with
:func:`register_type`.  Anything else raises
:class:`~flowkit.exceptions.ResultNotStorable` whose message says which part
is not storable and why (``result['x'][2] is nan``).  NaN and the infinities
are refused: JSON has no spelling for them (Python writes ``NaN``, which
other JSON readers, PostgreSQL's ``jsonb`` among them, reject).  Nothing is
ever pickled.

:func:`canonical` also bounds the encoded size, which is what
``max_result_bytes`` (see :class:`~flowkit.persistence.base.Backend`) is
checked against; :func:`encode` and :func:`encoded_size` give the exact
JSON text and its length.

Other types (``datetime``, ``Decimal``, a type of your own) are stored once
they are registered with :func:`register_type`, which names the type and
gives two functions between it and JSON data.  Stored, such a value is the
tagged object ``{"__type__": name, "value": data}``; reading it back looks
``name`` up in this process's registry and calls the registered
``from_json``.  Stored data names a registered type, never code: nothing is
imported or unpickled to read it, and a tag no registered type answers to
makes the record unreadable
(:class:`~flowkit.exceptions.CorruptLogbook` naming the record and the
field) rather than readable as something else.  Register the same types in
every process that runs or resumes the flows (importing the module that
registers them is enough).

Between the engine and a backend a value has three forms, each made by one
function here: the canonical value the engine holds (:func:`canonical`,
checked; :func:`copy`, a fresh copy of one), the stored data a backend
writes (:func:`to_data`, Failures and registered types tagged;
:func:`encode`, its JSON text) and back (:func:`from_data`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections.abc import Callable
from typing import Any

from flowkit.exceptions import ResultNotStorable
from flowkit.types.failure import Failure

__all__ = [
    # values the engine holds
    "canonical",
    "copy",
    "same",
    # stored data
    "to_data",
    "from_data",
    "encode",
    "encoded_size",
    # user types
    "ValueType",
    "register_type",
    "unregister_type",
    # limits and tags
    "MAX_DEPTH",
    "FAILURE_KEY",
    "TYPE_KEY",
]

#: Deeper values are refused (the JSON decoders of Python and of the servers recurse).
MAX_DEPTH = 200

#: The key under which a Failure is tagged in stored JSON (``{"__failure__": {...}}``).
#: A dict whose only key is this one would read back as a Failure, so it is refused.
FAILURE_KEY = "__failure__"

#: The key under which a registered type's name is stored (``{"__type__": name, "value": ...}``).
#: A dict of exactly these two keys would read back as that type, so it is refused.
TYPE_KEY = "__type__"
_TYPE_VALUE_KEY = "value"

# Upper bounds of the encoded size of one item, with json.dumps' defaults
# (ensure_ascii: a character takes at most 12 bytes, a surrogate pair's
# escapes; ", " and ": " separators).
_STR_BYTES_PER_CHAR = 12
_NUMBER_BYTES = 32  # a float's repr, or an int below 2**64
_SEPARATOR_BYTES = 2


# -- user types --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ValueType:
    """A type stored as tagged JSON data: what :func:`register_type` records.

    ``to_json(value)`` returns storable data for a value of exactly ``cls``
    (not a subclass); ``from_json(data)`` rebuilds the value from that data
    and raises ValueError or TypeError when the data cannot be one.
    """

    cls: type
    name: str
    to_json: Callable[[Any], Any]
    from_json: Callable[[Any], Any]


_registry_lock = threading.Lock()
_types_by_class: dict[type, ValueType] = {}
_types_by_name: dict[str, ValueType] = {}


def register_type(cls: type, name: str, to_json: Callable[[Any], Any], from_json: Callable[[Any], Any]) -> ValueType:
    """Make values of exactly ``cls`` storable, tagged with ``name``; return the registration.

    For example ``register_type(decimal.Decimal, "decimal", str, decimal.Decimal)``.
    ``name`` is what the stored data holds, so keep it stable across
    releases.  Registering the same class under the same name again replaces
    its functions; a name or a class registered differently raises
    ValueError, and so do the types the codec stores itself (the JSON types,
    their containers and Failure).
    """
    if not isinstance(cls, type):
        raise ValueError("register_type() needs a class, got %r" % (cls,))
    if cls in _BUILTIN_TYPES or issubclass(cls, Failure):
        raise ValueError("%s is stored by the codec itself and cannot be registered" % (cls.__qualname__,))
    if not isinstance(name, str) or not name:
        raise ValueError("a stored type's name must be a non-empty str, got %r" % (name,))
    if not callable(to_json) or not callable(from_json):
        raise ValueError("register_type(%r) needs callable to_json and from_json" % (name,))
    value_type = ValueType(cls, name, to_json, from_json)
    with _registry_lock:
        by_name = _types_by_name.get(name)
        by_class = _types_by_class.get(cls)
        if by_name is not None and by_name.cls is not cls:
            raise ValueError("stored type name %r is already registered to %s" % (name, by_name.cls.__qualname__))
        if by_class is not None and by_class.name != name:
            raise ValueError("%s is already registered as %r" % (cls.__qualname__, by_class.name))
        _types_by_class[cls] = value_type
        _types_by_name[name] = value_type
    return value_type


def unregister_type(name: str) -> None:
    """Forget the type registered as ``name`` (its values are refused again); KeyError if none is."""
    with _registry_lock:
        value_type = _types_by_name.pop(name)
        del _types_by_class[value_type.cls]


# -- the engine's values -----------------------------------------------------------


def canonical(value: Any, *, what: str = "result", max_bytes: int | None = None) -> Any:
    """``value`` as the JSON data it will read back as; raise ResultNotStorable if it cannot be stored.

    Returns a new object (containers are never shared with ``value``);
    scalars of exact types and Failures are returned as they are, and a
    value of a registered type is returned as it reads back
    (``from_json(to_json(value))``).  ``what`` names the value in messages
    (the path of the offending part starts with it).  With ``max_bytes``, a
    value whose JSON encoding is longer is refused too, with its size and
    the limit in the message.
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


_PLAIN = frozenset([str, int, float, bool, type(None)])
_BUILTIN_TYPES = frozenset([str, int, float, bool, type(None), list, tuple, dict])


def copy(value: Any) -> Any:
    """A copy of a value the engine holds, sharing no container with it, with no checks.

    Lists and dicts are new, tuples become lists and subclasses of the plain
    types become the plain type (what a round trip through a database
    gives); everything else (Failures, values of registered types, which
    are treated as immutable) is the same object.  This is how the memory
    backend keeps what it was given apart from the engine's records.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    # Copied in C, then only the items that are not plain walked: a call per
    # item would cost more than the copy itself.
    if kind is dict:
        result = value.copy()
        for key, item in result.items():
            if type(key) is not str:
                return {_plain_key(k): copy(v) for k, v in value.items()}
            if type(item) not in _PLAIN:
                result[key] = copy(item)  # replacing a value while iterating is safe
        return result
    if kind is list or kind is tuple:
        items = list(value)
        for index, item in enumerate(items):
            if type(item) not in _PLAIN:
                items[index] = copy(item)
        return items
    return _plain_scalar(value, copy)


def same(left: Any, right: Any) -> bool:
    """Whether two values the engine holds are stored as the same data, compared without encoding them.

    Types are compared too (``1``, ``1.0`` and ``True`` are stored
    differently).  Only answers True when the stored data is certainly the
    same: a Failure or a value of a registered type equals only itself, and
    anything unusual (a NaN, a tuple) answers False, which costs the caller a
    rewrite at most.
    """
    if left is right:
        return True
    kind = type(left)
    if kind is not type(right):
        return False
    if kind in _PLAIN:
        return bool(left == right)
    # Plain items compared inline: a call per item would cost more than the comparison.
    if kind is list:
        if len(left) != len(right):
            return False
        for mine, theirs in zip(left, right):
            if type(mine) is not type(theirs) or not (mine == theirs if type(mine) in _PLAIN else same(mine, theirs)):
                return False
        return True
    if kind is dict:
        if len(left) != len(right):
            return False
        for key, mine in left.items():
            if key not in right:
                return False
            theirs = right[key]
            if type(mine) is not type(theirs) or not (mine == theirs if type(mine) in _PLAIN else same(mine, theirs)):
                return False
        return True
    return False


def _plain_key(key: Any) -> Any:
    return str.__str__(key) if isinstance(key, str) else key


def _plain_scalar(value: Any, walk: Callable[[Any], Any]) -> Any:
    # Subclasses of the plain types (enums among them) read back as the plain type.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {_plain_key(k): walk(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [walk(v) for v in value]
    return value


# -- stored data -------------------------------------------------------------------


def to_data(value: Any) -> Any:
    """The stored data of a value the engine holds: :func:`copy`, with Failures and registered types tagged.

    The result is what :func:`encode` writes as JSON and :func:`from_data`
    turns back into the value.  Nothing is checked here (:func:`canonical`
    did that when the value was made): a part that is not JSON data is left
    as it is, for the backend's encoder to refuse.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {k if type(k) is str else _plain_key(k): to_data(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [to_data(v) for v in value]
    if kind is Failure or isinstance(value, Failure):
        return {FAILURE_KEY: value.to_dict()}
    value_type = _types_by_class.get(kind)
    if value_type is not None:
        return {TYPE_KEY: value_type.name, _TYPE_VALUE_KEY: to_data(value_type.to_json(value))}
    return _plain_scalar(value, to_data)


def from_data(data: Any) -> Any:
    """The value stored as ``data`` (decoded JSON): tagged Failures and registered types rebuilt.

    Raises ValueError for a tag no type registered in this process answers
    to, and whatever a Failure's or a registered type's decoder raises for
    malformed data (the models turn these into
    :class:`~flowkit.exceptions.CorruptLogbook`).  Nothing named by the data
    is ever imported.
    """
    kind = type(data)
    if kind is dict:
        size = len(data)
        if size == 1 and FAILURE_KEY in data:
            return Failure.from_dict(data[FAILURE_KEY])
        if size == 2 and TYPE_KEY in data and _TYPE_VALUE_KEY in data:
            return _from_tagged(data[TYPE_KEY], data[_TYPE_VALUE_KEY])
        return {k: from_data(v) for k, v in data.items()}
    if kind is list:
        return [from_data(v) for v in data]
    return data


def _from_tagged(name: Any, data: Any) -> Any:
    value_type = _types_by_name.get(name) if type(name) is str else None
    if value_type is None:
        raise ValueError(
            "a value is stored as type %s, which no type registered in this process reads "
            "(flowkit.persistence.codec.register_type)" % (_short(name),)
        )
    value = from_data(data)
    try:
        return value_type.from_json(value)
    except Exception as error:  # a user's decoder raises what it likes (Decimal: InvalidOperation)
        raise ValueError(
            "a stored %s value %s cannot be read back: %s: %s" % (name, _short(value), type(error).__name__, error)
        ) from error


def encode(value: Any) -> str:
    """The JSON text of a canonical value (Failures and registered types tagged)."""
    return json.dumps(value, allow_nan=False, default=_tag)


def encoded_size(value: Any) -> int:
    """The length in bytes of :func:`encode` of ``value`` (ASCII, so characters are bytes)."""
    return len(encode(value))


def _tag(value: Any) -> Any:
    if isinstance(value, Failure):
        return {FAILURE_KEY: value.to_dict()}
    value_type = _types_by_class.get(type(value))
    if value_type is not None:
        return {TYPE_KEY: value_type.name, _TYPE_VALUE_KEY: value_type.to_json(value)}
    raise TypeError("%s is not JSON data" % (type(value).__qualname__,))


# -- the walk ----------------------------------------------------------------------


class _Refused(Exception):
    """Why a part cannot be stored; the path to it is collected on the way out (it costs nothing otherwise)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


_SMALL_INT = 2**64
_TAG_BYTES = len('{"%s": "", "%s": }' % (TYPE_KEY, _TYPE_VALUE_KEY))


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
        value_type = _types_by_class.get(kind)
        if value_type is not None:
            return self._registered(value_type, value, depth)
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
            "is a %s.%s, which is not JSON data (store dicts with str keys, lists, str, finite numbers, "
            "bool and None, or register the type with flowkit.persistence.codec.register_type)"
            % (kind.__module__, kind.__qualname__)
        )

    def _registered(self, value_type: ValueType, value: Any, depth: int) -> Any:
        # The value as it reads back: a codec that loses information, or one
        # that fails, shows up when the atom returns, not when a resume reads it.
        if depth >= MAX_DEPTH:
            raise _Refused("is nested more than %d levels deep" % (MAX_DEPTH,))
        try:
            data = value_type.to_json(value)
        except Exception as error:
            raise _Refused(
                "is a %s whose to_json failed: %s: %s" % (value_type.name, type(error).__name__, error)
            ) from error
        self.bound += _TAG_BYTES + _STR_BYTES_PER_CHAR * len(value_type.name)
        data = self.copy(data, depth + 1)
        try:
            return value_type.from_json(data)
        except Exception as error:
            raise _Refused(
                "is a %s whose from_json cannot read back %s: %s: %s"
                % (value_type.name, _short(data), type(error).__name__, error)
            ) from error

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
        size = len(value)
        if size == 1 and FAILURE_KEY in value:
            raise _Refused(
                "is a dict whose only key is %r, which would read back as a captured Failure" % (FAILURE_KEY,)
            )
        if size == 2 and TYPE_KEY in value and _TYPE_VALUE_KEY in value:
            raise _Refused(
                "is a dict of the keys %r and %r, which would read back as a registered type"
                % (TYPE_KEY, _TYPE_VALUE_KEY)
            )
        bound = 2 + 2 * _SEPARATOR_BYTES * size
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
