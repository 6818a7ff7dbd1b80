"""Turn a plain function into a task: ``@as_task(provides="total")``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, overload

from flowkit.atom import ProvidesSpec, RebindSpec, RequiresSpec
from flowkit.policies import RetryPolicy
from flowkit.task import FunctorTask

__all__ = ["as_task", "TaskFactory"]


class TaskFactory:
    """What ``@as_task`` returns: call it to get a task running the function.

    Each call makes a new task; options given to the call (``name``,
    ``provides``, ``rebind``, ``inject``, ...) override the decorator's.
    The function stays available as ``.fn``.
    """

    def __init__(self, fn: Callable[..., Any], defaults: dict[str, Any]) -> None:
        self.fn = fn
        self._defaults = defaults
        functools.update_wrapper(self, fn)

    def __call__(
        self,
        name: str | None = None,
        *,
        provides: ProvidesSpec = None,
        requires: RequiresSpec = None,
        rebind: RebindSpec = None,
        inject: Mapping[str, Any] | None = None,
        revert: Callable[..., Any] | None = None,
        priority: int | None = None,
        retry_policy: RetryPolicy | None = None,
        heartbeat_timeout: float | None = None,
    ) -> FunctorTask:
        options = dict(self._defaults)
        overrides = {
            "name": name,
            "provides": provides,
            "requires": requires,
            "rebind": rebind,
            "inject": inject,
            "revert": revert,
            "priority": priority,
            "retry_policy": retry_policy,
            "heartbeat_timeout": heartbeat_timeout,
        }
        options.update({k: v for k, v in overrides.items() if v is not None})
        if options.get("name") is None:
            options["name"] = self.fn.__name__
        options.setdefault("priority", 0)
        return FunctorTask(execute=self.fn, **options)

    def __repr__(self) -> str:
        return "<task factory %s>" % (self.fn.__qualname__,)


@overload
def as_task(fn: Callable[..., Any]) -> TaskFactory: ...


@overload
def as_task(
    fn: None = None,
    *,
    name: str | None = None,
    provides: ProvidesSpec = None,
    requires: RequiresSpec = None,
    rebind: RebindSpec = None,
    inject: Mapping[str, Any] | None = None,
    revert: Callable[..., Any] | None = None,
    priority: int = 0,
    retry_policy: RetryPolicy | None = None,
    heartbeat_timeout: float | None = None,
) -> Callable[[Callable[..., Any]], TaskFactory]: ...


def as_task(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    provides: ProvidesSpec = None,
    requires: RequiresSpec = None,
    rebind: RebindSpec = None,
    inject: Mapping[str, Any] | None = None,
    revert: Callable[..., Any] | None = None,
    priority: int = 0,
    retry_policy: RetryPolicy | None = None,
    heartbeat_timeout: float | None = None,
) -> Any:
    """Make a task factory from a function; requirements come from its signature.

    ::

        @as_task(provides="total", revert=refund)
        def charge(amount, card): ...

        flow.add(charge())          # a task named "charge"
        flow.add(charge("charge2", rebind={"amount": "fee"}))

    ``revert`` receives the same arguments plus ``result`` and
    ``flow_failures`` when it accepts them.  ``retry_policy`` (a
    :class:`~flowkit.policies.RetryPolicy`) retries each task it makes when it fails;
    ``heartbeat_timeout`` (seconds) fails an attempt that goes that long
    without a heartbeat (a function beats with :func:`flowkit.task.heartbeat`
    and reads :func:`flowkit.task.current_context`).
    """
    defaults = {
        "name": name,
        "provides": provides,
        "requires": requires,
        "rebind": rebind,
        "inject": inject,
        "revert": revert,
        "priority": priority,
        "retry_policy": retry_policy,
        "heartbeat_timeout": heartbeat_timeout,
    }

    def decorate(function: Callable[..., Any]) -> TaskFactory:
        if not callable(function):
            raise TypeError("as_task decorates functions, got %r" % (function,))
        factory = TaskFactory(function, defaults)
        factory()  # fail at decoration time, not in a flow, if the options are wrong
        return factory

    if fn is not None:
        return decorate(fn)
    return decorate
