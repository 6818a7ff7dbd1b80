"""A listener that prints every flow, task and retry event (handy while developing)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

from flowkit.listeners.base import ANY, DumpingListener, Event

if TYPE_CHECKING:
    from flowkit.engines.engine import Engine

__all__ = ["PrintingListener"]


class PrintingListener(DumpingListener):
    """Prints one line per event to ``stream`` (default: standard output, or standard error with ``stderr=True``).

    Failures are followed by their traceback text when ``show_tracebacks``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        stream: TextIO | None = None,
        stderr: bool = False,
        show_tracebacks: bool = False,
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
        self._stream = stream
        self._stderr = stderr
        self.show_tracebacks = show_tracebacks

    @property
    def stream(self) -> TextIO:
        """Where the lines go (looked up at each event, so output capture keeps working)."""
        if self._stream is not None:
            return self._stream
        return sys.stderr if self._stderr else sys.stdout

    def dump(self, message: str, event: Event) -> None:
        failure = event.failure
        if self.show_tracebacks and failure is not None and failure.traceback_str:
            message += "\nTraceback (most recent call last):\n" + failure.traceback_str.rstrip()
        stream = self.stream
        stream.write(message + "\n")
        stream.flush()
