"""What the dashboard does when it may act: resume, retry, cancel and signal a flow.

Cancel and signal only store a request (:mod:`flowkit.cancellation`,
:mod:`flowkit.signals`), which the engine running the flow, wherever it runs,
acts on.  Resume and retry rebuild the flow from its registered factory and
run it in a thread of the server, parking it when it comes to a wait (a wait
holds no thread); :meth:`Actions.stop` suspends those runs when the server
stops, so they stay resumable.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from flowkit import cancellation, signals, states
from flowkit.exceptions import InvalidState, NotFound
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail
from flowkit.web._liveness import holder_alive
from flowkit.web._model import find_flow

__all__ = ["ACTIONS", "Actions"]

#: The actions ``allow_actions`` enables, by the name their URL carries.
ACTIONS = ("resume", "cancel", "retry", "signal")

_LOG = logging.getLogger("flowkit.web")
_FINISHED = (states.SUCCESS, states.REVERTED, states.FAILURE)


class Actions:
    """The actions on one backend's flows, and the runs this process started for them."""

    def __init__(self, backend: Backend, allowed_modules: Iterable[str]) -> None:
        self.backend = backend
        self.allowed_modules = tuple(allowed_modules)
        self._runs: dict[str, tuple[Any, threading.Thread]] = {}
        self._lock = threading.Lock()

    def do(self, action: str, ident: str, fields: Mapping[str, str]) -> str:
        """Do ``action`` on the flow detail ``ident`` (a uuid or its unique prefix); say what was done.

        Raises NotFound (no such flow or action), InvalidState (the flow is
        not in a state the action applies to), ValueError/TypeError (bad
        fields), or what the action's own API raises.
        """
        if action not in ACTIONS:
            raise NotFound("no action %r (known: %s)" % (action, ", ".join(ACTIONS)))
        _, fd = find_flow(self.backend, ident)
        if action == "cancel":
            return self._cancel(fd, fields)
        if action == "signal":
            return self._signal(fd, fields)
        if action == "resume" and fd.state in _FINISHED:
            raise InvalidState("flow %r (%s) already ended %s; nothing to resume" % (fd.name, fd.uuid, fd.state))
        if action == "retry" and fd.state != states.BROKEN:
            raise InvalidState(
                "flow %r (%s) is %s, not BROKEN: retry is for a flow whose retry policy gave up"
                % (fd.name, fd.uuid, fd.state)
            )
        return self._run(fd, retry=action == "retry")

    def _cancel(self, fd: FlowDetail, fields: Mapping[str, str]) -> str:
        revert = fields.get("mode", "revert") != "suspend"
        stored = cancellation.request(self.backend, fd.uuid, revert=revert, reason="cancelled from the dashboard")
        if not stored:
            return "flow %r (%s) has a cancel request pending already" % (fd.name, fd.uuid)
        return "asked flow %r (%s) to stop and %s" % (fd.name, fd.uuid, "revert" if revert else "suspend")

    def _signal(self, fd: FlowDetail, fields: Mapping[str, str]) -> str:
        name = fields.get("name", "")
        text = fields.get("value", "").strip()
        try:
            value = json.loads(text) if text else None
        except ValueError as error:
            raise ValueError("the value of signal %r is not JSON: %s" % (name, error)) from None
        key = fields.get("key") or None
        if not signals.send(self.backend, fd.uuid, name, value, idempotency_key=key):
            return "flow %r (%s) already got signal %r with key %r; nothing changed" % (fd.name, fd.uuid, name, key)
        return "sent signal %r to flow %r (%s)" % (name, fd.name, fd.uuid)

    def _run(self, fd: FlowDetail, *, retry: bool) -> str:
        from flowkit.engines import load_from_detail

        with self._lock:
            self._forget_finished()
            busy = fd.uuid in self._runs
        if busy or holder_alive(self.backend, fd.uuid):
            raise InvalidState("flow %r (%s) is being run by another engine" % (fd.name, fd.uuid))
        engine = load_from_detail(fd, backend=self.backend, allowed_modules=self.allowed_modules)
        if retry:
            engine.retry()

        def run() -> None:
            try:
                engine.run(park=True)
            except Exception as error:  # the flow's own end: its logbook records it
                _LOG.info("flow %r (%s) ended with %s: %s", fd.name, fd.uuid, type(error).__name__, error)

        thread = threading.Thread(target=run, name="flowkit-web-%s" % (fd.uuid,), daemon=True)
        with self._lock:
            if fd.uuid in self._runs:
                raise InvalidState("flow %r (%s) is being run by another engine" % (fd.name, fd.uuid))
            self._runs[fd.uuid] = (engine, thread)
            thread.start()
        return "%s flow %r (%s) in the dashboard's process" % ("retrying" if retry else "resuming", fd.name, fd.uuid)

    def _forget_finished(self) -> None:
        for uuid, (_, thread) in list(self._runs.items()):
            if not thread.is_alive():
                del self._runs[uuid]

    def stop(self, timeout: float = 10.0) -> None:
        """Suspend the runs this process started (they stay resumable) and wait up to ``timeout`` for each."""
        with self._lock:
            runs = list(self._runs.values())
        for engine, thread in runs:
            if thread.is_alive():
                engine.suspend()
        for _, thread in runs:
            thread.join(timeout)
