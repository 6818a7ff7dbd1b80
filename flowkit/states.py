"""States of flows and atoms, and the transitions allowed between them.

States are members of :class:`State`, a ``str`` enum whose members compare
equal to the plain strings TaskFlow uses (``states.SUCCESS == "SUCCESS"``), so
code ported from TaskFlow that compares against strings keeps working.
The transition tables are explicit.  ``check_flow_transition``,
``check_task_transition`` and ``check_retry_transition`` answer as TaskFlow's
do (True: a real change; False: ignored; for flows, an impossible move raises
:class:`~flowkit.exceptions.InvalidState`), extended with the states only
flowkit has (WAITING, BROKEN, a flow's REVERTING); ``check_atom_transition``
is flowkit's own wider table, with the moves a resume and a reset make.
"""

from __future__ import annotations

import enum

from flowkit.exceptions import InvalidState

__all__ = [
    # the enum and its members as module constants
    "State",
    "Intention",
    "PENDING",
    "RUNNING",
    "SUCCESS",
    "FAILURE",
    "REVERTING",
    "REVERTED",
    "REVERT_FAILURE",
    "SUSPENDED",
    "SUSPENDING",
    "RESUMING",
    "RETRYING",
    "IGNORE",
    "SCHEDULING",
    "WAITING",
    "BROKEN",
    "ANALYZING",
    "GAME_OVER",
    "UNDEFINED",
    # intentions
    "EXECUTE",
    "REVERT",
    "RETRY",
    # transition checks
    "check_flow_transition",
    "check_atom_transition",
    "check_task_transition",
    "check_retry_transition",
]


class State(str, enum.Enum):
    """A flow, atom or engine state; equal to its TaskFlow string."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVERTING = "REVERTING"
    REVERTED = "REVERTED"
    REVERT_FAILURE = "REVERT_FAILURE"
    SUSPENDED = "SUSPENDED"
    SUSPENDING = "SUSPENDING"
    RESUMING = "RESUMING"
    RETRYING = "RETRYING"
    IGNORE = "IGNORE"
    # a flow parked on timers or signals, an atom waiting on one (durable);
    # also yielded by Engine.run_iter() while atoms are in flight
    WAITING = "WAITING"
    # an atom whose retry policy ran out (on_exhausted="broken") and the flow
    # it stopped: durable, nothing reverted, until an operator retries or reverts
    BROKEN = "BROKEN"
    # engine-loop states yielded by Engine.run_iter()
    SCHEDULING = "SCHEDULING"
    ANALYZING = "ANALYZING"
    GAME_OVER = "GAME_OVER"
    UNDEFINED = "UNDEFINED"

    def __str__(self) -> str:
        return self.value


class Intention(str, enum.Enum):
    """What the engine means to do with an atom next."""

    EXECUTE = "EXECUTE"
    REVERT = "REVERT"
    RETRY = "RETRY"
    IGNORE = "IGNORE"

    def __str__(self) -> str:
        return self.value


PENDING = State.PENDING
RUNNING = State.RUNNING
SUCCESS = State.SUCCESS
FAILURE = State.FAILURE
REVERTING = State.REVERTING
REVERTED = State.REVERTED
REVERT_FAILURE = State.REVERT_FAILURE
SUSPENDED = State.SUSPENDED
SUSPENDING = State.SUSPENDING
RESUMING = State.RESUMING
RETRYING = State.RETRYING
IGNORE = State.IGNORE
SCHEDULING = State.SCHEDULING
WAITING = State.WAITING
BROKEN = State.BROKEN
ANALYZING = State.ANALYZING
GAME_OVER = State.GAME_OVER
UNDEFINED = State.UNDEFINED

EXECUTE = Intention.EXECUTE
REVERT = Intention.REVERT
RETRY = Intention.RETRY

# Flow transitions.  A flow may be re-run after it ended (reset() or a resumed
# logbook), hence the edges back to RUNNING/PENDING from terminal states.
_FLOW_TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    [
        (PENDING, RUNNING),
        (PENDING, RESUMING),
        (RESUMING, RUNNING),
        (RUNNING, SUCCESS),
        (RUNNING, FAILURE),
        (RUNNING, REVERTING),
        (RUNNING, SUSPENDING),
        (RUNNING, SUSPENDED),
        (REVERTING, REVERTED),
        (REVERTING, FAILURE),
        (REVERTING, SUSPENDING),
        (REVERTING, SUSPENDED),
        (SUSPENDING, SUSPENDED),
        (SUSPENDING, SUCCESS),
        (SUSPENDING, REVERTED),
        (SUSPENDING, FAILURE),
        (SUSPENDED, RUNNING),
        (SUSPENDED, RESUMING),
        (SUSPENDED, REVERTING),
        (SUCCESS, RUNNING),
        (SUCCESS, RESUMING),
        (REVERTED, RUNNING),
        (REVERTED, PENDING),
        (FAILURE, RUNNING),
        (FAILURE, RESUMING),
        (FAILURE, REVERTING),
        (SUCCESS, PENDING),
        (FAILURE, PENDING),
        (SUSPENDED, PENDING),
        (RUNNING, RUNNING),
        (REVERTING, RUNNING),
        (RUNNING, PENDING),
        (REVERTING, PENDING),
        # parked: every atom that could run has ended, the rest wait on timers or signals
        (RUNNING, WAITING),
        (REVERTING, WAITING),
        (WAITING, RUNNING),
        (WAITING, RESUMING),
        (WAITING, REVERTING),
        (WAITING, SUSPENDED),
        (WAITING, PENDING),
        (RESUMING, WAITING),
        # a retry policy ran out with on_exhausted="broken"; retry() or revert() leaves it
        (RUNNING, BROKEN),
        (WAITING, BROKEN),
        (BROKEN, RUNNING),
        (BROKEN, RESUMING),
        (BROKEN, REVERTING),
        (BROKEN, PENDING),
    ]
)

_ATOM_TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    [
        (PENDING, RUNNING),
        (PENDING, IGNORE),
        (PENDING, REVERTED),  # reverting something that never ran is a no-op
        (PENDING, REVERTING),
        (RUNNING, SUCCESS),
        (RUNNING, FAILURE),
        (RUNNING, RUNNING),  # re-run after a crash
        (RUNNING, PENDING),
        (SUCCESS, REVERTING),
        (SUCCESS, RETRYING),
        (SUCCESS, PENDING),
        (SUCCESS, IGNORE),
        (FAILURE, REVERTING),
        (FAILURE, PENDING),
        (FAILURE, RUNNING),
        (REVERTING, REVERTED),
        (REVERTING, REVERT_FAILURE),
        (REVERTING, REVERTING),  # re-run of a revert after a crash
        (REVERTING, PENDING),
        (REVERTED, PENDING),
        (REVERTED, REVERTING),
        (REVERT_FAILURE, REVERTING),
        (REVERT_FAILURE, PENDING),
        (RETRYING, RUNNING),
        (RETRYING, PENDING),
        (RETRYING, REVERTING),
        (IGNORE, PENDING),
        (IGNORE, REVERTED),
        # a timer or signal atom waits (durably) between starting and ending
        (PENDING, WAITING),
        (WAITING, SUCCESS),
        (WAITING, FAILURE),
        (WAITING, PENDING),
        (WAITING, REVERTING),
        (WAITING, REVERTED),
        (RUNNING, WAITING),
        # a retry policy's backoff between attempts, and its end
        (WAITING, RUNNING),
        (RUNNING, BROKEN),
        (BROKEN, PENDING),
        (BROKEN, REVERTING),
        (BROKEN, REVERTED),
        (BROKEN, FAILURE),  # revert() instead of retry(): reverted as any failed atom
    ]
)


# The TaskFlow-compatible checks.  TaskFlow's tables, as TaskFlow code asks
# them, plus what only flowkit does: a flow REVERTING on its way to REVERTED
# or FAILURE, and the WAITING (durable waits) and BROKEN (retry policies) of
# flows and atoms, which TaskFlow's engines never enter.
_TASKFLOW_FLOW: frozenset[tuple[State, State]] = frozenset(
    [
        (PENDING, RUNNING),
        (RUNNING, SUCCESS),
        (RUNNING, FAILURE),
        (RUNNING, REVERTED),
        (RUNNING, SUSPENDING),
        (RUNNING, RESUMING),
        (SUCCESS, RUNNING),
        (FAILURE, RUNNING),
        (REVERTED, PENDING),
        (SUCCESS, PENDING),
        (SUSPENDING, SUSPENDED),
        (SUSPENDING, SUCCESS),
        (SUSPENDING, FAILURE),
        (SUSPENDING, REVERTED),
        (SUSPENDING, RESUMING),
        (SUSPENDED, RUNNING),
        (RESUMING, SUSPENDED),
    ]
)
# Moves TaskFlow ignores (False, nothing to do): asking a flow that is not
# running to suspend or resume.
_IGNORED_FLOW: frozenset[tuple[State, State]] = frozenset(
    (old, new)
    for old in (PENDING, FAILURE, SUCCESS, SUSPENDED, REVERTED)
    for new in (SUSPENDING, SUSPENDED, RESUMING)
    if old != new
)
_FLOWKIT_ONLY = (WAITING, BROKEN)
_FLOW_ALLOWED = _TASKFLOW_FLOW | frozenset(
    pair for pair in _FLOW_TRANSITIONS if REVERTING in pair or set(pair) & set(_FLOWKIT_ONLY)
)
_TASKFLOW_TASK: frozenset[tuple[State, State]] = frozenset(
    [
        (PENDING, RUNNING),
        (PENDING, IGNORE),
        (RUNNING, SUCCESS),
        (RUNNING, FAILURE),
        (FAILURE, REVERTING),
        (SUCCESS, REVERTING),
        (REVERTING, REVERTED),
        (REVERTING, REVERT_FAILURE),
        (REVERTED, PENDING),
        (IGNORE, PENDING),
    ]
)
_TASK_ALLOWED = _TASKFLOW_TASK | frozenset(pair for pair in _ATOM_TRANSITIONS if set(pair) & set(_FLOWKIT_ONLY))
_RETRY_ALLOWED = _TASK_ALLOWED | {(SUCCESS, RETRYING), (RETRYING, RUNNING)}


def _pair(old: State | str, new: State | str) -> tuple[State, State] | None:
    try:
        return State(old), State(new)
    except ValueError:
        return None  # not a state at all: never a transition


def check_flow_transition(old: State | str, new: State | str) -> bool:
    """Whether a flow moves from ``old`` to ``new``, answered as TaskFlow does.

    True: a real change.  False: nothing to do (the same state, or a suspend or
    resume of a flow that is not running).  Any other move raises
    :class:`~flowkit.exceptions.InvalidState`.
    """
    if old == new:
        return False
    pair = _pair(old, new)
    if pair in _FLOW_ALLOWED:
        return True
    if pair in _IGNORED_FLOW:
        return False
    raise InvalidState("Flow transition from '%s' to '%s' is not allowed" % (old, new))


def check_task_transition(old: State | str, new: State | str) -> bool:
    """Whether a task may move from ``old`` to ``new`` (TaskFlow's table; False, never an error)."""
    return _pair(old, new) in _TASK_ALLOWED


def check_retry_transition(old: State | str, new: State | str) -> bool:
    """Whether a retry controller may move from ``old`` to ``new`` (a task's moves, and RETRYING)."""
    return _pair(old, new) in _RETRY_ALLOWED


def check_atom_transition(old: State | str, new: State | str) -> bool:
    """Whether flowkit's engine may move an atom from ``old`` to ``new``.

    Wider than :func:`check_task_transition`: it has the moves a resume after
    a crash and a reset make (``RUNNING`` to ``RUNNING``, ``SUCCESS`` to
    ``PENDING``, ...).  A transition to the same state means nothing changed.
    """
    if old == new:
        return True
    return _pair(old, new) in _ATOM_TRANSITIONS
