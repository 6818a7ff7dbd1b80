"""A listener that prints every flow and task event, in TaskFlow's words (handy while developing).

Each line is the one TaskFlow's ``PrintingListener`` prints, so what scrapes
TaskFlow's output reads flowkit's::

    <engine> has moved flow 'f' (uuid) into state 'RUNNING' from state 'PENDING'
    <engine> has moved task 'a' (uuid) into state 'SUCCESS' from state 'RUNNING' with result '3' (failure=False)

A failure is followed by its traceback.  Retry controllers are not printed
unless asked for (``retry_listen_for``), as in TaskFlow.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

from flowkit import states
from flowkit.listeners.base import ANY, DumpingListener, Event, mask_values

if TYPE_CHECKING:
    from flowkit.engines.engine import Engine

__all__ = ["PrintingListener"]

# The states whose line carries the atom's result (TaskFlow's FINISH_STATES).
_FINISHED = frozenset({states.SUCCESS, states.FAILURE, states.REVERTED, states.REVERT_FAILURE})


class PrintingListener(DumpingListener):
    """Prints one line per event to ``stream`` (default: standard output, or standard error with ``stderr=True``).

    The lines are TaskFlow's (see the module docstring).  Failures are followed
    by their traceback text unless ``show_tracebacks=False``; values under
    ``mask_keys`` in results show as ``***``; ``show_uuids=False`` leaves out
    the ``(uuid)``; ``show_inputs=True`` appends the flow's inputs to its
    RUNNING line.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        stream: TextIO | None = None,
        stderr: bool = False,
        show_tracebacks: bool = True,
        mask_keys: Iterable[str] = (),
        show_inputs: bool = False,
        show_uuids: bool = True,
        task_listen_for: Iterable[Any] = (ANY,),
        flow_listen_for: Iterable[Any] = (ANY,),
        retry_listen_for: Iterable[Any] = (),
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

    def format(self, event: Event) -> str:
        """TaskFlow's line for ``event``."""
        who = "%s '%s'" % (event.kind, event.name)
        if self.show_uuids:
            who += " (%s)" % (event.uuid,)
        # The engine as TaskFlow prints it: its class and address, the same all run long.
        engine = object.__repr__(self._engine)
        text = "%s has moved %s into state '%s' from state '%s'" % (engine, who, event.state, event.old_state)
        if event.kind != "flow" and event.state in _FINISHED:
            failure = event.failure
            if failure is not None:
                result = "Failure: %s: %s" % (_type_name(failure.exception_type_name), failure.exception_str)
            else:
                result = str(mask_values(event.result, self.mask_keys))
            text += " with result '%s' (failure=%s)" % (result, failure is not None)
        if self.show_inputs and event.kind == "flow" and event.state == states.RUNNING:
            inputs = self._engine.storage.injected
            if inputs:
                text += ", inputs: %r" % (mask_values(dict(inputs), self.mask_keys),)
        return text

    def dump(self, message: str, event: Event) -> None:
        failure = event.failure
        if self.show_tracebacks and failure is not None and failure.traceback_str:
            message += "\nTraceback (most recent call last):\n%s\n%s: %s" % (
                failure.traceback_str.rstrip(),
                _type_name(failure.exception_type_name),
                failure.exception_str,
            )
        stream = self.stream
        stream.write(message + "\n")
        stream.flush()


def _type_name(qualified: str) -> str:
    """An exception type's name as TaskFlow prints it: builtins without their module."""
    return qualified[len("builtins.") :] if qualified.startswith("builtins.") else qualified
