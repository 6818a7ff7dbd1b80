"""Listeners that write every flow, task and retry event to a stdlib logger.

:class:`LoggingListener` logs everything at one level (DEBUG by default);
:class:`DynamicLoggingListener` picks the level from what happened, so a
failed task stands out at WARNING with its traceback while routine
transitions stay at DEBUG.  Both hide the values of ``mask_keys`` in results
and inputs::

    with DynamicLoggingListener(engine, mask_keys={"password", "card_number"}):
        engine.run()

Each record also carries the event as fields (``extra=``), for a JSON or
structured log formatter to pick up: ``flow_uuid``, ``flow_name``, ``atom``
and ``atom_uuid`` (None on a flow's own events), ``state`` and ``old_state``
(strings; ``old_state`` may be None), e.g. ``record.flow_uuid``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flowkit import states
from flowkit.listeners.base import ANY, DumpingListener, Event

if TYPE_CHECKING:
    from flowkit.engines.engine import Engine

__all__ = ["LoggingListener", "DynamicLoggingListener"]

LOG = logging.getLogger(__name__)

# States that mean work is being undone: worth more than DEBUG in a log.
_UNDOING = frozenset({states.REVERTING, states.REVERTED, states.RETRYING})
_FAILED = frozenset({states.FAILURE, states.REVERT_FAILURE})


class LoggingListener(DumpingListener):
    """Logs each event as one line to ``log`` (default: this module's logger) at ``level``."""

    def __init__(
        self,
        engine: Engine,
        *,
        log: logging.Logger | None = None,
        level: int = logging.DEBUG,
        mask_keys: Iterable[str] = (),
        show_inputs: bool = True,
        show_uuids: bool = True,
        task_listen_for: Iterable[Any] = (ANY,),
        flow_listen_for: Iterable[Any] = (ANY,),
        retry_listen_for: Iterable[Any] = (ANY,),
    ) -> None:
        super().__init__(
            engine,
            mask_keys=mask_keys,
            show_inputs=show_inputs,
            show_uuids=show_uuids,
            task_listen_for=task_listen_for,
            flow_listen_for=flow_listen_for,
            retry_listen_for=retry_listen_for,
        )
        self.log = log if log is not None else LOG
        self.level = level

    def fields(self, event: Event) -> dict[str, str | None]:
        """The structured fields of ``event``'s record (see :mod:`flowkit.listeners.logging`)."""
        flow = self._engine.storage.flow_detail
        atom = event.kind != "flow"
        return {
            "flow_uuid": flow.uuid,
            "flow_name": flow.name,
            "atom": event.name if atom else None,
            "atom_uuid": event.uuid if atom else None,
            "state": event.state,
            "old_state": event.old_state,
        }

    def dump(self, message: str, event: Event) -> None:
        # "%s" keeps a result containing "%" from being read as a format string.
        self.log.log(self.level, "%s", message, extra=self.fields(event))


class DynamicLoggingListener(LoggingListener):
    """Logs at a level chosen by the event.

    Failures (``FAILURE``, ``REVERT_FAILURE``, a flow ending ``FAILURE``) go
    out at ``failure_level`` with the failure's traceback text; undoing work
    (``REVERTING``, ``REVERTED``, ``RETRYING``) at ``revert_level``; everything
    else at ``level``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        log: logging.Logger | None = None,
        level: int = logging.DEBUG,
        revert_level: int = logging.INFO,
        failure_level: int = logging.WARNING,
        mask_keys: Iterable[str] = (),
        show_inputs: bool = True,
        show_uuids: bool = True,
        task_listen_for: Iterable[Any] = (ANY,),
        flow_listen_for: Iterable[Any] = (ANY,),
        retry_listen_for: Iterable[Any] = (ANY,),
    ) -> None:
        super().__init__(
            engine,
            log=log,
            level=level,
            mask_keys=mask_keys,
            show_inputs=show_inputs,
            show_uuids=show_uuids,
            task_listen_for=task_listen_for,
            flow_listen_for=flow_listen_for,
            retry_listen_for=retry_listen_for,
        )
        self.revert_level = revert_level
        self.failure_level = failure_level

    def level_for(self, event: Event) -> int:
        """The level ``event`` is logged at."""
        if event.state in _FAILED:
            return self.failure_level
        if event.state in _UNDOING:
            return self.revert_level
        return self.level

    def dump(self, message: str, event: Event) -> None:
        level = self.level_for(event)
        if not self.log.isEnabledFor(level):
            return
        failure = event.failure
        if failure is not None and failure.traceback_str:
            message += "\nTraceback (most recent call last):\n" + failure.traceback_str.rstrip()
        self.log.log(level, "%s", message, extra=self.fields(event))
