"""A captured exception that survives threads, processes, machines and the logbook.

A :class:`Failure` keeps the exception object when it has one, and always keeps
what a person needs to understand it without the object: the exception's type
names (its whole class hierarchy, so ``check()`` works on a failure read back
from a database), its message and the formatted traceback text.
"""

from __future__ import annotations

import pickle
import sys
import traceback
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, NoReturn

__all__ = ["Failure"]

_FORMAT_VERSION = 1


def _type_names(exc_type: type[BaseException]) -> tuple[str, ...]:
    names = []
    for cls in exc_type.__mro__:
        if cls is object:
            break
        names.append("%s.%s" % (cls.__module__, cls.__qualname__))
    return tuple(names)


def _format_problem(data: Any, where: str) -> str | None:
    """What makes ``data`` not a failure dict (None when it is one)."""
    if not isinstance(data, dict):
        return "%s must be a dict, got %s" % (where, type(data).__name__)
    for key in ("exception_str", "traceback_str"):
        if key not in data:
            return "%s: %r is a required property" % (where, key)
        if not isinstance(data[key], str):
            return "%s: %r must be a string, got %s" % (where, key, type(data[key]).__name__)
    names = data.get("exc_type_names")
    if "exc_type_names" not in data:
        return "%s: 'exc_type_names' is a required property" % (where,)
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        return "%s: 'exc_type_names' must be a non-empty list of strings, got %r" % (where, names)
    version = data.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
        return "%s: 'version' must be a non-negative int, got %r" % (where, version)
    cause = data.get("cause")
    if cause is not None:
        problem = _format_problem(cause, where + " cause")
        if problem is not None:
            return problem
    causes = data.get("causes")
    if causes is not None:
        if not isinstance(causes, list):
            return "%s: 'causes' must be a list, got %s" % (where, type(causes).__name__)
        for position, item in enumerate(causes):
            problem = _format_problem(item, "%s cause %d" % (where, position))
            if problem is not None:
                return problem
    return None


def _pickles(obj: object) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


class Failure:
    """An exception captured as a value.

    Build one inside an ``except`` block with ``Failure()`` (captures the
    exception being handled), or from an exception object with
    :meth:`from_exception`.  After :meth:`from_dict` or unpickling across
    processes the original exception object may be gone (``exception`` is
    None); type names, message and traceback text are always kept.
    """

    __slots__ = ("_exception", "_exception_str", "_traceback_str", "_exc_type_names", "_cause")

    def __init__(
        self,
        exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None,
        *,
        exception_str: str | None = None,
        traceback_str: str = "",
        exc_type_names: Iterable[str] | None = None,
        cause: Failure | None = None,
    ) -> None:
        if exc_type_names is not None:
            # Rebuilt from stored data: no exception object.
            self._exception: BaseException | None = None
            self._exception_str = exception_str or ""
            self._traceback_str = traceback_str
            self._exc_type_names = tuple(exc_type_names)
            self._cause = cause
            return
        if exc_info is None:
            current = sys.exc_info()
            if current[1] is None:
                raise ValueError("Failure() needs an exception: call it inside an except block")
            exc_info = current
        assert exc_info is not None
        exc_type, exc, tb = exc_info
        self._exception = exc
        self._exception_str = str(exc)
        self._traceback_str = "".join(traceback.format_tb(tb)) if tb is not None else ""
        self._exc_type_names = _type_names(exc_type)
        inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        self._cause = Failure.from_exception(inner) if inner is not None else None

    @classmethod
    def from_exception(cls, exception: BaseException) -> Failure:
        """Capture ``exception`` (with its traceback, if it was raised)."""
        return cls((type(exception), exception, exception.__traceback__))

    # -- what a failure tells -------------------------------------------------

    @property
    def exception(self) -> BaseException | None:
        """The exception object, or None when this failure was rebuilt from data."""
        return self._exception

    @property
    def exception_str(self) -> str:
        """The exception's message (``str(exception)``)."""
        return self._exception_str

    @property
    def traceback_str(self) -> str:
        """The formatted traceback of where the exception was raised."""
        return self._traceback_str

    @property
    def exc_type_names(self) -> tuple[str, ...]:
        """Qualified names of the exception's class and its bases, most specific first."""
        return self._exc_type_names

    @property
    def exception_type_name(self) -> str:
        """Qualified name of the exception's own class."""
        return self._exc_type_names[0] if self._exc_type_names else "builtins.Exception"

    @property
    def cause(self) -> Failure | None:
        """The failure this one was raised from (``raise ... from``), if any."""
        return self._cause

    @property
    def exc_info(self) -> tuple[type[BaseException], BaseException, TracebackType | None] | None:
        """``(type, exception, traceback)`` when the exception object is present."""
        if self._exception is None:
            return None
        return (type(self._exception), self._exception, self._exception.__traceback__)

    def check(self, *exc_classes: type[BaseException] | str) -> type[BaseException] | str | None:
        """Return the first of ``exc_classes`` this failure is an instance of, else None.

        Classes and class names both work; a name matches either the qualified
        name (``"builtins.ValueError"``) or the bare class name (``"ValueError"``).
        """
        for wanted in exc_classes:
            if isinstance(wanted, str):
                for name in self._exc_type_names:
                    if name == wanted or name.rsplit(".", 1)[-1] == wanted:
                        return wanted
            else:
                if self._exception is not None:
                    if isinstance(self._exception, wanted):
                        return wanted
                elif _type_names(wanted)[0] in self._exc_type_names:
                    return wanted
        return None

    def reraise(self) -> NoReturn:
        """Raise the original exception, or a WrappedFailure when it is not available."""
        if self._exception is not None:
            raise self._exception.with_traceback(self._exception.__traceback__)
        from flowkit.exceptions import WrappedFailure

        raise WrappedFailure([self])

    @staticmethod
    def reraise_if_any(failures: Iterable[Failure]) -> None:
        """Re-raise one failure as itself, several as a WrappedFailure, none: return."""
        failures = list(failures)
        if len(failures) == 1:
            failures[0].reraise()
        if failures:
            from flowkit.exceptions import WrappedFailure

            raise WrappedFailure(failures)

    def pformat(self, traceback: bool = False) -> str:
        """A readable description, optionally with the traceback text."""
        text = "%s: %s" % (self.exception_type_name, self._exception_str)
        if traceback and self._traceback_str:
            text += "\nTraceback (most recent call last):\n" + self._traceback_str
        return text

    # -- data form --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict; :meth:`from_dict` rebuilds the failure."""
        return {
            "version": _FORMAT_VERSION,
            "exception_str": self._exception_str,
            "traceback_str": self._traceback_str,
            "exc_type_names": list(self._exc_type_names),
            "cause": self._cause.to_dict() if self._cause is not None else None,
        }

    @classmethod
    def validate(cls, data: Any) -> None:
        """Check that ``data`` is a failure dict; raise :class:`~flowkit.exceptions.InvalidFormat` if not.

        The dict needs ``exception_str`` and ``traceback_str`` (strings) and
        ``exc_type_names`` (a non-empty list of strings); ``version`` is a
        non-negative int, ``cause`` a failure dict and ``causes`` (TaskFlow's
        spelling) a list of them, each checked the same way.
        """
        problem = _format_problem(data, "failure data")
        if problem is not None:
            from flowkit.exceptions import InvalidFormat

            raise InvalidFormat("failure data not of the expected format: %s" % problem)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        """Rebuild a failure from :meth:`to_dict` output (without the exception object)."""
        try:
            names = data["exc_type_names"]
            message = data["exception_str"]
        except (KeyError, TypeError) as exc:
            raise ValueError("not a failure dict (missing %s): %r" % (exc, data)) from exc
        cause = data.get("cause")
        return cls(
            exception_str=message,
            traceback_str=data.get("traceback_str") or "",
            exc_type_names=names,
            cause=cls.from_dict(cause) if cause else None,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.to_dict()
        # Keep the exception object only when it survives the trip.
        state["exception"] = self._exception if _pickles(self._exception) else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        rebuilt = Failure.from_dict(state)
        self._exception = state.get("exception")
        self._exception_str = rebuilt._exception_str
        self._traceback_str = rebuilt._traceback_str
        self._exc_type_names = rebuilt._exc_type_names
        self._cause = rebuilt._cause

    def copy(self) -> Failure:
        """A copy without the exception object (as it would be read back from storage)."""
        return Failure.from_dict(self.to_dict())

    # -- comparisons ------------------------------------------------------------

    def matches(self, other: object) -> bool:
        """True if ``other`` describes the same error (type names and message)."""
        if not isinstance(other, Failure):
            return False
        return self._exc_type_names == other._exc_type_names and self._exception_str == other._exception_str

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Failure):
            return NotImplemented
        return self.matches(other) and self._traceback_str == other._traceback_str

    def __hash__(self) -> int:
        return hash((self._exc_type_names, self._exception_str))

    def __iter__(self) -> Iterator[str]:
        """The exception's class names, most derived first, up to ``Exception`` (as TaskFlow yields them).

        Builtin classes come without their module (``"ValueError"``), others
        qualified (``"myapp.errors.Quota"``).
        """
        for name in self._exc_type_names:
            if name == "builtins.BaseException":
                return
            yield name[len("builtins.") :] if name.startswith("builtins.") else name
            if name == "builtins.Exception":
                return

    def __repr__(self) -> str:
        return "Failure(%s: %s)" % (self.exception_type_name, self._exception_str)

    def __str__(self) -> str:
        return "Failure: %s: %s" % (self.exception_type_name, self._exception_str)
