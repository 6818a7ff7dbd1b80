"""In-memory backend: logbooks live in this process only.

Use it for tests and for flows that need no resumption after a crash.  It
keeps its own copies of the records it is given and hands out copies of
what it keeps, so it isolates the engine the way a database does: what it
stores does not change when the engine later changes its records in place
(until they are written again), and changing a record read from it changes
nothing stored.

The copies are cheap because the values are canonical already
(:func:`flowkit.persistence.codec.canonical` made them when their atom
returned): an atom detail is kept as a tuple of its fields, in which only
containers are rebuilt (:func:`flowkit.persistence.codec.copy`) and nothing
is encoded, and a record is only built again when it is read.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flowkit import states
from flowkit.exceptions import NotFound
from flowkit.persistence import codec
from flowkit.persistence._meta import is_finished
from flowkit.persistence._signals import resend
from flowkit.persistence._structure import STRUCTURE_KEY, StoredForms, structure_of
from flowkit.persistence.base import DEFAULT_MAX_RESULT_BYTES, Backend, Connection, check_max_result_bytes
from flowkit.persistence.models import AtomDetail, FlowDetail, LogBook

__all__ = ["MemoryBackend"]

# An atom detail as stored: the uuid of its flow detail, then its fields in
# AtomDetail's order, an empty meta as None, a finished task's meta (only its
# progress, 1.0) as _DONE_META, and the state and intention as
# their plain strings (see _snapshot).  One tuple per atom: a big flow keeps
# many, and one that holds only strings, numbers and tuples of them is one the
# cyclic collector stops tracking (an enum member it would have to keep
# rescanning with every full collection).
_Snapshot = tuple[Any, ...]
# member -> its string (a plain string maps to itself through .get), and back.
_PLAIN_STATE: dict[Any, str] = {s: s.value for s in states.State}
_PLAIN_INTENTION: dict[Any, str] = {i: i.value for i in states.Intention}
_STATE_OF: dict[Any, Any] = {s.value: s for s in states.State}
_INTENTION_OF: dict[Any, Any] = {i.value: i for i in states.Intention}
# Stands for {"progress": 1.0}, the meta of every task that succeeded without
# reporting progress: no dict of its own per atom.  Compared by identity (a
# stored meta is None, a dict or a list, never this tuple).
_DONE_META = ("progress", 1.0)


class MemoryBackend(Backend):
    """Logbooks kept in dicts, shared by all connections of this backend."""

    def __init__(
        self, conf: dict[str, Any] | None = None, *, max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES
    ) -> None:
        self.conf = dict(conf or {})
        self.max_result_bytes = check_max_result_bytes(max_result_bytes)
        self.lock = threading.RLock()
        # The backend's own copies, which nothing outside this module holds.
        # Logbooks and flow details are kept without their children; the
        # children's uuids, in the order they were added, are kept beside them.
        self.books: dict[str, LogBook] = {}
        self.book_flows: dict[str, dict[str, None]] = {}  # book uuid -> its fd uuids
        self.flows: dict[str, tuple[str, FlowDetail]] = {}  # fd uuid -> (book uuid, fd)
        self.flow_atoms: dict[str, dict[str, None]] = {}  # fd uuid -> its ad uuids
        self.atoms: dict[str, _Snapshot] = {}  # ad uuid -> (fd uuid, *ad)
        # fd uuid -> {signal name: (seq, value, idempotency key, sent at)}
        self.signals: dict[str, dict[str, tuple[int, Any, str | None, float]]] = {}
        # (seq, fd uuid, name) of every stored signal, in seq order; the last seq handed out.
        self.signal_log: list[tuple[int, str, str]] = []
        self.signal_seq = 0

    def get_connection(self) -> MemoryConnection:
        return MemoryConnection(self)


_PLAIN = frozenset([str, int, float, bool, type(None)])


def _snapshot(fd_uuid: str, ad: AtomDetail) -> _Snapshot:
    """``ad`` of flow detail ``fd_uuid``, sharing no container with it (states, versions and Failures are immutable)."""
    copy = codec.copy
    results = ad.results
    revert_results = ad.revert_results
    meta = ad.meta
    return (
        fd_uuid,
        ad.name,
        ad.uuid,
        ad.atom_type,
        _PLAIN_STATE.get(ad.state, ad.state),
        _PLAIN_INTENTION.get(ad.intention, ad.intention),
        results if type(results) in _PLAIN else copy(results),
        ad.failure,
        revert_results if type(revert_results) in _PLAIN else copy(revert_results),
        ad.revert_failure,
        None if not meta else _DONE_META if is_finished(meta) else copy(meta),
        ad.version,
    )


def _unchanged(ad: AtomDetail, snapshot: _Snapshot) -> bool:
    """Whether ``snapshot`` holds what :func:`_snapshot` of ``ad`` would."""
    same = codec.same
    return (
        ad.state == snapshot[4]
        and ad.intention == snapshot[5]
        and ad.failure is snapshot[7]
        and ad.revert_failure is snapshot[9]
        and ad.version == snapshot[11]
        and ad.name == snapshot[1]
        and ad.atom_type == snapshot[3]
        and (ad.results is snapshot[6] or same(ad.results, snapshot[6]))
        and (ad.revert_results is snapshot[8] or same(ad.revert_results, snapshot[8]))
        and _same_meta(ad.meta, snapshot[10])
    )


def _same_meta(meta: dict[str, Any], stored: Any) -> bool:
    """Whether ``stored`` is what :func:`_snapshot` keeps of ``meta``."""
    if stored is None:
        return not meta
    if stored is _DONE_META:
        return is_finished(meta)
    return codec.same(meta, stored)


def _atom(snapshot: _Snapshot) -> AtomDetail:
    """A new AtomDetail of a snapshot, sharing no container with it."""
    copy = codec.copy
    _fd, name, uuid, atom_type, state, intention, results, failure, revert_results, revert_failure, meta, version = (
        snapshot
    )
    return AtomDetail(
        name,
        uuid,
        atom_type,
        _STATE_OF[state] if state in _STATE_OF else state,
        _INTENTION_OF[intention] if intention in _INTENTION_OF else intention,
        results if type(results) in _PLAIN else copy(results),
        failure,
        revert_results if type(revert_results) in _PLAIN else copy(revert_results),
        revert_failure,
        {} if meta is None else {"progress": 1.0} if meta is _DONE_META else copy(meta),
        version,
    )


def _seq(entry: tuple[int, str, str]) -> int:
    return entry[0]


def _meta(meta: dict[str, Any]) -> dict[str, Any]:
    # Not a shallow copy: that would share the store dict and the factory record.
    copied: dict[str, Any] = codec.copy(meta)
    return copied


class _EncodedStructure:
    """A stored ``meta["structure"]``, as JSON text: immutable, so records may share it.

    Encoding it (in C) costs a fraction of copying its entry per atom, and
    it is read back only when a flow detail is (_flow_meta).
    """

    __slots__ = ("text",)

    def __init__(self, structure: dict[str, Any]) -> None:
        self.text = json.dumps(structure)


#: The stored form of each structure (see flowkit.persistence._structure), made once per object.
_structure_form = StoredForms(_EncodedStructure)


def _flow_record(fd: FlowDetail) -> FlowDetail:
    """``fd`` as stored: without its atom details (kept apart), sharing no container with it."""
    meta = fd.meta
    structure = structure_of(meta)
    if structure is None:
        return FlowDetail(name=fd.name, uuid=fd.uuid, state=fd.state, meta=_meta(meta))
    stored = _meta({**meta, STRUCTURE_KEY: None})  # in the same order
    stored[STRUCTURE_KEY] = _structure_form(structure)
    return FlowDetail(name=fd.name, uuid=fd.uuid, state=fd.state, meta=stored)


def _flow_meta(stored: dict[str, Any]) -> dict[str, Any]:
    """A reader's copy of a stored flow detail's ``meta`` (see _flow_record)."""
    encoded = stored.get(STRUCTURE_KEY)
    if type(encoded) is not _EncodedStructure:
        return _meta(stored)
    meta = _meta({**stored, STRUCTURE_KEY: None})
    meta[STRUCTURE_KEY] = json.loads(encoded.text)
    return meta


class MemoryConnection(Connection):
    """A view on a :class:`MemoryBackend`."""

    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend

    @property
    def backend(self) -> MemoryBackend:
        return self._backend

    # -- reading: always new records ---------------------------------------------------

    def _flow(self, fd_uuid: str) -> FlowDetail:
        b = self._backend
        stored = b.flows[fd_uuid][1]
        fd = FlowDetail(name=stored.name, uuid=stored.uuid, state=stored.state, meta=_flow_meta(stored.meta))
        atoms = b.atoms
        for ad_uuid in b.flow_atoms[fd_uuid]:
            fd.add(_atom(atoms[ad_uuid]))
        return fd

    def _book(self, book_uuid: str) -> LogBook:
        b = self._backend
        stored = b.books[book_uuid]
        book = LogBook(
            name=stored.name,
            uuid=stored.uuid,
            meta=_meta(stored.meta),
            created_at=stored.created_at,
            updated_at=stored.updated_at,
        )
        for fd_uuid in b.book_flows[book_uuid]:
            book.add(self._flow(fd_uuid))
        return book

    def get_logbook(self, book_uuid: str, lazy: bool = False) -> LogBook:
        with self._backend.lock:
            if book_uuid not in self._backend.books:
                raise NotFound("no logbook with uuid %r" % (book_uuid,))
            return self._book(book_uuid)

    def get_logbooks(self, lazy: bool = False) -> Iterator[LogBook]:
        with self._backend.lock:
            books = [self._book(book_uuid) for book_uuid in self._backend.books]
        yield from books

    def get_flows_for_book(self, book_uuid: str, lazy: bool = False) -> Iterator[FlowDetail]:
        yield from self.get_logbook(book_uuid)

    def get_flow_details(self, fd_uuid: str, lazy: bool = False) -> FlowDetail:
        with self._backend.lock:
            if fd_uuid not in self._backend.flows:
                raise NotFound("no flow detail with uuid %r" % (fd_uuid,))
            return self._flow(fd_uuid)

    def get_atom_states(self, fd_uuid: str) -> dict[str, tuple[str, Any, Any]]:
        # Read from the snapshots, without building the atom details.
        b = self._backend
        with b.lock:
            if fd_uuid not in b.flows:
                raise NotFound("no flow detail with uuid %r" % (fd_uuid,))
            atoms = b.atoms
            found = {}
            for ad_uuid in b.flow_atoms[fd_uuid]:
                snapshot = atoms[ad_uuid]
                # The plain strings, as the SQL backend reads them: equal to the
                # states, and tuples of strings the cyclic collector stops tracking.
                found[snapshot[1]] = (ad_uuid, snapshot[4], snapshot[5])
            return found

    def has_flow_detail(self, fd_uuid: str) -> bool:
        return fd_uuid in self._backend.flows

    def get_atom_details(self, ad_uuid: str) -> AtomDetail:
        b = self._backend
        with b.lock:
            stored = b.atoms.get(ad_uuid)
            if stored is None or stored[0] not in b.flows:
                raise NotFound("no atom detail with uuid %r" % (ad_uuid,))
            return _atom(stored)

    # -- writing: always copies --------------------------------------------------------

    def _store_flow(self, book_uuid: str, fd: FlowDetail) -> None:
        """Store a copy of ``fd`` and its atom details in logbook ``book_uuid``; hold the lock."""
        b = self._backend
        b.flows[fd.uuid] = (book_uuid, _flow_record(fd))
        b.book_flows[book_uuid][fd.uuid] = None
        order = b.flow_atoms.setdefault(fd.uuid, {})
        atoms = b.atoms
        for ad in fd:
            stored = atoms.get(ad.uuid)
            # The engine writes each atom as it changes, so most are unchanged
            # here; comparing them is cheaper than copying them again.
            if stored is None or stored[0] != fd.uuid or not _unchanged(ad, stored):
                order[ad.uuid] = None
                atoms[ad.uuid] = _snapshot(fd.uuid, ad)

    def save_logbook(self, book: LogBook) -> LogBook:
        b = self._backend
        with b.lock:
            b.books[book.uuid] = LogBook(
                name=book.name,
                uuid=book.uuid,
                meta=_meta(book.meta),
                created_at=book.created_at,
                updated_at=book.updated_at,
            )
            b.book_flows.setdefault(book.uuid, {})
            for fd in book:
                self._store_flow(book.uuid, fd)
        return book

    def create_logbook(self, book: LogBook) -> bool:
        b = self._backend
        with b.lock:
            if book.uuid in b.books or any(fd.uuid in b.flows for fd in book):
                return False
            self.save_logbook(book)
        return True

    def _book_of(self, flow_detail: FlowDetail) -> str:
        """The uuid of the logbook ``flow_detail`` was saved in; hold the lock."""
        try:
            return self._backend.flows[flow_detail.uuid][0]
        except KeyError:
            raise NotFound(
                "flow detail %r (%s) was never saved in a logbook" % (flow_detail.name, flow_detail.uuid)
            ) from None

    def update_flow_details(self, flow_detail: FlowDetail) -> FlowDetail:
        b = self._backend
        with b.lock:
            self._store_flow(self._book_of(flow_detail), flow_detail)
        return flow_detail

    def update_flow_state(self, flow_detail: FlowDetail) -> FlowDetail:
        b = self._backend
        with b.lock:
            b.flows[flow_detail.uuid] = (self._book_of(flow_detail), _flow_record(flow_detail))
        return flow_detail

    def update_atom_details(self, atom_detail: AtomDetail) -> AtomDetail:
        # The hot path of an in-memory run: one snapshot of one atom detail,
        # stored without the lock (one dict assignment is atomic).  A write
        # racing the destruction of its logbook may leave its entry behind;
        # get_atom_details ignores an entry whose flow detail is gone.
        atoms = self._backend.atoms
        stored = atoms.get(atom_detail.uuid)
        if stored is None:
            raise NotFound("atom detail %r (%s) belongs to no saved flow detail" % (atom_detail.name, atom_detail.uuid))
        atoms[atom_detail.uuid] = _snapshot(stored[0], atom_detail)
        return atom_detail

    def destroy_logbook(self, book_uuid: str) -> None:
        b = self._backend
        with b.lock:
            if b.books.pop(book_uuid, None) is None:
                raise NotFound("no logbook with uuid %r" % (book_uuid,))
            gone = False
            for fd_uuid in b.book_flows.pop(book_uuid, {}):
                b.flows.pop(fd_uuid, None)
                for ad_uuid in b.flow_atoms.pop(fd_uuid, {}):
                    b.atoms.pop(ad_uuid, None)
                gone = b.signals.pop(fd_uuid, None) is not None or gone
            if gone:
                b.signal_log = [entry for entry in b.signal_log if entry[1] in b.signals]

    def clear_all(self) -> None:
        b = self._backend
        with b.lock:
            for table in (b.books, b.book_flows, b.flows, b.flow_atoms, b.atoms, b.signals):
                table.clear()
            b.signal_log = []

    # -- signals ---------------------------------------------------------------------------

    def send_signal(
        self,
        flow_uuid: str,
        name: str,
        value: Any,
        idempotency_key: str | None = None,
        sent_at: float | None = None,
    ) -> bool:
        b = self._backend
        with b.lock:
            if flow_uuid not in b.flows:
                raise NotFound("no flow detail with uuid %r to send signal %r to" % (flow_uuid, name))
            held = b.signals.setdefault(flow_uuid, {})
            stored = held.get(name)
            if stored is not None:
                return resend(flow_uuid, name, idempotency_key, stored[2], stored[3])
            b.signal_seq += 1
            when = time.time() if sent_at is None else float(sent_at)
            held[name] = (b.signal_seq, codec.copy(value), idempotency_key, when)
            b.signal_log.append((b.signal_seq, flow_uuid, name))
        return True

    def get_signals(self, flow_uuid: str, names: Iterable[str] | None = None) -> dict[str, Any]:
        b = self._backend
        with b.lock:
            held = b.signals.get(flow_uuid, {})
            wanted = held if names is None else [n for n in names if n in held]
            return {name: codec.copy(held[name][1]) for name in wanted}

    def signals_after(self, seq: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        b = self._backend
        with b.lock:
            start = bisect.bisect_right(b.signal_log, seq, key=_seq)
            return b.signal_log[start : start + limit]
