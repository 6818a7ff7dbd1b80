"""In-memory backend: logbooks live in this process only.

It keeps the very records it is given (no copies), which is what makes an
in-memory run cheap; use it for tests and for flows that need no resumption
after a crash.  Results in those records are never the task's own objects:
the engine stores the canonical copy :func:`flowkit.persistence.codec.canonical`
makes (lists for tuples, fresh containers), the same value a SQL backend
reads back, so a run in memory sees what a resumed run would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from flowkit.exceptions import NotFound
from flowkit.persistence.base import DEFAULT_MAX_RESULT_BYTES, Backend, Connection, check_max_result_bytes
from flowkit.persistence.models import AtomDetail, FlowDetail, LogBook

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """Logbooks kept in a dict, shared by all connections of this backend."""

    def __init__(
        self, conf: dict[str, Any] | None = None, *, max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES
    ) -> None:
        self.conf = dict(conf or {})
        self.max_result_bytes = check_max_result_bytes(max_result_bytes)
        self.lock = threading.RLock()
        self.books: dict[str, LogBook] = {}
        self.flows: dict[str, tuple[str, FlowDetail]] = {}  # fd uuid -> (book uuid, fd)
        self.atoms: dict[str, tuple[str, AtomDetail]] = {}  # ad uuid -> (fd uuid, ad)

    def get_connection(self) -> MemoryConnection:
        return MemoryConnection(self)


class MemoryConnection(Connection):
    """A view on a :class:`MemoryBackend`."""

    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend

    @property
    def backend(self) -> MemoryBackend:
        return self._backend

    def _index_flow(self, book_uuid: str, fd: FlowDetail) -> None:
        b = self._backend
        b.flows[fd.uuid] = (book_uuid, fd)
        for ad in fd:
            b.atoms[ad.uuid] = (fd.uuid, ad)

    def save_logbook(self, book: LogBook) -> LogBook:
        with self._backend.lock:
            self._backend.books[book.uuid] = book
            for fd in book:
                self._index_flow(book.uuid, fd)
        return book

    def get_logbook(self, book_uuid: str, lazy: bool = False) -> LogBook:
        try:
            return self._backend.books[book_uuid]
        except KeyError:
            raise NotFound("no logbook with uuid %r" % (book_uuid,)) from None

    def get_logbooks(self, lazy: bool = False) -> Iterator[LogBook]:
        yield from list(self._backend.books.values())

    def get_flows_for_book(self, book_uuid: str, lazy: bool = False) -> Iterator[FlowDetail]:
        yield from self.get_logbook(book_uuid)

    def get_flow_details(self, fd_uuid: str, lazy: bool = False) -> FlowDetail:
        try:
            return self._backend.flows[fd_uuid][1]
        except KeyError:
            raise NotFound("no flow detail with uuid %r" % (fd_uuid,)) from None

    def get_atom_details(self, ad_uuid: str) -> AtomDetail:
        try:
            return self._backend.atoms[ad_uuid][1]
        except KeyError:
            raise NotFound("no atom detail with uuid %r" % (ad_uuid,)) from None

    def update_flow_details(self, flow_detail: FlowDetail) -> FlowDetail:
        with self._backend.lock:
            try:
                book_uuid = self._backend.flows[flow_detail.uuid][0]
            except KeyError:
                raise NotFound(
                    "flow detail %r (%s) was never saved in a logbook" % (flow_detail.name, flow_detail.uuid)
                ) from None
            self._index_flow(book_uuid, flow_detail)
        return flow_detail

    def update_atom_details(self, atom_detail: AtomDetail) -> AtomDetail:
        # The hot path of an in-memory run: the detail is already the stored
        # object once its flow detail was saved, so there is nothing to do.
        atoms = self._backend.atoms
        if atom_detail.uuid not in atoms:
            raise NotFound(
                "atom detail %r (%s) belongs to no saved flow detail" % (atom_detail.name, atom_detail.uuid)
            )
        return atom_detail

    def destroy_logbook(self, book_uuid: str) -> None:
        with self._backend.lock:
            book = self._backend.books.pop(book_uuid, None)
            if book is None:
                raise NotFound("no logbook with uuid %r" % (book_uuid,))
            for fd in book:
                self._backend.flows.pop(fd.uuid, None)
                for ad in fd:
                    self._backend.atoms.pop(ad.uuid, None)

    def clear_all(self) -> None:
        with self._backend.lock:
            self._backend.books.clear()
            self._backend.flows.clear()
            self._backend.atoms.clear()
