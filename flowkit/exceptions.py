"""Every error flowkit raises, under one root.

::

    FlowkitError                      root of everything flowkit raises
    ├── DefinitionError               the flow is wrong; found before any task runs
    │   ├── Duplicate                 two atoms or flows share a name
    │   ├── DependencyFailure         the order of atoms cannot be worked out
    │   │   └── MissingDependencies   an atom requires a symbol nothing provides
    │   ├── AmbiguousDependency       two atoms in one scope provide a symbol
    │   └── AtomNotPicklable          a process executor cannot ship the atom
    ├── NotFound                      a name (atom, symbol, detail) does not exist
    ├── InvalidState                  an operation that the current state forbids
    │   └── FlowDetailLocked          another engine is driving that flow detail
    ├── StorageFailure                the logbook could not be read or written
    │   ├── LeaseLost                 a job's claim expired or was taken over; writes refused
    │   └── LockLost                  an engine's flow lock is gone (its session ended); writes refused
    ├── ResultNotStorable             an atom's result cannot be stored (fails that atom)
    ├── ExecutionFailure              running the engine itself went wrong
    │   └── ExecutorLost              the pool or cluster went away; run() again resumes
    ├── Cancelled                     the flow was cancelled and reverted
    ├── JobFailure                    a job board operation failed
    │   ├── UnclaimableJob            the job is claimed, final, or its resources are held
    │   └── NotOwner                  consume/abandon/trash by someone not holding the claim
    └── WrappedFailure                several atoms failed at once (iterable of Failure)

The exception a task raised is never wrapped when it is the only failure: the
engine re-raises it with its own type, as TaskFlow does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

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
    "AtomNotPicklable",
    # run-time errors
    "NotFound",
    "InvalidState",
    "FlowDetailLocked",
    "StorageFailure",
    "ResultNotStorable",
    "ExecutionFailure",
    "ExecutorLost",
    "Cancelled",
    "WrappedFailure",
    # job boards
    "JobFailure",
    "UnclaimableJob",
    "NotOwner",
    "LeaseLost",
    "LockLost",
]


class FlowkitError(Exception):
    """Root of every exception flowkit raises."""


# The name TaskFlow code catches.
TaskFlowException = FlowkitError


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


class AtomNotPicklable(DefinitionError):
    """An atom cannot be pickled, so a process executor cannot run it."""


class NotFound(FlowkitError):
    """A named atom, symbol or detail does not exist."""


class InvalidState(FlowkitError):
    """The requested operation is not allowed in the current state."""


class FlowDetailLocked(InvalidState):
    """Another engine (in this or another process) is driving the same flow detail."""


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


class WrappedFailure(FlowkitError):
    """Several failures at once; iterate over it to see each :class:`Failure`."""

    def __init__(self, causes: Iterable[Failure]) -> None:
        self._causes: list[Failure] = []
        for cause in causes:
            nested = cause.exception
            if isinstance(nested, WrappedFailure):
                self._causes.extend(nested)  # flatten nested wraps
            else:
                self._causes.append(cause)
        super().__init__(self._causes)

    def __iter__(self) -> Iterator[Failure]:
        return iter(self._causes)

    def __len__(self) -> int:
        return len(self._causes)

    def __getitem__(self, index: int) -> Failure:
        return self._causes[index]

    def check(self, *exc_classes: Any) -> Any:
        """Return the first of ``exc_classes`` that any wrapped failure matches, else None."""
        for cause in self._causes:
            matched = cause.check(*exc_classes)
            if matched is not None:
                return matched
        return None

    def __str__(self) -> str:
        parts = ", ".join(str(c) for c in self._causes)
        return "WrappedFailure(%d failures: %s)" % (len(self._causes), parts)
