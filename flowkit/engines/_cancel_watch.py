"""Watching the logbook for cancel requests (:mod:`flowkit.cancellation`) while a run goes on.

One :class:`CancelWatch` per ``run()``, all of them served by one thread per
process (started with the first, kept for the process's life): every
:data:`~flowkit.cancellation.CANCEL_POLL` seconds, and at once when a
request is made in this process (each watch subscribes to its flow detail's
signals), it asks, through a connection of its own that it closes again, for
the next request of every flow detail being run.  Being a thread, it costs the atoms
nothing, and it sees a request while a serial engine's thread is inside a
long task; being one thread, a run pays only for registering its watch.
What it finds it hands to the watch's ``apply`` (the engine's cancel or
suspend, both safe from any thread), once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flowkit import exceptions as exc
from flowkit.cancellation import CANCEL_POLL, CancelRequest, pending_request
from flowkit.persistence.base import Backend, Connection
from flowkit.persistence.models import FlowDetail

__all__ = ["CancelWatch"]

_log = logging.getLogger(__name__)


class _Watcher:
    """The thread that serves every :class:`CancelWatch` of this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.busy = threading.Lock()
        self.watches: set[CancelWatch] = set()
        self.look = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, watch: CancelWatch) -> None:
        with self.lock:
            self.watches.add(watch)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="flowkit-cancel-watch", daemon=True)
                self.thread.start()

    def remove(self, watch: CancelWatch) -> None:
        with self.busy, self.lock:
            self.watches.discard(watch)

    def _loop(self) -> None:
        while True:
            self.look.wait(CANCEL_POLL)
            self.look.clear()
            with self.lock:
                backends = {id(watch.backend): watch.backend for watch in self.watches}
            for backend in backends.values():
                # Held while the backend is used: a watch that stops waits for
                # this, so once a run is over nothing here touches its backend
                # (which its owner may then close).
                with self.busy:
                    with self.lock:
                        watches = [watch for watch in self.watches if watch.backend is backend]
                    if watches:
                        self._check(backend, watches)

    def _check(self, backend: Backend, watches: list[CancelWatch]) -> None:
        try:
            conn = backend.get_connection()
        except Exception as error:
            _log.debug("looking for cancel requests: no connection to %r: %s", backend, error)
            return
        try:
            for watch in watches:
                try:
                    watch.check(conn)
                except exc.StorageFailure as error:
                    # The engine's own writes report an outage; keep looking.
                    _log.debug("looking for cancel requests of flow detail %s failed: %s", watch.uuid, error)
                except Exception:  # must not end the thread every run relies on
                    _log.exception("looking for cancel requests of flow detail %s failed", watch.uuid)
        finally:
            try:
                conn.close()
            except Exception:  # pragma: no cover - closing after an outage
                _log.debug("closing a cancel watch connection failed", exc_info=True)


_WATCHER = _Watcher()


class CancelWatch:
    """Looks for the next cancel request of one flow detail, from :meth:`start` until :meth:`stop`."""

    def __init__(self, backend: Backend, flow_detail: FlowDetail, apply: Callable[[CancelRequest], bool]) -> None:
        self.backend = backend
        self.uuid = flow_detail.uuid
        self._flow_detail = flow_detail
        self._apply = apply
        self._stopped = False
        self._unsubscribe: Callable[[], None] | None = None
        #: The request acted on during this run (the engine records it in the flow detail), or None.
        self.applied: CancelRequest | None = None

    def check(self, conn: Connection) -> CancelRequest | None:
        """Look once, through ``conn``; apply what is found.  Returns the request if one was applied."""
        if self.applied is not None or self._stopped:
            return None
        fd = self._flow_detail
        found = pending_request(conn, fd.uuid, fd.meta)
        if found is not None and self._apply(found):
            self.applied = found
            return found
        return None

    def start(self) -> None:
        """Start looking in the background."""
        from flowkit.signals import subscribe

        self._unsubscribe = subscribe(self.uuid, _WATCHER.look.set)
        _WATCHER.add(self)

    def stop(self) -> None:
        """Stop looking; waits for a look under way at this watch's backend, which is not used here again."""
        self._stopped = True
        _WATCHER.remove(self)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
