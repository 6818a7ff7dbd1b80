"""A flow ordered by data: an item runs after the items providing what it requires."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flowkit import flow
from flowkit.policies import RetryPolicy

__all__ = ["Flow", "TargetedFlow", "Depth"]

Decider = Callable[[Mapping[str, Any]], bool]


class Depth(str, enum.Enum):
    """How far a decider that said "no" reaches."""

    #: The target and everything that runs after it (TaskFlow's default).
    ALL = "ALL"
    #: The target and what runs after it through atoms of the same graph flow.
    FLOW = "FLOW"
    #: The target and the tasks that run directly after it.
    NEIGHBORS = "NEIGHBORS"
    #: Only the target's own atoms; what follows still runs.
    ATOM = "ATOM"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def translate(cls, depth: Depth | str) -> Depth:  # type: ignore[override]
        """The depth ``depth`` names, in any case (``"flow"``).

        ValueError for another string, TypeError for what is not a string (as
        TaskFlow's ``Depth.translate``; it hides ``str.translate`` on purpose).
        """
        if isinstance(depth, cls):
            return depth
        if not isinstance(depth, str):
            raise TypeError("a decider depth is a string, got %s" % (type(depth).__name__,))
        try:
            return cls(depth.upper())
        except ValueError:
            raise ValueError(
                "unknown decider depth %r (one of %s, in any case)" % (depth, ", ".join(d.value for d in cls))
            ) from None


class Flow(flow.Flow):
    """Orders items by the data they require and provide, whatever the order added.

    ``link(u, v)`` adds an explicit ordering; with ``decider=fn`` the engine
    calls ``fn(history)`` once ``u`` is done (``history`` maps each atom name of
    ``u`` to its result) and, if it returns False, ``v`` and what depends on it
    are marked IGNORE instead of running; the flow still succeeds.
    """

    def __init__(
        self, name: str, retry: Any = None, *, retry_policy: RetryPolicy | None = None, revert_with: Any = None
    ) -> None:
        super().__init__(name, retry, retry_policy=retry_policy, revert_with=revert_with)
        self._links: list[tuple[Any, Any, dict[str, Any]]] = []

    def link(
        self,
        u: flow.Item,
        v: flow.Item,
        decider: Decider | None = None,
        decider_depth: Depth | str | None = None,
    ) -> Flow:
        """Make ``v`` run after ``u`` (both already added); optionally guarded by ``decider``.

        ``decider_depth`` (a :class:`Depth` or its name, in any case; default
        ``ALL``) is how far a "no" reaches; see :mod:`flowkit.deciders`.
        """
        for item in (u, v):
            if not any(item is child for child in self._children):
                raise ValueError(
                    "graph flow %r: cannot link %r, it was not added to this flow"
                    % (self._name, getattr(item, "name", item))
                )
        if u is v:
            raise ValueError("graph flow %r: cannot link %r to itself" % (self._name, u.name))
        meta: dict[str, Any] = {"manual": True}
        if decider is not None:
            if not callable(decider):
                raise ValueError("graph flow %r: decider must be callable, got %r" % (self._name, decider))
            try:
                depth = Depth.translate(decider_depth if decider_depth is not None else Depth.ALL)
            except (TypeError, ValueError):
                raise ValueError(
                    "graph flow %r: decider_depth must be one of %s, got %r"
                    % (self._name, ", ".join(d.value for d in Depth), decider_depth)
                ) from None
            meta["decider"] = decider
            meta["decider_depth"] = depth
        self._links.append((u, v, meta))
        return self

    def iter_links(self) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
        return iter(list(self._links))

    @property
    def requires(self) -> frozenset[str]:
        children = list(self)
        provided: set[str] = set()
        for child in children:
            provided |= child.provides
        needed: set[str] = set()
        for child in children:
            needed |= child.requires - (provided - child.provides)
        return self._retry_requires(needed)


class TargetedFlow(Flow):
    """A graph flow that can be told to run only one item and what it depends on (TaskFlow's name).

    After ``set_target(item)`` (an item added to this flow), the flow holds,
    for the engine and for anyone iterating it, only ``item`` and the items
    it comes after, through links and through the data they provide; the
    rest are left out until ``reset_target()``.  Adding items or links later
    is seen: what is left out is worked out each time.
    """

    def __init__(
        self, name: str, retry: Any = None, *, retry_policy: RetryPolicy | None = None, revert_with: Any = None
    ) -> None:
        super().__init__(name, retry, retry_policy=retry_policy, revert_with=revert_with)
        self._target: flow.Item | None = None

    @property
    def target(self) -> flow.Item | None:
        """The item set with :meth:`set_target`, or None."""
        return self._target

    def set_target(self, target: flow.Item) -> None:
        """Run only ``target`` and what it depends on; ValueError if it was not added to this flow."""
        if not any(target is child for child in self._children):
            raise ValueError(
                "targeted flow %r: cannot target %r, it was not added to this flow"
                % (self._name, getattr(target, "name", target))
            )
        self._target = target

    def reset_target(self) -> None:
        """Run every item again."""
        self._target = None

    def _kept(self) -> list[flow.Item]:
        children = self._children
        if self._target is None:
            return list(children)
        position = {id(child): pos for pos, child in enumerate(children)}
        before: list[list[int]] = [[] for _ in children]
        for u, v, _ in self._links:
            before[position[id(v)]].append(position[id(u)])
        providers: dict[str, list[int]] = {}
        for pos, child in enumerate(children):
            for symbol in child.provides:
                providers.setdefault(symbol, []).append(pos)
        for pos, child in enumerate(children):
            for symbol in child.requires:
                before[pos].extend(p for p in providers.get(symbol, ()) if p != pos)
        start = position[id(self._target)]
        kept = {start}
        todo = [start]
        while todo:
            for pred in before[todo.pop()]:
                if pred not in kept:
                    kept.add(pred)
                    todo.append(pred)
        return [child for pos, child in enumerate(children) if pos in kept]

    def __iter__(self) -> Iterator[flow.Item]:
        return iter(self._kept())

    def __len__(self) -> int:
        return len(self._kept())

    def iter_nodes(self) -> Iterator[tuple[flow.Item, dict[str, Any]]]:
        for child in self._kept():
            yield child, {}

    def iter_links(self) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
        kept = {id(child) for child in self._kept()}
        return iter([(u, v, meta) for u, v, meta in self._links if id(u) in kept and id(v) in kept])

    @property
    def provides(self) -> frozenset[str]:
        names: set[str] = set(self._retry.provides) if self._retry is not None else set()
        for child in self._kept():
            names |= child.provides
        return frozenset(names)
