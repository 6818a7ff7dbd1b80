"""The state of one run: what the scheduler and the reverter are both handed.

:class:`RunState` holds everything about one ``run()`` of a compiled flow:
the atom details, the counters of unfinished predecessors, the ready queues,
the revert regions, and the small operations on them that the scheduler
(:mod:`flowkit.engines._scheduler`) and the reverter
(:mod:`flowkit.engines._reverter`) both use: saving a detail, announcing a
state change, fetching an atom's arguments.  Neither keeps run state of its
own, so what a run knows is in one place (the way trio's ``Runner`` is).

The constants both use live here too, public within the package.
"""

from __future__ import annotations

import collections
import enum
import heapq
import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowkit import exceptions as exc
from flowkit import states
from flowkit.clock import SYSTEM, Clock
from flowkit.engines._compiler import FROM_ATOM, FROM_ATOM_OPTIONAL, FROM_INJECT, FROM_STORE
from flowkit.states import (
    FAILURE,
    IGNORE,
    REVERT_FAILURE,
    REVERTING,
    RUNNING,
    SUCCESS,
)
from flowkit.storage import provided_result
from flowkit.types.cancellation import CancelToken
from flowkit.types.failure import Failure

if TYPE_CHECKING:
    from flowkit.engines._atom_executor import AtomExecutor
    from flowkit.engines._compiler import Compilation
    from flowkit.engines._heartbeats import AttemptThread, Watch
    from flowkit.persistence.models import AtomDetail
    from flowkit.storage import Storage
    from flowkit.types.notifier import Notifier

__all__ = [
    "RunState",
    "Region",
    "ReadyQueue",
    "PriorityReadyQueue",
    "short",
    "DONE",
    "NEEDS_REVERT",
    "EXEC",
    "REVERT",
    "PROGRESS",
    "WAKE",
    "IGNORE_ATOM",
    "IGNORED_BY_KEY",
    "IGNORE_ALL",
    "RegionOutcome",
    "RETRY_SCOPE",
    "REVERT_SCOPE",
    "REVERT_ALL",
    "ENGINE_FAILURES_KEY",
    "REVERTED_SCOPES_KEY",
    "REGIONS_KEY",
]

S = states.State
#: States whose atom counts as finished for its successors.
DONE = frozenset([SUCCESS, IGNORE])
#: States whose atom has something to revert when its region is reverted.
NEEDS_REVERT = frozenset([SUCCESS, FAILURE, REVERTING, REVERT_FAILURE])

# What a completion on the run's queue is about.
EXEC = 0  # an execute finished
REVERT = 1  # a revert finished
PROGRESS = 2  # a task running in this process reported progress
WAKE = 3  # look at the waiting atoms again (the clock jumped, a signal came, a stop was asked)
STARTED = 4  # a worker took up an atom that waited in its executor's queue, and started it

_MISSING = object()

# ``arguments()`` runs once per atom and compares the sources by identity.
_FROM_ATOM = FROM_ATOM
_FROM_ATOM_OPTIONAL = FROM_ATOM_OPTIONAL
_FROM_STORE = FROM_STORE
_FROM_INJECT = FROM_INJECT

# ``RunState.ignore_flag`` values.
IGNORE_ATOM = 1  # ignored, what follows still runs
IGNORE_ALL = 2  # ignored, and so is everything after it


class RegionOutcome(str, enum.Enum):
    """What happens once a region has been reverted; the value is what the flow detail records."""

    RETRY_SCOPE = "retry"  # run the scope's controller again, then the scope
    REVERT_SCOPE = "revert"  # stop there: the flow ends REVERTED once nothing else can run
    REVERT_ALL = "all"  # the region is the whole flow; it ends REVERTED


# Bound once (a member looked up on its enum class is slow), as the states are.
RETRY_SCOPE = RegionOutcome.RETRY_SCOPE
REVERT_SCOPE = RegionOutcome.REVERT_SCOPE
REVERT_ALL = RegionOutcome.REVERT_ALL

#: The key of ``FlowDetail.meta`` holding failures that belong to no atom (a
#: cancellation) while the revert they caused is not over.
#: The key of an ignored atom's meta naming the FLOW/NEIGHBORS decider link
#: (``[source name, target name]``) that ignored it.
IGNORED_BY_KEY = "ignored_by"

ENGINE_FAILURES_KEY = "engine_failures"
#: The key of ``FlowDetail.meta`` naming the retry controllers whose scope was
#: reverted (REVERT) while the rest of the flow went on.
REVERTED_SCOPES_KEY = "reverted_scopes"
#: The key of ``FlowDetail.meta`` recording the regions being reverted, so a
#: crash in the middle of a revert resumes the revert.
REGIONS_KEY = "regions"


class Region:
    """A part of the flow being reverted: a retry controller's scope, or everything."""

    __slots__ = (
        "start",
        "end",
        "retry",
        "outcome",
        "failures",
        "running",
        "reverting",
        "remaining",
        "waits",
        "member",
        "skip",
    )

    def __init__(self, start: int, end: int, retry: int, outcome: RegionOutcome) -> None:
        self.start = start
        self.end = end
        self.retry = retry  # the scope's controller, or -1 for the whole flow
        self.outcome = outcome
        self.failures: dict[str, Failure] = {}
        self.running = 0
        self.reverting = False
        self.remaining = 0
        self.waits: dict[int, int] = {}
        self.member: set[int] = set()
        #: Members whose revert a flow's ``revert_with`` (also a member) replaces.
        self.skip: set[int] = set()

    def contains(self, index: int) -> bool:
        """Whether atom ``index`` is inside this region."""
        return self.start <= index < self.end


class ReadyQueue(collections.deque[int]):
    """FIFO of ready atoms: ``push`` appends, ``pop`` takes the oldest.

    A deque itself, so that ``push``, ``pop`` and ``len()`` (each a few times
    per atom) are the deque's own C methods.
    """

    push = collections.deque.append
    pop = collections.deque.popleft


class PriorityReadyQueue(ReadyQueue):
    """Ready atoms by priority (highest first), then in the order they became ready."""

    def __init__(self, priorities: list[int]) -> None:
        super().__init__()
        self._priorities = priorities
        self._heap: list[tuple[int, int, int]] = []
        self._seq = 0

    def push(self, index: int) -> None:
        """Queue atom ``index``."""
        self._seq += 1
        heapq.heappush(self._heap, (-self._priorities[index], self._seq, index))

    def pop(self) -> int:  # type: ignore[override]
        """Take the ready atom of highest priority."""
        return heapq.heappop(self._heap)[2]

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)


class RunState:
    """Everything one run of a compiled flow knows, and the operations on it that everything shares."""

    def __init__(
        self,
        compilation: Compilation,
        details: list[AtomDetail],
        storage: Storage,
        executor: AtomExecutor,
        notifier: Notifier,
        atom_notifier: Notifier,
        counters: dict[str, int],
        *,
        defer_reverts: bool = False,
        clock: Clock = SYSTEM,
        park: bool = False,
        trace_carriers: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.c = compilation
        # A REVERT decision defers to the enclosing controller even when that
        # one says REVERT too, so an exhausted scope reverts the whole flow.
        self.defer_reverts = defer_reverts
        self.details = details
        self.storage = storage
        #: Queue an atom detail's changes for the next flush (bound once: it
        #: runs a few times per atom).
        self.save: Callable[[AtomDetail], None] = storage.save_atom
        self.flow_uuid = storage.flow_detail.uuid
        #: The size cap on one result (read once per run: a property of the backend).
        self.result_limit: int | None = storage.connection.backend.result_limit
        #: Whether any int of under 2**53 (17 characters of JSON at most) is
        #: within that cap: then such a result needs no check (see Scheduler._executed).
        self.small_ints_fit = self.result_limit is None or self.result_limit >= 17
        self.executor = executor
        self.notifier = notifier
        self.atom_notifier = atom_notifier
        self.counters = counters
        self.suspending = False
        self.cancel_requested: Failure | None = None
        #: What every task of the run reads as ``self.context.cancelled``; set
        #: by a suspend or cancel (the engine replaces it, once the executor has
        #: started, with one that carries the executor's flag to other processes).
        self.cancelled = CancelToken()
        self.lost: exc.ExecutorLost | None = None
        self.completions: queue.SimpleQueue[tuple[int, int, Any]] = queue.SimpleQueue()
        # What a task running in this process reports progress to (through
        # its TaskContext): one bound method for every task of the run.
        self.progress_sink = self._progress_reported
        n = len(compilation)
        self.waiting = [0] * n
        self.ignore_flag = bytearray(n)
        self.decisions: dict[int, bool] = {}
        # Target atom -> the FLOW/NEIGHBORS decider link that said no to it
        # (recorded in its detail once ignored, so a resume ignores the rest too).
        self.ignored_by: dict[int, int] = {}
        self.regions: list[Region] = []
        self.running: set[int] = set()
        #: Atoms submitted to wait in the executor's queue (see AtomExecutor.workers): recorded
        #: RUNNING, announced only once a worker starts them; index -> the state they were in.
        self.queued: dict[int, S | str] = {}
        self.fatal = False
        self.halted = False  # the whole flow is reverting: nothing new starts
        self.engine_failures: list[Failure] = []  # failures that belong to no atom
        self.final_failures: dict[str, Failure] = {}
        self.reverted = False
        self.ready: ReadyQueue = (
            PriorityReadyQueue([a.priority for a in compilation.atoms]) if compilation.has_priorities else ReadyQueue()
        )
        self.revert_ready: collections.deque[int] = collections.deque()
        #: The clock deadlines are read on (the engine's ``clock=``).
        self.clock = clock
        #: End the run WAITING once only waits are left, instead of blocking until they end.
        self.park = park
        #: Started waits: atom index -> (deadline or None, signal name or None).
        self.waits: dict[int, tuple[float | None, str | None]] = {}
        #: Whether the signals of the waits must be read again (a wake-up, a poll, a new wait).
        self.look_for_signals = False
        #: Atom uuid -> the trace context its run carries to where it runs (None: the run is not traced).
        self.trace_carriers = trace_carriers
        #: Atoms whose retry policy gave up with on_exhausted="broken": nothing new starts.
        self.broken: list[int] = []
        #: Atom notifications held until the flush that makes their state
        #: durable (see :meth:`notify_atom`), in the order they happened.
        self.unflushed: list[tuple[S, dict[str, Any]]] = []
        #: Running attempts of tasks with a heartbeat timeout: atom index -> their watch.
        self.beating: dict[int, Watch] = {}
        #: When (monotonic) the watches were last looked at.
        self.heartbeats_looked = 0.0
        #: Where the serial engine runs watched attempts (made on first use).
        self.attempt_thread: AttemptThread | None = None

    def wake(self) -> None:
        """Make the engine's loop look at its waits again (any thread; also a clock or signal callback)."""
        self.completions.put((-1, WAKE, None))

    def _progress_reported(self, atom_name: str, progress: float) -> None:
        # Called in the thread running the task: hand it to the engine's loop.
        self.completions.put((self.c.names[atom_name], PROGRESS, progress))

    def flush(self) -> None:
        """Make every write so far durable, then tell the listeners what it made durable."""
        self.storage.connection.flush()
        if self.unflushed:
            self.deliver()

    def deliver(self, count: int | None = None) -> None:
        """Send the (first ``count``) atom notifications held for a flush; call once that flush succeeded."""
        # Only what was held: a change a listener makes meanwhile is not
        # durable yet, so its notification waits for the next flush.
        if count is None:
            held, self.unflushed = self.unflushed, []
        else:
            held, self.unflushed = self.unflushed[:count], self.unflushed[count:]
        notify = self.atom_notifier.notify
        for state, details in held:
            notify(state, details)

    def notify_atom(self, index: int, state: S, old: S | str | None, result: Any = _MISSING) -> None:
        """Tell the atom notifier's listeners that atom ``index`` went from ``old`` to ``state``.

        SUCCESS and RUNNING are held until the next flush (:meth:`flush`):
        a listener that acts on an atom's SUCCESS finds it in the logbook,
        even if it ends the process, and writes are grouped, so this costs no
        commit of its own.  Other states are told at once, unless something
        is held (then they queue behind it, so listeners see every atom's
        states in order).
        """
        if not self.atom_notifier.has_listeners:
            return
        detail = self.details[index]
        details: dict[str, Any] = {
            "atom_name": detail.name,
            "atom_uuid": detail.uuid,
            "old_state": old,
        }
        if self.c.is_retry[index]:
            details["retry_name"] = detail.name
            details["retry_uuid"] = detail.uuid
        else:
            details["task_name"] = detail.name
            details["task_uuid"] = detail.uuid
        if result is not _MISSING:
            details["result"] = result
        if state is SUCCESS or state is RUNNING or self.unflushed:
            self.unflushed.append((state, details))
        else:
            self.atom_notifier.notify(state, details)

    def set_flow_state(self, state: S) -> None:
        """Record the flow's new state (durably unless RUNNING) and announce it."""
        fd = self.storage.flow_detail
        old = fd.state
        if old == state:
            return
        # RUNNING needs no transaction of its own: nothing runs before the
        # next flush (an atom's write-ahead RUNNING record, or the flow's end).
        durable = state != RUNNING
        self.storage.set_flow_state(state, durable=durable)
        if durable and self.unflushed:
            self.deliver()
        if self.notifier.has_listeners:
            self.notifier.notify(state, {"flow_name": fd.name, "flow_uuid": fd.uuid, "old_state": old})

    def result_of(self, index: int) -> tuple[bool, Any]:
        """``(True, result)`` of atom ``index``, or ``(False, None)`` while it has none (see provided_result)."""
        return provided_result(self.details[index])

    def arguments(self, index: int, lenient: bool = False) -> dict[str, Any]:
        """Fetch ``execute``'s keyword arguments for atom ``index`` (``lenient``: leave out what is missing)."""
        kwargs: dict[str, Any] = {}
        store: Any = None
        atom = self.c.atoms[index]
        for source, arg, symbol, provider, where in self.c.arg_plans[index]:
            if source is _FROM_ATOM or source is _FROM_ATOM_OPTIONAL:
                # Injected values win over atom results (TaskFlow's precedence).
                if store is None:
                    store = self.storage.injected
                if store and symbol in store:
                    kwargs[arg] = store[symbol]
                    continue
                found, value = provided_result(self.details[provider])
                if found and where is not None:
                    try:
                        value = value[where]
                    except (LookupError, TypeError):
                        found = False
                if found:
                    kwargs[arg] = value
                elif source is _FROM_ATOM and not lenient:
                    raise exc.NotFound(
                        "atom %r needs %r (argument %r) from atom %r, which has no such result (it is %s)"
                        % (atom.name, symbol, arg, self.c.atoms[provider].name, self.details[provider].state)
                    )
            elif source is _FROM_INJECT:
                kwargs[arg] = atom.inject[symbol]
            else:
                if store is None:
                    store = self.storage.injected
                if symbol in store:
                    kwargs[arg] = store[symbol]
                elif source is _FROM_STORE and not lenient:
                    raise exc.NotFound(
                        "atom %r needs %r (argument %r) from the store, which does not have it"
                        % (atom.name, symbol, arg)
                    )
        return kwargs

    def check_provides(self, index: int, result: Any) -> None:
        """Raise ExecutionFailure unless ``result`` has every part atom ``index`` provides."""
        for symbol, where in self.c.atoms[index].save_as.items():
            if where is None:
                continue
            try:
                result[where]
            except (LookupError, TypeError):
                if isinstance(where, int):
                    what = "position %d of a sequence" % where
                else:
                    what = "key %r of a dict" % (where,)
                raise exc.ExecutionFailure(
                    "atom %r provides %r as %s, but its result %r has none"
                    % (self.c.atoms[index].name, symbol, what, short(result))
                ) from None

    def region_of(self, index: int) -> Region | None:
        """The region being reverted that holds atom ``index``, if any."""
        for region in self.regions:
            if region.start <= index < region.end:
                return region
        return None

    def unstorable(self, index: int, what: str, error: exc.ResultNotStorable) -> Failure:
        """The Failure of atom ``index`` whose value (``what`` it did) the codec refused."""
        wrapped = exc.ResultNotStorable(
            "atom %r of flow %r %s that cannot be stored: %s"
            % (self.c.atoms[index].name, self.storage.flow_detail.name, what, error)
        )
        wrapped.__cause__ = error
        return Failure.from_exception(wrapped)


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
