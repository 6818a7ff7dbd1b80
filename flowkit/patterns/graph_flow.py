"""A flow ordered by data: an item runs after the items providing what it requires."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flowkit import exceptions as exc
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

    An ``add()`` or ``link()`` that would close a cycle (by data or by links)
    raises :class:`~flowkit.exceptions.DependencyFailure` at once, naming the
    cycle, and leaves the flow as it was; ``compile()`` checks again, for
    nested flows changed after they were added.
    """

    def __init__(
        self, name: str, retry: Any = None, *, retry_policy: RetryPolicy | None = None, revert_with: Any = None
    ) -> None:
        super().__init__(name, retry, retry_policy=retry_policy, revert_with=revert_with)
        self._links: list[tuple[Any, Any, dict[str, Any]]] = []
        # What the cycle check at add()/link() walks: symbol -> the children that
        # provide / require it (as they were when added), and the links out of
        # and into each child (by id).
        self._providers: dict[str, list[flow.Item]] = {}
        self._requirers: dict[str, list[flow.Item]] = {}
        self._linked_to: dict[int, list[flow.Item]] = {}
        self._linked_in: dict[int, int] = {}

    def add(self, *items: flow.Item) -> Flow:
        """Add atoms or flows, ordered by the data they require and provide.

        Raises :class:`~flowkit.exceptions.DependencyFailure` (and adds none of
        ``items``) if that data would close a cycle.
        """
        self._check_items(items)
        added: list[flow.Item] = []
        try:
            for item in items:
                self._children.append(item)
                added.append(item)
                self._index(item, add=True)
                has_pred = any(p is not item for s in item.requires for p in self._providers.get(s, ()))
                if has_pred and self._successors(item):
                    self._refuse_cycle(item, "adding %r" % (item.name,))
        except exc.DependencyFailure:
            for item in added:
                self._index(item, add=False)
            del self._children[len(self._children) - len(added) :]
            raise
        return self

    def _index(self, item: flow.Item, *, add: bool) -> None:
        for table, symbols in ((self._providers, item.provides), (self._requirers, item.requires)):
            for symbol in symbols:
                if add:
                    table.setdefault(symbol, []).append(item)
                else:
                    table[symbol] = [other for other in table[symbol] if other is not item]

    def _successors(self, item: flow.Item) -> list[tuple[flow.Item, str]]:
        """What must run after ``item``, each with why (the symbol, or "linked")."""
        found = [
            (other, "needs %r" % (symbol,))
            for symbol in sorted(item.provides)
            for other in self._requirers.get(symbol, ())
            if other is not item
        ]
        found.extend((other, "linked") for other in self._linked_to.get(id(item), ()))
        return found

    def _refuse_cycle(self, item: flow.Item, doing: str) -> None:
        """Raise DependencyFailure, naming the cycle, if ``item`` is reachable from itself."""
        parent: dict[int, tuple[flow.Item, str]] = {}
        seen: set[int] = set()
        stack = [item]
        while stack:
            node = stack.pop()
            for nxt, why in self._successors(node):
                if nxt is item:
                    steps = ["%r -> %r (%s)" % (node.name, item.name, why)]
                    at = node
                    while at is not item:
                        before, reason = parent[id(at)]
                        steps.append("%r -> %r (%s)" % (before.name, at.name, reason))
                        at = before
                    raise exc.DependencyFailure(
                        "graph flow %r: %s would close a cycle: %s" % (self._name, doing, "; ".join(reversed(steps)))
                    )
                if id(nxt) not in seen:
                    seen.add(id(nxt))
                    parent[id(nxt)] = (node, why)
                    stack.append(nxt)

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
        has_pred = self._linked_in.get(id(u), 0) or any(
            p is not u for s in u.requires for p in self._providers.get(s, ())
        )
        if has_pred and self._successors(v):
            # v -> ... -> u already: the new link u -> v closes the cycle.
            self._linked_to.setdefault(id(u), []).append(v)
            try:
                self._refuse_cycle(v, "linking %r to %r" % (u.name, v.name))
            finally:
                self._linked_to[id(u)].pop()
        self._links.append((u, v, meta))
        self._linked_to.setdefault(id(u), []).append(v)
        self._linked_in[id(v)] = self._linked_in.get(id(v), 0) + 1
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
