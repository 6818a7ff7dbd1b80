"""A listener that records every event as a short string, for tests and examples.

::

    with CaptureListener(engine) as capture:
        engine.run()
    assert capture.values == [
        "order.f RUNNING",
        "reserve.t RUNNING",
        "reserve.t SUCCESS(R-1)",
        "order.f SUCCESS",
    ]

Tasks end in ``.t``, retry controllers in ``.r`` and flows in ``.f``; an
event that carries a result (SUCCESS, FAILURE, REVERTED, REVERT_FAILURE)
shows it in parentheses, a failure as ``Failure: ExceptionType: message``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flowkit.listeners.base import ANY, Listener
from flowkit.types.failure import Failure

if TYPE_CHECKING:
    from flowkit.engines.engine import Engine

__all__ = ["CaptureListener", "FLOW", "TASK", "RETRY"]

#: Suffix of a flow's name in captured values.
FLOW = ".f"
#: Suffix of a task's name in captured values.
TASK = ".t"
#: Suffix of a retry controller's name in captured values.
RETRY = ".r"


# kind -> (the details key naming the atom or flow, the suffix after that name)
_NAMES = {"flow": ("flow_name", FLOW), "task": ("task_name", TASK), "retry": ("retry_name", RETRY)}


def _result_text(result: Any) -> str:
    if isinstance(result, Failure):
        return "Failure: %s: %s" % (result.exception_type_name.rsplit(".", 1)[-1], result.exception_str)
    return str(result)


class CaptureListener(Listener):
    """Appends ``"<name>.<t|r|f> <STATE>[(<result>)]"`` to :attr:`values` for each event.

    ``capture_flow``/``capture_task``/``capture_retry`` switch a kind off;
    ``skip_flows``/``skip_tasks``/``skip_retries`` leave out names;
    ``capture_results=False`` leaves results out.  ``values`` may be a list
    to append to (shared between several listeners, say).
    """

    #: The kind of a flow event, as ``_format_capture()`` is given it (TaskFlow's constant).
    FLOW = "flow"
    #: The kind of a task event.
    TASK = "task"
    #: The kind of a retry controller event.
    RETRY = "retry"

    def __init__(
        self,
        engine: Engine,
        *,
        capture_flow: bool = True,
        capture_task: bool = True,
        capture_retry: bool = True,
        capture_results: bool = True,
        skip_flows: Iterable[str] = (),
        skip_tasks: Iterable[str] = (),
        skip_retries: Iterable[str] = (),
        values: list[Any] | None = None,
        task_listen_for: Iterable[Any] = (ANY,),
        flow_listen_for: Iterable[Any] = (ANY,),
        retry_listen_for: Iterable[Any] = (ANY,),
    ) -> None:
        super().__init__(
            engine, task_listen_for=task_listen_for, flow_listen_for=flow_listen_for, retry_listen_for=retry_listen_for
        )
        self.capture_flow = capture_flow
        self.capture_task = capture_task
        self.capture_retry = capture_retry
        self.capture_results = capture_results
        self.skip_flows = frozenset(skip_flows)
        self.skip_tasks = frozenset(skip_tasks)
        self.skip_retries = frozenset(skip_retries)
        self.values: list[Any] = values if values is not None else []
        """The captured events, oldest first."""

    def _format_capture(self, kind: str, state: Any, details: Mapping[str, Any]) -> Any:
        """What one event appends to :attr:`values`; ``kind`` is :attr:`FLOW`, :attr:`TASK` or :attr:`RETRY`.

        Override it (as TaskFlow code does) to capture something else, e.g.
        ``(kind, state, details)`` tuples.
        """
        name, suffix = _NAMES[kind]
        text = "%s%s %s" % (details[name], suffix, state)
        if self.capture_results and "result" in details:
            text += "(%s)" % (_result_text(details["result"]),)
        return text

    def _capture(self, kind: str, state: Any, details: Mapping[str, Any]) -> None:
        self.values.append(self._format_capture(kind, state, details))

    def on_flow_event(self, state: Any, details: Mapping[str, Any]) -> None:
        name = details["flow_name"]
        if self.capture_flow and name not in self.skip_flows:
            self._capture(self.FLOW, state, details)

    def on_task_event(self, state: Any, details: Mapping[str, Any]) -> None:
        name = details["task_name"]
        if self.capture_task and name not in self.skip_tasks:
            self._capture(self.TASK, state, details)

    def on_retry_event(self, state: Any, details: Mapping[str, Any]) -> None:
        name = details["retry_name"]
        if self.capture_retry and name not in self.skip_retries:
            self._capture(self.RETRY, state, details)
