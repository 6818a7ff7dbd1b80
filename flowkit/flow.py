"""The flow base class: a named container of atoms and other flows.

Patterns (:mod:`flowkit.patterns`) only describe structure; they never run
anything.  The engine's compiler turns a flow tree into one execution graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Union

from flowkit._names import check_name
from flowkit.atom import Atom, signature_of
from flowkit.policies import RetryPolicy
from flowkit.task import Task

__all__ = ["Flow", "Item"]

Item = Union[Atom, "Flow"]


class Flow:
    """Base of the three patterns: linear, unordered and graph flows.

    ``retry`` optionally attaches a :class:`~flowkit.retry.Retry` controller
    that decides what happens when an atom of this flow fails.
    ``retry_policy`` (a :class:`~flowkit.policies.RetryPolicy`) is the policy of every
    task inside this flow, nested flows included, that sets none of its own
    (a nested flow's own ``retry_policy`` wins inside it).

    ``revert_with`` optionally gives the flow one undo of its own, run
    instead of its atoms' reverts when the flow is reverted: a
    :class:`~flowkit.task.Task` (only its ``revert`` is used) called with ``results``
    (symbol -> value of what the flow's atoms provided so far) and
    ``flow_failures`` (atom name -> the failures that caused the revert),
    as far as its signature names them, or a callable called as
    ``fn(results, flow_failures)``.  It runs once, as the hidden atom
    ``"<flow name>.revert_with"`` with its own atom detail in the logbook.
    """

    def __init__(
        self,
        name: str,
        retry: Any = None,
        *,
        retry_policy: RetryPolicy | None = None,
        revert_with: Task | Callable[..., Any] | None = None,
    ) -> None:
        from flowkit.retry import Retry

        check_name(name, "flow name")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError("flow %r: retry must be a flowkit.retry.Retry, got %s" % (name, type(retry).__name__))
        self._name = name
        self._retry = retry
        self._retry_policy = RetryPolicy.check(retry_policy, "flow %r" % (name,))
        self._children: list[Item] = []
        self._revert_with = revert_with
        self._revert_with_atom: _RevertWith | None = None
        if revert_with is not None:
            if isinstance(revert_with, Atom) and not isinstance(revert_with, Task):
                raise TypeError(
                    "flow %r: revert_with must be a task or a callable, got the %s %r"
                    % (name, type(revert_with).__name__, revert_with.name)
                )
            if isinstance(revert_with, type) or (not callable(revert_with) and not isinstance(revert_with, Task)):
                raise TypeError(
                    "flow %r: revert_with must be a task (an instance) or a callable, got %r" % (name, revert_with)
                )
            self._revert_with_atom = _RevertWith(name, revert_with)

    @property
    def name(self) -> str:
        """The flow's name, unique within the flow tree."""
        return self._name

    @property
    def retry(self) -> Any:
        """The retry controller attached to this flow, or None."""
        return self._retry

    @property
    def retry_policy(self) -> RetryPolicy | None:
        """The default retry policy of the tasks inside this flow, or None."""
        return self._retry_policy

    @property
    def revert_with(self) -> Task | Callable[..., Any] | None:
        """The flow's own undo (a task or a callable), run instead of its atoms' reverts; or None."""
        return self._revert_with

    def _check_items(self, items: tuple[Any, ...]) -> None:
        for item in items:
            if not isinstance(item, (Atom, Flow)):
                raise TypeError("flow %r can only contain tasks, retries and flows, got %r" % (self._name, item))
            if item is self:
                raise ValueError("flow %r cannot contain itself" % (self._name,))

    def add(self, *items: Item) -> Flow:
        """Add atoms or flows; returns the flow so calls can be chained."""
        self._check_items(items)
        self._children.extend(items)
        return self

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._children)

    def iter_nodes(self) -> Iterator[tuple[Item, dict[str, Any]]]:
        """Yield ``(child, metadata)`` for each direct child."""
        for child in self._children:
            yield child, {}

    def iter_links(self) -> Iterator[tuple[Item, Item, dict[str, Any]]]:
        """Yield ``(u, v, metadata)`` for each explicit ordering between children."""
        return iter(())

    # -- the symbols the flow needs and offers, as seen from outside ----------

    def _child_requires(self, child: Item) -> frozenset[str]:
        return child.requires

    @property
    def provides(self) -> frozenset[str]:
        """Every symbol some atom of this flow provides."""
        names: set[str] = set()
        if self._retry is not None:
            names |= self._retry.provides
        for child in self._children:
            names |= child.provides
        return frozenset(names)

    @property
    def requires(self) -> frozenset[str]:
        """Symbols this flow needs from outside (not provided inside it)."""
        raise NotImplementedError

    def _retry_requires(self, inner: set[str]) -> frozenset[str]:
        if self._retry is None:
            return frozenset(inner)
        return frozenset((inner - self._retry.provides) | self._retry.requires)

    def __repr__(self) -> str:
        return "%s(%r, %d items)" % (type(self).__module__ + "." + type(self).__name__, self._name, len(self))


class _RevertWith(Task):
    """The hidden atom that runs a flow's ``revert_with`` (``"<flow name>.revert_with"``).

    The compiler puts it first in its flow, so it succeeds (doing nothing)
    before any atom of the flow starts, and is reverted after all of them.
    When the flow is reverted, the engine marks the flow's atoms REVERTED
    without running their reverts and runs this atom's revert instead.
    """

    def __init__(self, flow_name: str, undo: Task | Callable[..., Any]) -> None:
        super().__init__(name=flow_name + ".revert_with")
        self.flow_name = flow_name
        self.undo = undo

    def execute(self) -> None:
        return None

    def revert(self, results: Mapping[str, Any], flow_failures: Mapping[str, Any]) -> Any:
        undo = self.undo
        if not isinstance(undo, Task):
            return undo(results, flow_failures)
        offered = {"results": results, "result": results, "flow_failures": flow_failures}
        sig = signature_of(undo.revert)
        if sig.var_kwargs:
            kwargs = {"results": results, "flow_failures": flow_failures}
        else:
            kwargs = {k: v for k, v in offered.items() if k in sig.all_args}
        undo.pre_revert()
        try:
            return undo.revert(**kwargs)
        finally:
            undo.post_revert()
