"""Every error flowkit raises, under one root.

::

    FlowkitError                      root of everything flowkit raises
    ├── DefinitionError               the flow is wrong; found before any task runs
    │   ├── Duplicate                 two atoms or flows share a name
    │   ├── DependencyFailure         the order of atoms cannot be worked out
    │   │   └── MissingDependencies   an atom requires a symbol nothing provides
    │   ├── AmbiguousDependency       two atoms in one scope provide a symbol
    │   ├── InvalidName               a name that cannot be stored (too long, a NUL, not Unicode)
    │   ├── InvalidFormat             data (a failure dict, say) is not in the expected format
    │   ├── RuleError                 a reconciler's rules contradict each other or name unknown states
    │   └── AtomNotPicklable          a process executor cannot ship the atom
    ├── NotFound                      a name (atom, symbol, detail) does not exist
    │   ├── UnknownFactory            a flow detail names a factory this process does not know
    │   ├── UnknownChoice             an engine or backend URL scheme flowkit does not have (also a ValueError)
    │   ├── MissingConnection         a persistence conf without a 'connection' URL (also a KeyError, ValueError)
    │   ├── NotStarted                no flow was started under that key (flowkit.result)
    │   └── UnknownKind               no reconciler is registered for that kind of resource
    ├── InvalidState                  an operation that the current state forbids
    │   ├── FlowDetailLocked          another engine is driving that flow detail
    │   ├── FlowChanged               the flow's code changed in a way its logbook cannot resume
    │   ├── SignalAlreadySent         that flow already got a signal of that name
    │   └── ResourceExists            a resource of that kind and id was created before
    ├── StorageFailure                the logbook could not be read or written
    │   ├── LeaseLost                 a job's claim expired or was taken over; writes refused
    │   ├── LockLost                  an engine's flow lock is gone (its session ended); writes refused
    │   └── CorruptLogbook            a stored row cannot be decoded, or the logbook contradicts itself
    │       └── InconsistentLogbook   a flow detail cannot be resumed as stored (lists each problem)
    ├── ResultNotStorable             an atom's result cannot be stored (fails that atom)
    ├── ExecutionFailure              running the engine itself went wrong
    │   └── ExecutorLost              the pool or cluster went away; run() again resumes
    ├── Cancelled                     the flow was cancelled and reverted
    ├── WaitTimeout                   a WaitFor's signal did not come in time (fails that atom)
    ├── HeartbeatTimeout              a task sent no heartbeat within its heartbeat_timeout (fails that attempt)
    ├── Broken                        an atom's retry policy ran out with on_exhausted="broken"
    ├── JobFailure                    a job board operation failed
    │   ├── UnclaimableJob            the job is claimed, final, or its resources are held
    │   └── NotOwner                  consume/abandon/trash by someone not holding the claim
    └── WrappedFailure                several atoms failed at once (iterable of Failure,
                                      atom_failures() names each failure's atom)

The exception a task raised is never wrapped when it is the only failure: the
engine re-raises it with its own type, as TaskFlow does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from flowkit.types.failure import Failure

__all__ = [
    "FlowkitError",
    "TaskFlowException",
    # definition errors
    "DefinitionError",
    "Duplicate",
    "DependencyFailure",
    "MissingDependencies",
    "AmbiguousDependency",
    "InvalidName",
    "InvalidFormat",
    "AtomNotPicklable",
    # run-time errors
    "NotFound",
    "UnknownFactory",
    "UnknownChoice",
    "MissingConnection",
    "InvalidState",
    "FlowDetailLocked",
    "FlowChanged",
    "StorageFailure",
    "ResultNotStorable",
    "ExecutionFailure",
    "ExecutorLost",
    "Cancelled",
    "WrappedFailure",
    # waits and signals
    "WaitTimeout",
    "HeartbeatTimeout",
    "Broken",
    "SignalAlreadySent",
    "NotStarted",
    # job boards
    "JobFailure",
    "UnclaimableJob",
    "NotOwner",
    "LeaseLost",
    "LockLost",
    # logbook integrity
    "CorruptLogbook",
    "InconsistentLogbook",
    # raising
    "raise_with_cause",
    # reconciling resources
    "RuleError",
    "UnknownKind",
    "ResourceExists",
]


class FlowkitError(Exception):
    """Root of every exception flowkit raises."""


# The name TaskFlow code catches.
TaskFlowException = FlowkitError


def raise_with_cause(exc_cls: type[FlowkitError], message: str, *args: Any, **kwargs: Any) -> NoReturn:
    """Raise ``exc_cls(message, *args, **kwargs)`` chained to a cause (TaskFlow's helper).

    The cause is ``kwargs["cause"]`` when given (None for no cause), else the
    exception being handled, if any; it becomes ``__cause__`` of what is raised.
    ``exc_cls`` must be a flowkit exception (ValueError otherwise).
    """
    if not (isinstance(exc_cls, type) and issubclass(exc_cls, FlowkitError)):
        raise ValueError("raise_with_cause needs a flowkit exception class, got %r" % (exc_cls,))
    cause = kwargs.pop("cause") if "cause" in kwargs else sys.exc_info()[1]
    raise exc_cls(message, *args, **kwargs) from cause


class DefinitionError(FlowkitError):
    """The flow definition is invalid; raised before any atom runs."""


class Duplicate(DefinitionError):
    """Two atoms or flows in one flow tree have the same name."""


class DependencyFailure(DefinitionError):
    """The atoms' order cannot be determined (a cycle, or a dependency where none is allowed)."""


class MissingDependencies(DependencyFailure):
    """An atom requires symbols that no atom in its scope and no stored value provides."""

    def __init__(
        self, who: str, requirements: Iterable[str], cause: str | None = None, *, message: str | None = None
    ) -> None:
        self.who = who
        self.missing_requirements = sorted(requirements)
        if message is not None:
            super().__init__(message)
            return
        message = "%s requires %s but nothing provides %s" % (
            who,
            ", ".join(repr(r) for r in self.missing_requirements),
            "it" if len(self.missing_requirements) == 1 else "them",
        )
        if cause:
            message += " (%s)" % cause
        super().__init__(message)


class AmbiguousDependency(DefinitionError):
    """Several atoms in one scope provide a symbol that another atom requires."""


class InvalidName(DefinitionError):
    """An atom, flow, logbook or flow detail name that the logbook cannot store.

    Longer than 255 characters, or holding a NUL character or a lone
    surrogate: raised when the atom or flow is built (or the engine loaded),
    the same on every backend, before anything is written.
    """


class InvalidFormat(DefinitionError):
    """Data handed to flowkit (a failure dict, a conf) does not have the expected format."""


class AtomNotPicklable(DefinitionError):
    """An atom cannot be pickled, so a process executor cannot run it."""


class NotFound(FlowkitError):
    """A named atom, symbol or detail does not exist."""


class UnknownChoice(NotFound, ValueError):
    """A string option names nothing flowkit has: an engine (``engine="nope"``), a backend URL scheme.

    TaskFlow raises :class:`NotFound` there; flowkit did raise ValueError, so it is both.
    """


class MissingConnection(NotFound, KeyError, ValueError):
    """A persistence conf has no ``"connection"`` URL (TaskFlow raises KeyError; flowkit did raise ValueError)."""

    def __str__(self) -> str:
        # KeyError's own str() quotes its argument, as for a missing key; this is a sentence.
        return Exception.__str__(self)


class UnknownFactory(NotFound):
    """A flow detail names a flow factory that is not registered here; nothing was imported or called.

    Stored data never names code to import (see :mod:`flowkit.factories`):
    register the factory, install it as an entry point, or allow its module.
    ``factory_name`` is the name read from storage; ``flow_detail_name`` and
    ``flow_detail_uuid`` say which flow detail holds it (None when resolved
    without one).
    """

    def __init__(self, message: str, factory_name: object = None, flow_detail: Any = None) -> None:
        super().__init__(message)
        self.factory_name = factory_name
        self.flow_detail_name: str | None = getattr(flow_detail, "name", None)
        self.flow_detail_uuid: str | None = getattr(flow_detail, "uuid", None)

    def __reduce__(self) -> Any:
        # Keeps the attributes across pickling (a conductor on a process pool).
        return (_unknown_factory, (str(self), self.factory_name, self.flow_detail_name, self.flow_detail_uuid))


def _unknown_factory(message: str, factory_name: object, name: str | None, uuid: str | None) -> UnknownFactory:
    error = UnknownFactory(message, factory_name)
    error.flow_detail_name, error.flow_detail_uuid = name, uuid
    return error


class InvalidState(FlowkitError):
    """The requested operation is not allowed in the current state."""


class FlowDetailLocked(InvalidState):
    """Another engine (in this or another process) is driving the same flow detail."""


class FlowChanged(InvalidState):
    """The flow rebuilt from code differs from the one its logbook ran, in a way a resume cannot absorb.

    ``differences`` holds one line per incompatible difference, each naming
    the atoms concerned; the message adds what the user can do (a
    :class:`~flowkit.versioning.Migration`: ``rename``, ``drop``, ``rerun``).
    Raised by ``load_from_detail()`` (and so ``flowkit resume`` and
    conductors) before anything runs or is written.
    """

    def __init__(self, flow_name: str, flow_uuid: str, differences: Sequence[str], hints: Sequence[str] = ()) -> None:
        self.flow_name = flow_name
        self.flow_uuid = flow_uuid
        self.differences = tuple(differences)
        self.hints = tuple(hints)
        count = len(self.differences)
        text = "flow %r (%s) changed since its logbook was written: %d incompatible difference%s: %s" % (
            flow_name,
            flow_uuid,
            count,
            "" if count == 1 else "s",
            "; ".join(self.differences),
        )
        if self.hints:
            text += ". " + " ".join(self.hints)
        super().__init__(text)

    def __reduce__(self) -> Any:
        return (FlowChanged, (self.flow_name, self.flow_uuid, self.differences, self.hints))


class StorageFailure(FlowkitError):
    """Reading or writing the logbook failed; the flow can be resumed later."""


class ResultNotStorable(FlowkitError):
    """An atom's result (or failure) cannot be written to the logbook.

    The engine fails that atom with this error, so the flow reverts like on
    any other failure; nothing unreadable is ever written.
    """


class ExecutionFailure(FlowkitError):
    """The engine could not run an atom (not the atom's own error)."""


class ExecutorLost(ExecutionFailure):
    """The executor (a pool, a cluster's scheduler) is gone; no atom failed.

    Executors raise it from a future when they cannot tell whether the atom
    ran.  The engine stops at once and the flow ends SUSPENDED: atoms that
    were in flight are still RUNNING in the logbook and run again on resume.
    """


class Cancelled(FlowkitError):
    """The flow was cancelled (``engine.cancel()``) and what had run was reverted."""


class WaitTimeout(FlowkitError):
    """A :class:`~flowkit.waits.WaitFor` atom's signal did not arrive before its timeout.

    An ordinary atom failure: retry controllers are asked and reverts run as
    for any task that raised.
    """


class HeartbeatTimeout(FlowkitError):
    """A task made with ``heartbeat_timeout=`` sent no heartbeat for longer than that.

    The engine fails that attempt with it (its late result, if one comes, is
    ignored and logged): the task's retry policy retries it, or retry
    controllers and reverts apply as for any failure.
    """


class Broken(FlowkitError):
    """An atom's :class:`~flowkit.policies.RetryPolicy` ran out (``on_exhausted="broken"``): it and its flow are BROKEN.

    Nothing was reverted and nothing more starts.  ``engine.retry()`` (``flowkit
    retry UUID [ATOM]``) makes the broken atoms PENDING again for the next
    ``run()``; ``engine.revert()`` (``flowkit revert UUID``) reverts the flow
    instead.  ``flow_name`` and ``atom_names`` say which; ``failures`` holds
    each atom's last failure.
    """

    def __init__(self, message: str, flow_name: str, atom_names: Sequence[str], failures: Sequence[Failure]) -> None:
        super().__init__(message)
        self.flow_name = flow_name
        self.atom_names = list(atom_names)
        self.failures = list(failures)


class SignalAlreadySent(InvalidState):
    """A signal of that name was already sent to that flow (a signal is delivered once per flow and name).

    Sending it again with the same idempotency key is not an error but a no-op.
    """


class NotStarted(NotFound):
    """No flow was started under that key or uuid (:func:`flowkit.starts.result`)."""


class RuleError(DefinitionError):
    """A :class:`~flowkit.reconcile.Reconciler`'s rules are wrong; raised when it is built, naming the rules."""


class UnknownKind(NotFound):
    """No :class:`~flowkit.reconcile.Reconciler` is registered for that kind of resource."""


class ResourceExists(InvalidState):
    """A resource of that kind and id exists already (``create`` does not overwrite one)."""


class JobFailure(FlowkitError):
    """A job board operation failed (TaskFlow's name)."""


class UnclaimableJob(JobFailure):
    """The job cannot be claimed now: it is claimed under a live lease, final, or a resource it needs is held."""


class NotOwner(JobFailure):
    """Only the holder of a job's claim may consume, abandon or trash it."""


class LeaseLost(StorageFailure):
    """A claim is no longer current (it expired, or the job was claimed again or ended).

    Raised by ``renew`` and by fenced logbook writes; being a StorageFailure,
    it stops an engine at once, so a stale owner never advances the job.
    """


class LockLost(StorageFailure):
    """The lock an engine holds on its flow detail is gone, so it may no longer write.

    A database session lock ends with its session (killed by an operator, an
    idle timeout, a network cut), and then another engine may take it.  The
    engine notices at its next write, which is refused; being a StorageFailure,
    it stops the engine at that atom boundary with nothing more written, and
    the flow is resumed like after a crash (atoms that were in flight run again).
    """


class CorruptLogbook(StorageFailure):
    """A logbook row cannot be decoded, or the logbook contradicts itself.

    Raised when reading a row whose JSON is invalid, whose state is unknown
    or whose shape is wrong, and by ``load_from_detail`` for a flow detail
    that lacks an atom detail it must have had.  The attributes say where:
    ``table`` (None when not known, e.g. the memory backend), ``uuid`` of the
    row (for a missing atom detail: of its flow detail), ``column`` (None for
    a missing row), ``atom`` (the atom's name, when the row is an atom's) and
    ``flow_detail`` (the flow detail's uuid, when known).
    """

    def __init__(
        self,
        reason: str,
        *,
        table: str | None = None,
        uuid: str | None = None,
        column: str | None = None,
        atom: str | None = None,
        flow_detail: str | None = None,
    ) -> None:
        self.reason = reason
        self.table = table
        self.uuid = uuid
        self.column = column
        self.atom = atom
        self.flow_detail = flow_detail
        where = []
        if table is not None:
            where.append("table %s" % (table,))
        if uuid is not None:
            where.append("uuid %s" % (uuid,))
        if column is not None:
            where.append("column %r" % (column,))
        if atom is not None:
            where.append("atom %r" % (atom,))
        if flow_detail is not None and flow_detail != uuid:
            where.append("of flow detail %s" % (flow_detail,))
        self._where = ", ".join(where) or "unknown row"
        super().__init__("corrupt logbook row (%s): %s" % (self._where, reason))

    def __reduce__(self) -> Any:
        # Keyword-only fields: rebuild from them, so the error survives pickling (process executors).
        return (
            _rebuild_corrupt,
            (type(self), self.reason, self.table, self.uuid, self.column, self.atom, self.flow_detail),
        )

    def located_text(self) -> str:
        """``"<where>: <reason>"``, for listing several problems in one message."""
        return "%s: %s" % (self._where, self.reason)

    def located(self, table: str, *, atom: str | None = None, flow_detail: str | None = None) -> CorruptLogbook:
        """The same problem, also naming what a reader knows and the decoder did not (table, atom, flow)."""
        return CorruptLogbook(
            self.reason,
            table=table,
            uuid=self.uuid,
            column=self.column,
            atom=self.atom if self.atom is not None else atom,
            flow_detail=self.flow_detail if self.flow_detail is not None else flow_detail,
        )


class InconsistentLogbook(CorruptLogbook):
    """A flow detail's logbook contradicts itself; resuming it is refused.

    ``problems`` holds one :class:`CorruptLogbook` per problem found (an
    unreadable atom row, an atom detail that must exist but does not).
    ``load_from_detail(..., repair=True)`` / ``flowkit resume --repair``
    re-run the atoms concerned instead.
    """

    def __init__(self, flow_name: str, flow_uuid: str, problems: Sequence[CorruptLogbook]) -> None:
        self.problems = tuple(problems)
        self.flow_name = flow_name
        listed = "; ".join(p.located_text() for p in self.problems)
        reason = "%d problem%s: %s" % (len(self.problems), "" if len(self.problems) == 1 else "s", listed)
        super().__init__(reason, uuid=flow_uuid, flow_detail=flow_uuid)
        # Not "corrupt logbook row": the message is about the flow detail as a whole.
        self.args = (
            "flow %r (%s) cannot be resumed from its logbook: %s; load_from_detail(..., repair=True) "
            "or 'flowkit resume --repair %s' re-runs the atoms concerned" % (flow_name, flow_uuid, reason, flow_uuid),
        )

    def __reduce__(self) -> Any:
        return (InconsistentLogbook, (self.flow_name, self.uuid, self.problems))


def _rebuild_corrupt(
    cls: type[CorruptLogbook],
    reason: str,
    table: str | None,
    uuid: str | None,
    column: str | None,
    atom: str | None,
    flow_detail: str | None,
) -> CorruptLogbook:
    return cls(reason, table=table, uuid=uuid, column=column, atom=atom, flow_detail=flow_detail)


class WrappedFailure(FlowkitError):
    """Several failures at once; iterate over it to see each :class:`~flowkit.types.failure.Failure`.

    Iterating yields the :class:`~flowkit.types.failure.Failure` objects, as in TaskFlow.  The engine
    also records which atom each failure belongs to: :meth:`atom_failures`
    returns ``(atom name, Failure)`` pairs (the name is None for a failure
    that belongs to no atom, such as a cancellation), and ``str()`` shows the
    names.
    """

    def __init__(
        self,
        causes: Iterable[Failure],
        *,
        atom_names: Iterable[str | None] | None = None,
        flow_name: str | None = None,
    ) -> None:
        causes = list(causes)
        names: list[str | None] = list(atom_names) if atom_names is not None else [None] * len(causes)
        if len(names) != len(causes):
            raise ValueError("WrappedFailure got %d atom names for %d failures" % (len(names), len(causes)))
        self._pairs: list[tuple[str | None, Failure]] = []
        for name, cause in zip(names, causes):
            nested = cause.exception
            if isinstance(nested, WrappedFailure):
                # Flatten nested wraps; their own names are more precise.
                for inner_name, inner in nested.atom_failures():
                    self._pairs.append((inner_name if inner_name is not None else name, inner))
            else:
                self._pairs.append((name, cause))
        self._causes: list[Failure] = [cause for _name, cause in self._pairs]
        self.flow_name = flow_name
        """The flow whose run raised this, when the engine knows it."""
        super().__init__(self._causes)

    def __iter__(self) -> Iterator[Failure]:
        return iter(self._causes)

    def __len__(self) -> int:
        return len(self._causes)

    def __getitem__(self, index: int) -> Failure:
        return self._causes[index]

    def atom_failures(self) -> list[tuple[str | None, Failure]]:
        """``(atom name, Failure)`` for each failure, in order; the name is None when no atom failed."""
        return list(self._pairs)

    def check(self, *exc_classes: Any) -> Any:
        """Return the first of ``exc_classes`` that any wrapped failure matches, else None."""
        for cause in self._causes:
            matched = cause.check(*exc_classes)
            if matched is not None:
                return matched
        return None

    def __reduce__(self) -> Any:
        # Keyword-only arguments do not survive the default exception pickling.
        return (_rebuild_wrapped, ([c for _n, c in self._pairs], [n for n, _c in self._pairs], self.flow_name))

    def __str__(self) -> str:
        parts = "; ".join(
            ("atom %r: %s" % (name, cause)) if name is not None else str(cause) for name, cause in self._pairs
        )
        where = " in flow %r" % (self.flow_name,) if self.flow_name is not None else ""
        count = len(self._causes)
        return "WrappedFailure(%d failure%s%s: %s)" % (count, "" if count == 1 else "s", where, parts)


def _rebuild_wrapped(causes: list[Failure], names: list[str | None], flow_name: str | None) -> WrappedFailure:
    return WrappedFailure(causes, atom_names=names, flow_name=flow_name)
