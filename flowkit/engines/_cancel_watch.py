"""Watching the logbook for cancel requests (:mod:`flowkit.cancellation`) while a run goes on.

One :class:`CancelWatch` per ``run()``: a thread of its own, with a
connection of its own, asks for the next request every
:data:`~flowkit.cancellation.CANCEL_POLL` seconds, and at once when a
request is made in this process (it subscribes to the flow detail's
signals).  Being a thread, it costs the atoms nothing, and it sees a request
while a serial engine's thread is inside a long task.  What it finds it
hands to ``apply`` (the engine's cancel or suspend, both safe from any
thread), once.
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


class CancelWatch:
    """Looks for the next cancel request of one flow detail until :meth:`stop`."""

    def __init__(self, backend: Backend, flow_detail: FlowDetail, apply: Callable[[CancelRequest], bool]) -> None:
        self._backend = backend
        self._flow_detail = flow_detail
        self._apply = apply
        self._look = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        #: The request acted on during this run (the engine records it in the flow detail), or None.
        self.applied: CancelRequest | None = None

    def check(self, conn: Connection) -> CancelRequest | None:
        """Look once, through ``conn``; apply what is found.  Returns the request if one was applied."""
        if self.applied is not None:
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

        self._unsubscribe = subscribe(self._flow_detail.uuid, self._look.set)
        self._thread = threading.Thread(
            target=self._loop, name="flowkit-cancel-watch-%s" % (self._flow_detail.uuid,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop looking (without waiting for a query under way: it applies nothing once stopped)."""
        self._stopped = True
        self._look.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _loop(self) -> None:
        conn: Connection | None = None
        try:
            while not self._stopped and self.applied is None:
                self._look.wait(CANCEL_POLL)
                self._look.clear()
                if self._stopped:
                    return
                try:
                    if conn is None:
                        conn = self._backend.get_connection()
                    self.check(conn)
                except exc.StorageFailure as error:
                    # The engine's own writes will report an outage; keep looking.
                    _log.debug(
                        "looking for cancel requests of flow detail %s failed: %s", self._flow_detail.uuid, error
                    )
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # pragma: no cover - closing after an outage
                    _log.debug("closing the cancel watch's connection failed", exc_info=True)
