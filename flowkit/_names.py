"""Names that become stored keys: checked where they are written in code, not at the first write.

Atom names, flow names and the names of logbooks and flow details go to the
SQL logbook's ``VARCHAR(255)`` name columns.  SQLite stores anything there,
but PostgreSQL and MariaDB refuse a longer name at the first write, and
PostgreSQL refuses a NUL character in any text; no backend can store a lone
surrogate (text that is not valid Unicode).  So every backend, the in-memory
one included, gets the same rule when the atom or flow is built, and a flow
that works in a test does not fail halfway through its first production run.
"""

from __future__ import annotations

from flowkit.exceptions import InvalidName

__all__ = ["MAX_NAME_LENGTH", "check_name", "shorten"]

#: The longest name the logbook's name columns hold on every server.
MAX_NAME_LENGTH = 255

_SHOWN = 40


def shorten(name: str) -> str:
    """``name`` for a message: its repr, cut to 40 characters plus its length when longer."""
    if len(name) <= _SHOWN:
        return repr(name)
    return "%r... (%d characters)" % (name[:_SHOWN], len(name))


def check_name(name: object, what: str) -> str:
    """``name`` if it can be stored as ``what`` (e.g. "atom name"); else TypeError or InvalidName.

    TypeError when it is not a non-empty str; :class:`~flowkit.exceptions.InvalidName`
    when it is longer than :data:`MAX_NAME_LENGTH` characters, holds a NUL
    character or is not valid Unicode.  Messages show at most 40 characters
    of the name.
    """
    if not isinstance(name, str) or not name:
        raise TypeError("%s must be a non-empty str, got %s" % (what, _short_repr(name)))
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(
            "%s %s is too long: at most %d characters can be stored (the logbook's name "
            "columns on PostgreSQL and MySQL)" % (what, shorten(name), MAX_NAME_LENGTH)
        )
    nul = name.find("\x00")
    if nul != -1:
        raise InvalidName(
            "%s %s has a NUL character at position %d, which PostgreSQL cannot store" % (what, shorten(name), nul)
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidName(
            "%s %s has %r at position %d, a lone surrogate that is not valid Unicode text and cannot be stored"
            % (what, shorten(name), name[error.start], error.start)
        ) from None
    return name


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN + 10 else "%s... (%s)" % (text[:_SHOWN], type(value).__name__)
