"""The contract every persistence backend fulfils.

A :class:`Backend` is configuration plus shared resources (an engine, a pool);
a :class:`Connection` does the reads and writes.  The engine uses one
connection per run and calls :meth:`~flowkit.persistence.base.Connection.flush` at each durability
point: before an atom starts and before a successor may start, so a backend
may buffer writes between flushes (group commit) but never across one.

Fencing (a job board's claim, see :mod:`flowkit.jobs.base`) hooks in where
writes become durable: :meth:`~flowkit.persistence.base.Connection.fence` gives a buffering connection
a precondition that each flush runs inside the transaction that commits it;
:attr:`~flowkit.persistence.base.Connection.writes_immediately` tells the fence when there is no such
transaction, so that it guards every write call instead.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from flowkit.exceptions import FlowDetailLocked, NotFound
from flowkit.persistence.models import AtomDetail, FlowDetail, LogBook

__all__ = ["Backend", "Connection", "FlowLock", "ProcessFlowLock", "DEFAULT_MAX_RESULT_BYTES", "check_max_result_bytes"]

#: The default ``max_result_bytes`` of every backend: 16 MiB of JSON.  A result
#: is kept in memory, handed to its successors and rewritten with its atom's
#: every state change, so megabytes are fine and gigabytes are not; 16 MiB is
#: also what MySQL and MariaDB accept in one packet by default
#: (``max_allowed_packet``).  Larger data belongs in a file or an object store,
#: with its address as the result.
DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024


def check_max_result_bytes(value: int | None) -> int | None:
    """``value`` if it is a valid ``max_result_bytes`` (a positive int, or None for no limit); else ValueError."""
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError("max_result_bytes must be a positive int (bytes) or None, got %r" % (value,))
    return value


class FlowLock(abc.ABC):
    """Held by the one engine driving a flow detail; released when it stops.

    A lock must also be released when its holder's process dies (a crashed
    engine must not block the resume), which is why backends use locks the
    operating system or the database server drops with the process or
    session, never a flag in a table.
    """

    @abc.abstractmethod
    def release(self) -> None:
        """Release the lock (idempotent)."""


_PROCESS_LOCKS: set[str] = set()
_PROCESS_LOCKS_GUARD = threading.Lock()


class ProcessFlowLock(FlowLock):
    """A lock that only excludes engines within this process."""

    def __init__(self, key: str, what: str) -> None:
        with _PROCESS_LOCKS_GUARD:
            if key in _PROCESS_LOCKS:
                raise FlowDetailLocked(
                    "%s is being run by another engine in this process; wait for it to finish "
                    "or suspend it before running it again" % (what,)
                )
            _PROCESS_LOCKS.add(key)
        self._key: str | None = key

    def release(self) -> None:
        with _PROCESS_LOCKS_GUARD:
            if self._key is not None:
                _PROCESS_LOCKS.discard(self._key)
                self._key = None


class Connection(abc.ABC):
    """Reads and writes logbooks, flow details and atom details."""

    #: True when every write call is durable once it returns, so :meth:`flush`
    #: has nothing to do (the default).  A connection that buffers writes until
    #: :meth:`flush` sets it False; a fence then checks at each flush instead
    #: of at every write.
    writes_immediately: ClassVar[bool] = True

    @property
    @abc.abstractmethod
    def backend(self) -> Backend:
        """The backend this connection belongs to."""

    def upgrade(self) -> None:
        """Create or migrate the schema; safe to call repeatedly and concurrently."""

    def validate(self) -> None:
        """Check that the store is reachable and its schema current; raise StorageFailure if not."""

    def flush(self) -> None:
        """Make every write made so far durable before returning."""

    def fence(self, precondition: Callable[[Any], None]) -> None:
        """Make every later flush run ``precondition`` first, inside the transaction that commits it.

        ``precondition`` is what entitles the writer to write (a job claim,
        see :meth:`flowkit.jobs.base.JobBoard.fenced_backend`).  It is called
        with that transaction's DBAPI cursor, before any buffered write is
        written; if it raises, nothing is written, the writes stay buffered
        and its exception propagates from the flush (and from whatever
        flushed: a read, ``save_logbook``, ``close``).  Because the check and
        the writes share one transaction, a writer that loses its entitlement
        meanwhile is either refused or had committed first.

        Only a connection that buffers (:attr:`writes_immediately` False)
        has such a transaction; the default raises TypeError, and a fence
        checks each write of such a connection where it is made instead.
        """
        raise TypeError(
            "%s writes immediately: it has no flush transaction to run a precondition in" % (type(self).__name__,)
        )

    @property
    def pending(self) -> bool:
        """Whether writes are buffered, waiting for :meth:`flush` (never, for a connection that writes at once)."""
        return False

    def lock_flow(self, flow_detail: FlowDetail) -> FlowLock:
        """Take the lock that lets one engine at a time drive ``flow_detail``.

        Raises :class:`~flowkit.exceptions.FlowDetailLocked` when another
        engine holds it.  The default excludes engines of this process only;
        backends shared between processes override it.
        """
        return ProcessFlowLock(
            "%s:%s" % (id(self.backend), flow_detail.uuid),
            "flow detail %r (%s)"
            % (
                flow_detail.name,
                flow_detail.uuid,
            ),
        )

    @abc.abstractmethod
    def save_logbook(self, book: LogBook) -> LogBook:
        """Store ``book`` with its flow and atom details (insert or update); return it."""

    def create_logbook(self, book: LogBook) -> bool:
        """Store ``book`` with its flow and atom details only if nothing with its uuids is stored; durably, now.

        True when this call stored it; False when a logbook with ``book``'s
        uuid, or a flow detail with the uuid of one of its flow details, is
        already stored (then nothing is written, and what is stored is left as
        it is).  Of several callers creating the same logbook at once, in any
        threads or processes sharing the store, exactly one gets True: this is
        the insert that decides who owns a record whose uuid callers derive
        from a shared name (:func:`flowkit.starts.start`).

        The default raises TypeError: a backend must make the check and the
        insert one atomic step to offer it.
        """
        raise TypeError("%s cannot create a logbook only if it is absent" % (type(self).__name__,))

    @abc.abstractmethod
    def get_logbook(self, book_uuid: str, lazy: bool = False) -> LogBook:
        """The logbook ``book_uuid`` (with its flow details unless ``lazy``); NotFound if absent."""

    @abc.abstractmethod
    def get_logbooks(self, lazy: bool = False) -> Iterator[LogBook]:
        """Every logbook."""

    @abc.abstractmethod
    def get_flows_for_book(self, book_uuid: str, lazy: bool = False) -> Iterator[FlowDetail]:
        """The flow details of logbook ``book_uuid``."""

    @abc.abstractmethod
    def get_flow_details(self, fd_uuid: str, lazy: bool = False) -> FlowDetail:
        """The flow detail ``fd_uuid`` (with its atom details unless ``lazy``); NotFound if absent."""

    def has_flow_detail(self, fd_uuid: str) -> bool:
        """Whether flow detail ``fd_uuid`` is stored (in a logbook).

        Backends that remember which flow details this process has read or
        written answer from that memory without a round trip, as their writes
        do; the default reads the flow detail.
        """
        try:
            self.get_flow_details(fd_uuid, lazy=True)
        except NotFound:
            return False
        return True

    def get_atom_states(self, fd_uuid: str) -> dict[str, tuple[str, Any, Any]]:
        """``{atom name: (atom detail uuid, state, intention)}`` of flow detail ``fd_uuid``; NotFound if absent.

        What an engine compares before it runs, to find out whether another
        engine changed the flow detail since it was read.  Backends that can
        answer without reading whole atom details (their results, meta and
        failures) should; the default reads the flow detail.
        """
        return {ad.name: (ad.uuid, ad.state, ad.intention) for ad in self.get_flow_details(fd_uuid)}

    @abc.abstractmethod
    def get_atom_details(self, ad_uuid: str) -> AtomDetail:
        """The atom detail ``ad_uuid``; NotFound if absent."""

    @abc.abstractmethod
    def update_flow_details(self, flow_detail: FlowDetail) -> FlowDetail:
        """Store the flow detail's state and meta and its atom details; it must already exist."""

    def update_flow_state(self, flow_detail: FlowDetail) -> FlowDetail:
        """Store the flow detail's state and meta only; it must already exist.

        What its atom details hold is not written (the engine writes each
        atom detail as it changes, with :meth:`update_atom_details`), so a
        backend can skip looking at them.  The default stores everything,
        with :meth:`update_flow_details`, which is always correct.
        """
        return self.update_flow_details(flow_detail)

    @abc.abstractmethod
    def update_atom_details(self, atom_detail: AtomDetail) -> AtomDetail:
        """Store one atom detail; it must belong to a stored flow detail."""

    def update_atom_details_many(self, atom_details: Iterable[AtomDetail]) -> None:
        """Store several atom details (backends may do this in one transaction)."""
        for detail in atom_details:
            self.update_atom_details(detail)

    # -- signals: durable messages to a flow detail, one per name -------------------------

    def send_signal(
        self,
        flow_uuid: str,
        name: str,
        value: Any,
        idempotency_key: str | None = None,
        sent_at: float | None = None,
    ) -> bool:
        """Store signal ``name`` for flow detail ``flow_uuid`` durably; True if stored, False if a no-op.

        ``value`` is canonical JSON data already (:func:`flowkit.signals.send`
        checks it); ``sent_at`` is when it was sent, in clock seconds (None:
        now).  The signal is committed in its own transaction before this
        returns, whatever this connection buffers: a sender never waits for,
        nor makes durable, an engine's pending writes.

        A flow detail holds at most one signal per name.  If it already holds
        ``name`` with the same non-None ``idempotency_key``, nothing changes
        and False is returned; if it holds ``name`` otherwise,
        :class:`~flowkit.exceptions.SignalAlreadySent` is raised, naming the
        flow detail, the signal and when it was sent.  A flow detail that is
        not stored raises :class:`~flowkit.exceptions.NotFound`.  Concurrent
        senders of one (flow detail, name), in any process, get the answers
        they would get one after the other: exactly one stores it.
        """
        raise NotImplementedError("%s does not store signals" % (type(self).__name__,))

    def get_signals(self, flow_uuid: str, names: Iterable[str] | None = None) -> dict[str, Any]:
        """``{name: value}`` of the signals stored for flow detail ``flow_uuid`` (only ``names``, if given).

        Read in one query; a flow detail without signals (or not stored)
        gives ``{}``.
        """
        raise NotImplementedError("%s does not store signals" % (type(self).__name__,))

    def signals_after(self, seq: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        """``(seq, flow detail uuid, name)`` of the signals stored with a sequence number above ``seq``.

        In ``seq`` order, at most ``limit`` of them.  Sequence numbers grow
        with every signal stored and are never reused, and a signal becomes
        visible here only after every signal with a smaller number, so a
        poller that remembers the last ``seq`` it saw misses none (start
        from 0).
        """
        raise NotImplementedError("%s does not store signals" % (type(self).__name__,))

    @abc.abstractmethod
    def destroy_logbook(self, book_uuid: str) -> None:
        """Delete a logbook with everything in it (its flow details' signals too); NotFound if absent."""

    @abc.abstractmethod
    def clear_all(self) -> None:
        """Delete every logbook (and every signal)."""

    def close(self) -> None:
        """Release what this connection holds."""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(abc.ABC):
    """A place where logbooks live.

    ``max_result_bytes`` caps the JSON size of one atom's result (and of one
    revert's result): the engine checks it when the atom returns, before
    anything is written, and fails the atom with
    :class:`~flowkit.exceptions.ResultNotStorable` when it is over.  Backends
    take it as a keyword-only constructor option; None means no limit of its
    own.  :attr:`result_limit` is what the engine enforces: the smaller of it
    and :attr:`max_value_bytes`, what the store itself can take (on
    MySQL/MariaDB the server's ``max_allowed_packet``).
    """

    #: The configured cap on an encoded result, in bytes (None: no cap of its own).
    max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES

    @property
    def result_limit(self) -> int | None:
        """The cap the engine checks results against: ``min(max_result_bytes, max_value_bytes)``."""
        configured = self.max_result_bytes
        storable = self.max_value_bytes
        if configured is None:
            return storable
        if storable is None:
            return configured
        return min(configured, storable)

    @abc.abstractmethod
    def get_connection(self) -> Connection:
        """A connection to read and write through."""

    @property
    def max_value_bytes(self) -> int | None:
        """The largest value one atom detail can hold, in bytes of UTF-8 JSON; None if only memory limits it.

        A value is an atom's result or failure.  The engine may refuse a larger
        result before anything is written; a backend that finds a result it
        cannot store raises :class:`~flowkit.exceptions.ResultNotStorable`
        from :meth:`~flowkit.persistence.base.Connection.update_atom_details`, which fails that atom.
        """
        return None

    def close(self) -> None:
        """Release shared resources (engines, pools, files)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
