"""Retry controllers: atoms that decide what happens when their subflow fails.

A retry controller is attached to a flow (``linear_flow.Flow("f",
retry=Times(3))``).  It runs before the flow's atoms; its result is visible to
them under its ``provides`` name.  When an atom inside the flow fails, the
engine asks the controller's :meth:`Retry.on_failure` for a :class:`Decision`:

``RETRY``
    revert the flow's atoms, run the controller again, then the flow again;
``REVERT``
    revert the flow (and the controller) and hand the failure to the
    enclosing flow's controller, or revert everything if there is none;
``REVERT_ALL``
    revert the whole flow tree at once.

Only the controller's own flow is reverted and retried: atoms outside it are
never reverted or re-run by a RETRY.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from flowkit.atom import Atom, ProvidesSpec, RebindSpec, RequiresSpec
from flowkit.exceptions import NotFound
from flowkit.types.failure import Failure

__all__ = [
    "Decision",
    "RETRY",
    "REVERT",
    "REVERT_ALL",
    "History",
    "Retry",
    "Times",
    "ForEach",
    "ParameterizedForEach",
    "AlwaysRevert",
    "AlwaysRevertAll",
]


class Decision(str, enum.Enum):
    """What a retry controller wants done after a failure in its flow."""

    RETRY = "RETRY"
    REVERT = "REVERT"
    REVERT_ALL = "REVERT_ALL"

    def __str__(self) -> str:
        return self.value


RETRY = Decision.RETRY
REVERT = Decision.REVERT
REVERT_ALL = Decision.REVERT_ALL


class History:
    """What happened on each attempt of a retry controller's flow.

    Each entry is ``(result, failures)``: the controller's result for that
    attempt and a dict of atom name -> :class:`~flowkit.types.failure.Failure` seen during it.
    """

    __slots__ = ("_contents", "failure")

    def __init__(
        self,
        contents: Iterable[tuple[Any, Mapping[str, Failure]]] = (),
        failure: Failure | None = None,
    ) -> None:
        self._contents: list[tuple[Any, dict[str, Failure]]] = [
            (result, dict(failures)) for result, failures in contents
        ]
        #: The controller's own failure (its execute raised), if any.
        self.failure = failure

    def __len__(self) -> int:
        return len(self._contents)

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Failure]]]:
        return iter(self._contents)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Failure]]:
        return self._contents[index]

    def __bool__(self) -> bool:
        return bool(self._contents)

    def provided_iter(self) -> Iterator[Any]:
        """The controller's result of every attempt, oldest first."""
        for result, _ in self._contents:
            yield result

    def outcomes_iter(self, index: int | None = None) -> Iterator[tuple[str, Failure]]:
        """``(atom_name, failure)`` pairs of one attempt (default: all attempts)."""
        entries = self._contents if index is None else [self._contents[index]]
        for _, failures in entries:
            yield from failures.items()

    def caused_by(self, exception_cls: Any, index: int | None = None, include_retry: bool = False) -> bool:
        """True if some failure (of one attempt, or any) matches ``exception_cls``."""
        if include_retry and self.failure is not None and self.failure.check(exception_cls):
            return True
        return any(f.check(exception_cls) for _, f in self.outcomes_iter(index))

    # Used by the engine to record and persist history.
    def _append(self, result: Any) -> None:
        self._contents.append((result, {}))

    def _add_failure(self, atom_name: str, failure: Failure) -> None:
        if not self._contents:
            self._contents.append((None, {}))
        self._contents[-1][1][atom_name] = failure

    def __repr__(self) -> str:
        return "History(%r)" % (self._contents,)


class Retry(Atom):
    """Base class of retry controllers.

    Subclasses define ``on_failure(history, ...)`` returning a
    :class:`Decision`, and may override ``execute(history, ...)`` (its result
    is provided to the flow) and ``revert(history, ...)``.  Other arguments are
    filled from storage like a task's.  Controllers run in the engine's
    process, never on a remote worker: they only make decisions.
    """

    _engine_args = ("history",)

    def __init__(
        self,
        name: str | None = None,
        provides: ProvidesSpec = None,
        requires: RequiresSpec = None,
        auto_extract: bool = True,
        rebind: RebindSpec = None,
        inject: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            name=name,
            provides=provides,
            requires=requires,
            auto_extract=auto_extract,
            rebind=rebind,
            inject=inject,
        )

    def execute(self, history: History, *args: Any, **kwargs: Any) -> Any:
        """Run before each attempt; the result is provided to the flow."""
        return None

    def revert(self, history: History, *args: Any, **kwargs: Any) -> Any:
        """Undo ``execute`` when the controller's flow is reverted."""
        return None

    def on_failure(self, history: History, *args: Any, **kwargs: Any) -> Decision:
        """Decide what to do now that an atom of the flow failed."""
        raise NotImplementedError("%s must define on_failure()" % type(self).__name__)


class AlwaysRevert(Retry):
    """Revert the flow and pass the failure outward (the default without a controller)."""

    def on_failure(self, history: History, *args: Any, **kwargs: Any) -> Decision:
        return REVERT


class AlwaysRevertAll(Retry):
    """Revert the whole flow tree on any failure inside this flow."""

    def on_failure(self, history: History, *args: Any, **kwargs: Any) -> Decision:
        return REVERT_ALL


class Times(Retry):
    """Retry the flow until it has been tried ``attempts`` times in all.

    Provides the attempt number (1, 2, ...).  When the attempts are used up it
    reverts the flow (``REVERT``) or, with ``revert_all=True``, everything.
    """

    def __init__(
        self,
        attempts: int = 1,
        name: str | None = None,
        provides: ProvidesSpec = None,
        requires: RequiresSpec = None,
        auto_extract: bool = True,
        rebind: RebindSpec = None,
        revert_all: bool = False,
        inject: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(attempts, int) or attempts < 1:
            raise ValueError("Times needs attempts >= 1, got %r" % (attempts,))
        super().__init__(name, provides, requires, auto_extract, rebind, inject)
        self._attempts = attempts
        self._exhausted = REVERT_ALL if revert_all else REVERT

    @property
    def attempts(self) -> int:
        """How many times the flow is tried in all."""
        return self._attempts

    def execute(self, history: History, *args: Any, **kwargs: Any) -> int:
        return len(history) + 1

    def on_failure(self, history: History, *args: Any, **kwargs: Any) -> Decision:
        if len(history) < self._attempts:
            return RETRY
        return self._exhausted


class _ForEachBase(Retry):
    def __init__(
        self,
        name: str | None,
        provides: ProvidesSpec,
        requires: RequiresSpec,
        auto_extract: bool,
        rebind: RebindSpec,
        revert_all: bool,
        inject: Mapping[str, Any] | None,
    ) -> None:
        super().__init__(name, provides, requires, auto_extract, rebind, inject)
        self._exhausted = REVERT_ALL if revert_all else REVERT

    def _next_value(self, values: Sequence[Any], history: History) -> Any:
        tried = len(history)
        if tried >= len(values):
            raise NotFound("retry controller %r has no values left to try (%d tried)" % (self.name, tried))
        return values[tried]

    def _decide(self, values: Sequence[Any], history: History) -> Decision:
        if len(history) < len(values):
            return RETRY
        return self._exhausted


class ForEach(_ForEachBase):
    """Try the flow once per value of ``values``; provides the current value."""

    def __init__(
        self,
        values: Iterable[Any],
        name: str | None = None,
        provides: ProvidesSpec = None,
        requires: RequiresSpec = None,
        auto_extract: bool = True,
        rebind: RebindSpec = None,
        revert_all: bool = False,
        inject: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise TypeError("ForEach values must be a list or other iterable, got %r" % (values,))
        super().__init__(name, provides, requires, auto_extract, rebind, revert_all, inject)
        self._values = list(values)

    def execute(self, history: History, *args: Any, **kwargs: Any) -> Any:
        return self._next_value(self._values, history)

    def on_failure(self, history: History, *args: Any, **kwargs: Any) -> Decision:
        return self._decide(self._values, history)


class ParameterizedForEach(_ForEachBase):
    """Like :class:`ForEach`, with the values read from storage (argument ``values``)."""

    def __init__(
        self,
        name: str | None = None,
        provides: ProvidesSpec = None,
        requires: RequiresSpec = None,
        auto_extract: bool = True,
        rebind: RebindSpec = None,
        revert_all: bool = False,
        inject: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name, provides, requires, auto_extract, rebind, revert_all, inject)

    def execute(self, history: History, values: Sequence[Any]) -> Any:
        return self._next_value(list(values), history)

    def on_failure(self, history: History, values: Sequence[Any]) -> Decision:
        return self._decide(list(values), history)
