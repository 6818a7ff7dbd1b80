"""Flatten a flow tree into one execution graph, resolving every symbol once.

The compiler walks the tree once.  Each atom gets an integer index; the atoms
of any subflow (and of a retry controller's scope) occupy one contiguous index
range, which is what lets the runtime ask "is this atom inside that retry's
scope?" with two comparisons.  Symbols are resolved while walking, through a
chain of scope tables (innermost first), so compiling costs O(atoms + edges +
symbols x nesting depth) — never a walk of all atoms per atom.

Every definition error is raised here, before anything runs, with the atom
(or flow) and the symbol named: duplicate names, cycles, dependencies inside
an unordered flow, and two providers of a symbol that someone requires.
Requirements that nothing in scope provides are left for the engine to check
against the injected store at ``prepare()``/``validate()``.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import networkx as nx

from flowkit import exceptions as exc
from flowkit.atom import Atom, AtomKind
from flowkit.flow import Flow
from flowkit.patterns import graph_flow, unordered_flow
from flowkit.policies import RetryPolicy
from flowkit.retry import Retry
from flowkit.types.graph import DiGraph
from flowkit.waits import Wait

__all__ = [
    "Compilation",
    "DeciderLink",
    "compile_flow",
    "ArgSource",
    "ArgStep",
    "FROM_ATOM",
    "FROM_ATOM_OPTIONAL",
    "FROM_STORE",
    "FROM_STORE_OPTIONAL",
    "FROM_INJECT",
]

NO_RETRY = -1

# Module globals: an enum member is slow to look up on its class, and
# compiling looks one up per atom.
_RETRY = AtomKind.RETRY
_TASK = AtomKind.TASK


class ArgSource(enum.Enum):
    """Where an argument gets its value at run time."""

    ATOM = "atom"  # the result of another atom (or an injected value of that name, which wins)
    ATOM_OPTIONAL = "atom-optional"  # like ATOM, left out when the provider has no result
    STORE = "store"  # an injected store value that must exist
    STORE_OPTIONAL = "store-optional"  # an injected store value, passed only if present
    INJECT = "inject"  # the atom's own ``inject=``


#: How one keyword argument of an atom's ``execute`` is filled (one step of
#: its plan): ``(source, arg, symbol, provider, where)``.  ``source`` is an
#: :class:`ArgSource` value (the plain string: the enum's member would keep
#: the step tracked by the cyclic collector, which rescans what it tracks);
#: ``arg`` the parameter's name; ``symbol`` what it is bound to; for the
#: ATOM sources ``provider`` is the index of the atom providing it (else -1)
#: and ``where`` the part of that atom's result (None: all of it).  A plain
#: tuple of strings and ints: one is made per argument of every atom.
ArgStep = tuple[str, str, str, int, Any]
# Bound once: a member looked up on its enum class is slow.
FROM_ATOM: str = ArgSource.ATOM.value
FROM_ATOM_OPTIONAL: str = ArgSource.ATOM_OPTIONAL.value
FROM_STORE: str = ArgSource.STORE.value
FROM_STORE_OPTIONAL: str = ArgSource.STORE_OPTIONAL.value
FROM_INJECT: str = ArgSource.INJECT.value

# A provider entry in a scope table: (atom index, result index, owner token).
_Provider = tuple[int, Any, int]
# What a flow or atom provides to what follows it: symbol -> its providers.
_Exports = dict[str, Sequence[_Provider]]
# What compiling a flow or an atom gives: its entry atoms, its exit atoms and
# its exports (tuples where they can be: a tuple of ints is one the cyclic
# collector stops tracking).
_Compiled = tuple[Sequence[int], Sequence[int], _Exports]


@dataclasses.dataclass(frozen=True, slots=True)
class DeciderLink:
    """A ``graph_flow.link(u, v, decider=...)`` between two index ranges."""

    ident: int
    decider: Callable[[Mapping[str, Any]], bool]
    depth: graph_flow.Depth
    source: range  # the atoms of u: their results form the decider's history
    target: range  # the atoms of v: ignored when the decider says False
    source_name: str
    target_name: str
    #: What ``Depth.FLOW`` / ``Depth.NEIGHBORS`` ignore besides the target (see :mod:`flowkit.deciders`).
    reach: tuple[int, ...] = ()


class Compilation:
    """The compiled form of a flow: flat, indexed, resolved.

    Lists are indexed by atom index.  ``preds``/``succs`` are the execution
    graph; ``owner[i]`` is the retry controller whose scope holds atom ``i``
    (a controller owns itself), ``parent_retry[r]`` the controller that
    handles a failure of controller ``r``, ``scope_end[r]`` the end of
    ``r``'s contiguous scope ``range(r, scope_end[r])``.
    """

    def __init__(self, root: Any) -> None:
        self.root = root
        self.atoms: list[Atom] = []
        self.kinds: list[AtomKind] = []
        self.is_retry: list[bool] = []  # kinds[i] is AtomKind.RETRY, looked up on every step
        self.waits: set[int] = set()  # atoms the engine ends itself (flowkit.waits)
        #: Tasks that provide a part of their result (``provides`` naming an
        #: index or key): their results are checked to have it (RunState.check_provides).
        self.picks_parts: set[int] = set()
        #: Each atom's effective retry policy: its own, else its innermost flow's, else the engine's.
        self.policies: list[RetryPolicy | None] = []
        self.has_policies = False
        #: Atoms made with ``heartbeat_timeout=``: index -> seconds.
        self.heartbeats: dict[int, float] = {}
        self.names: dict[str, int] = {}
        # An atom's predecessors and successors: a tuple while it has at most
        # one (most atoms), a list from its second.  A tuple of ints is left
        # alone by the cyclic garbage collector; a list is rescanned on every
        # collection for as long as the compilation lives.
        self.preds: list[Sequence[int]] = []
        self.succs: list[Sequence[int]] = []
        self.owner: list[int] = []
        self.parent_retry: dict[int, int] = {}
        self.scope_end: dict[int, int] = {}
        self.arg_plans: list[tuple[ArgStep, ...]] = []
        self.store_requires: dict[str, list[int]] = {}  # symbol -> atoms needing it from the store
        self.deciders: list[DeciderLink] = []
        self.incoming_deciders: dict[int, list[int]] = {}  # atom -> decider idents
        self.flow_ranges: dict[str, range] = {}  # flow name -> its atoms
        # The hidden atom of a flow with ``revert_with`` -> the atoms whose
        # reverts it replaces (the rest of that flow's range).
        self.undos: dict[int, range] = {}
        self.edge_count = 0
        self.has_priorities = False
        self._graph: DiGraph | None = None
        self._providers: dict[str, list[tuple[int, Any]]] | None = None

    def __len__(self) -> int:
        return len(self.atoms)

    @property
    def providers(self) -> dict[str, list[tuple[int, Any]]]:
        """symbol -> its providers, ``(atom index, result index)`` each, in atom order.

        Built on first use: fetching a result by name needs it, running does
        not (atoms find their arguments through ``arg_plans``), and a big
        flow would hold an entry per atom for nothing.
        """
        providers = self._providers
        if providers is None:
            providers = {}
            for index, atom in enumerate(self.atoms):
                for symbol, where in atom.save_as.items():
                    providers.setdefault(symbol, []).append((index, where))
            self._providers = providers
        return providers

    @property
    def execution_graph(self) -> DiGraph:
        """The execution graph as a :class:`flowkit.types.graph.DiGraph` of atom names (built on first use)."""
        if self._graph is None:
            graph = DiGraph(name=self.root.name)
            for index, atom in enumerate(self.atoms):
                graph.add_node(atom.name, atom=atom, kind=self.kinds[index].value)
            for index, successors in enumerate(self.succs):
                name = self.atoms[index].name
                for succ in successors:
                    graph.add_edge(name, self.atoms[succ].name)
            self._graph = graph
        return self._graph

    def index_of(self, name: str) -> int:
        """The index of the atom called ``name``; NotFound if there is none."""
        try:
            return self.names[name]
        except KeyError:
            raise exc.NotFound("no atom named %r in flow %r" % (name, self.root.name)) from None


def _reach(
    depth: graph_flow.Depth, start: int, succ: list[Sequence[int]], children: list[Any], ranges: list[range]
) -> tuple[int, ...]:
    """What a decider on the link into child ``start`` of a graph flow ignores besides ``start``.

    ``Depth.FLOW``: the atom children after it, walking through atom children
    only (a nested flow stops the walk: neither it nor what follows it is
    reached).  ``Depth.NEIGHBORS``: the atom children right after it.  Both
    stay inside this graph flow, as TaskFlow's walks stop at flow boundaries.
    """
    if depth not in (graph_flow.Depth.FLOW, graph_flow.Depth.NEIGHBORS):
        return ()
    seen = {start}
    todo = [start]
    reached: list[int] = []
    while todo:
        current = todo.pop()
        if current != start and depth == graph_flow.Depth.NEIGHBORS:
            continue  # one step only
        for nxt in succ[current]:
            if nxt in seen or isinstance(children[nxt], Flow):
                continue
            seen.add(nxt)
            reached.extend(ranges[nxt])
            todo.append(nxt)
    return tuple(sorted(reached))


class _Scope:
    """One level of symbol visibility, chained to the enclosing level."""

    __slots__ = ("table", "parent", "exclude", "only", "where")

    def __init__(
        self,
        table: Mapping[str, Sequence[_Provider]],
        parent: _Scope | None,
        where: str,
        exclude: int = -1,
        only: Callable[[int], bool] | None = None,
    ) -> None:
        self.table = table
        self.parent = parent
        self.exclude = exclude  # owner token whose providers are invisible here
        self.only = only  # for optional lookups: which owner tokens are ordered before
        self.where = where


def _describe(item: Any, symbol: str, role: str) -> str:
    """Name ``item`` and, for a flow, the atoms inside it that ``role`` the symbol."""
    if not isinstance(item, Flow):
        return repr(item.name)
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Flow):
            if node.retry is not None:
                walk(node.retry)
            for child in node:
                walk(child)
        elif symbol in (node.provides if role == "provides" else node.requires):
            found.append(repr(node.name))

    walk(item)
    if not found:
        return "flow %r" % (item.name,)
    return "flow %r (atom %s)" % (item.name, ", ".join(found))


class _Compiler:
    def __init__(self, root: Any, retry_policy: RetryPolicy | None = None) -> None:
        self.c = Compilation(root)
        self.flow_names: dict[str, Any] = {}
        self.token = 0
        self.policy = retry_policy  # the default of the flow being compiled
        #: By atom index: the one-item tuple of that index, once made (see _edge).
        self.ones: list[tuple[int] | None] = []

    # -- helpers --------------------------------------------------------------

    def _new_token(self) -> int:
        self.token += 1
        return self.token

    def _claim_name(self, item: Any, kind: str) -> None:
        name = item.name
        other = self.c.names.get(name)
        if other is not None:
            raise exc.Duplicate(
                "%s name %r is used twice in flow %r (an atom already has it)" % (kind, name, self.c.root.name)
            )

    def _edge(self, u: int, v: int) -> None:
        c = self.c
        _add_shared(c.succs, u, v, self.ones)
        _add_shared(c.preds, v, u, self.ones)
        c.edge_count += 1

    def _link_sets(self, exits: Sequence[int], entries: Sequence[int]) -> None:
        for u in exits:
            for v in entries:
                self._edge(u, v)

    def _resolve(self, atom: Atom, symbol: str, scope: _Scope | None, optional: bool) -> _Provider | None:
        level = scope
        while level is not None:
            found = level.table.get(symbol)
            if found and len(found) == 1:
                # One provider, the common case: no list to build.
                p = found[0]
                if p[2] != level.exclude and (not optional or level.only is None or level.only(p[2])):
                    return p
            elif found:
                visible = [p for p in found if p[2] != level.exclude]
                if optional and level.only is not None:
                    visible = [p for p in visible if level.only(p[2])]
                if len(visible) > 1:
                    raise exc.AmbiguousDependency(
                        "atom %r requires %r, which several atoms of %s provide: %s"
                        % (
                            atom.name,
                            symbol,
                            level.where,
                            ", ".join(repr(self.c.atoms[p[0]].name) for p in visible),
                        )
                    )
                if visible:
                    return visible[0]
            level = level.parent
        return None

    # -- atoms ------------------------------------------------------------------

    def _add_atom(self, atom: Atom, scope: _Scope | None, owner: int) -> int:
        if not isinstance(atom, Atom):
            raise TypeError("flow %r contains %r, which is not an atom or a flow" % (self.c.root.name, atom))
        self._claim_name(atom, "atom")
        c = self.c
        index = len(c.atoms)
        c.atoms.append(atom)
        c.names[atom.name] = index
        is_retry = isinstance(atom, Retry)
        c.kinds.append(_RETRY if is_retry else _TASK)
        c.is_retry.append(is_retry)
        if isinstance(atom, Wait):
            c.waits.add(index)
            policy = None  # a wait's timeout is its own; reruns come from controllers
        elif is_retry:
            policy = None
        else:
            own = getattr(atom, "retry_policy", None)
            policy = own if isinstance(own, RetryPolicy) else self.policy
        c.policies.append(policy)
        if not is_retry and any(where is not None for where in atom.save_as.values()):
            c.picks_parts.add(index)
        if policy is not None:
            c.has_policies = True
        heartbeat_timeout = getattr(atom, "heartbeat_timeout", None)
        if isinstance(heartbeat_timeout, float) and not is_retry and index not in c.waits:
            c.heartbeats[index] = heartbeat_timeout
        c.preds.append(())
        c.succs.append(())
        self.ones.append(None)
        c.owner.append(owner)
        if atom.priority:
            c.has_priorities = True
        plan: list[ArgStep] = []
        inject = atom.inject
        for arg, symbol in atom.rebind.items():
            if symbol in inject:
                plan.append((FROM_INJECT, arg, symbol, -1, None))
                continue
            provider = self._resolve(atom, symbol, scope, optional=False)
            if provider is not None:
                plan.append((FROM_ATOM, arg, symbol, provider[0], provider[1]))
            else:
                plan.append((FROM_STORE, arg, symbol, -1, None))
                c.store_requires.setdefault(symbol, []).append(index)
        for arg, symbol in atom.optional_args.items():
            if symbol in inject:
                plan.append((FROM_INJECT, arg, symbol, -1, None))
                continue
            provider = self._resolve(atom, symbol, scope, optional=True)
            if provider is not None:
                plan.append((FROM_ATOM_OPTIONAL, arg, symbol, provider[0], provider[1]))
            else:
                plan.append((FROM_STORE_OPTIONAL, arg, symbol, -1, None))
        c.arg_plans.append(tuple(plan))
        return index

    @staticmethod
    def _exports_of(atom_index: int, atom: Atom, token: int) -> _Exports:
        # Tuples of tuples of ints: the collector stops tracking them (lists it would rescan).
        return {symbol: ((atom_index, where, token),) for symbol, where in atom.save_as.items()}

    # -- items ------------------------------------------------------------------

    def compile_item(self, item: Any, scope: _Scope | None, owner: int) -> _Compiled:
        """Compile ``item``; return its entry atoms, exit atoms and exported symbols."""
        if isinstance(item, Flow):
            return self._compile_flow(item, scope, owner)
        index = self._add_atom(item, scope, owner)
        return (index,), (index,), self._exports_of(index, item, self._new_token())

    def _compile_flow(self, flow: Flow, scope: _Scope | None, owner: int) -> _Compiled:
        # A flow may share its name with an atom (TaskFlow allows it), not with another flow.
        if flow.name in self.flow_names:
            raise exc.Duplicate("flow name %r is used twice in flow %r" % (flow.name, self.c.root.name))
        self.flow_names[flow.name] = flow
        start = len(self.c.atoms)
        outer_policy = self.policy
        flow_policy = getattr(flow, "retry_policy", None)
        if isinstance(flow_policy, RetryPolicy):
            self.policy = flow_policy
        retry = flow.retry
        retry_exports: _Exports = {}
        retry_index = NO_RETRY
        if retry is not None:
            retry_index = self._add_atom(retry, scope, owner)
            self.c.owner[retry_index] = retry_index
            self.c.parent_retry[retry_index] = owner
            retry_exports = self._exports_of(retry_index, retry, self._new_token())
            scope = _Scope(retry_exports, scope, "the retry controller of flow %r" % flow.name)
            owner = retry_index
        undo = flow._revert_with_atom
        undo_index = NO_RETRY
        if undo is not None:
            # First in the flow (inside its retry scope): it succeeds before
            # any atom of the flow starts, so it is reverted after all of them.
            undo_index = self._add_atom(undo, scope, owner)
        if isinstance(flow, graph_flow.Flow):
            entries, exits, exports = self._compile_graph(flow, scope, owner)
        elif isinstance(flow, unordered_flow.Flow):
            entries, exits, exports = self._compile_unordered(flow, scope, owner)
        else:
            entries, exits, exports = self._compile_linear(flow, scope, owner)
        if undo_index != NO_RETRY:
            self.c.undos[undo_index] = range(undo_index + 1, len(self.c.atoms))
            for entry in entries:
                self._edge(undo_index, entry)
            entries = (undo_index,)
            if not exits:
                exits = entries
        if retry_index != NO_RETRY:
            self.c.scope_end[retry_index] = len(self.c.atoms)
            for entry in entries:
                self._edge(retry_index, entry)
            entries = (retry_index,)
            if not exits:
                exits = entries
            for symbol, providers in retry_exports.items():
                exports.setdefault(symbol, providers)
        self.c.flow_ranges[flow.name] = range(start, len(self.c.atoms))
        self.policy = outer_policy
        return entries, exits, exports

    def _compile_linear(self, flow: Flow, scope: _Scope | None, owner: int) -> _Compiled:
        table: _Exports = {}
        inner = _Scope(table, scope, "linear flow %r" % flow.name)
        entries: Sequence[int] = ()
        exits: Sequence[int] = ()
        for child in flow:
            if not isinstance(child, Flow):
                # An atom: what compile_item() does, without the lists and
                # dicts it returns (a chain of atoms is the commonest flow).
                index = self._add_atom(child, inner, owner)
                exits_now = (index,)
                if exits:
                    self._link_sets(exits, exits_now)
                else:
                    entries = exits_now
                exits = exits_now
                token = self._new_token()
                for symbol, where in child.save_as.items():
                    table[symbol] = ((index, where, token),)  # shadows, as below
                continue
            child_entries, child_exits, child_exports = self.compile_item(child, inner, owner)
            if not child_entries:
                continue  # an empty subflow orders nothing
            if exits:
                self._link_sets(exits, child_entries)
            else:
                entries = child_entries
            exits = child_exits
            # A later provider is nearer to whoever comes next: it shadows.
            table.update(child_exports)
        return entries, exits, dict(table)

    def _compile_unordered(self, flow: Flow, scope: _Scope | None, owner: int) -> _Compiled:
        children = list(flow)
        provided_by: dict[str, list[Any]] = {}
        for child in children:
            for symbol in child.provides:
                provided_by.setdefault(symbol, []).append(child)
        for child in children:
            for symbol in sorted(child.requires):
                others = [p for p in provided_by.get(symbol, ()) if p is not child]
                if others:
                    raise exc.DependencyFailure(
                        "unordered flow %r: %s requires %r, which its sibling %s provides; members of "
                        "an unordered flow must not depend on each other (use a linear or graph flow)"
                        % (
                            flow.name,
                            _describe(child, symbol, "requires"),
                            symbol,
                            _describe(others[0], symbol, "provides"),
                        )
                    )
        entries: list[int] = []
        exits: list[int] = []
        exports: dict[str, list[_Provider]] = {}
        for child in children:
            child_entries, child_exits, child_exports = self.compile_item(child, scope, owner)
            entries.extend(child_entries)
            exits.extend(child_exits)
            for symbol, providers in child_exports.items():
                exports.setdefault(symbol, []).extend(providers)
        return entries, exits, cast(_Exports, exports)  # lists, read as sequences from here

    def _compile_graph(self, flow: graph_flow.Flow, scope: _Scope | None, owner: int) -> _Compiled:
        # Plain lists rather than a networkx graph: this runs once per graph
        # flow and must stay linear and light for flows of 100,000 children.
        children = list(flow)
        count = len(children)
        position = {id(child): pos for pos, child in enumerate(children)}
        # A tuple of one, then a list (see _add_to): most children have few links.
        succ: list[Sequence[int]] = [()] * count
        pred: list[Sequence[int]] = [()] * count
        link_meta: dict[tuple[int, int], dict[str, Any]] = {}
        # Edges already added, as ``u * count + v``: a set, so that one child
        # feeding thousands of siblings costs one lookup per edge, not a scan
        # of the edges added so far.
        edges: set[int] = set()

        def add_edge(u: int, v: int) -> None:
            key = u * count + v
            if key not in edges:
                edges.add(key)
                _add_to(succ, u, v)
                _add_to(pred, v, u)

        for u_item, v_item, meta in flow.iter_links():
            u, v = position[id(u_item)], position[id(v_item)]
            add_edge(u, v)
            link_meta[(u, v)] = meta
        provided_by: dict[str, list[int]] = {}
        for pos, child in enumerate(children):
            for symbol in child.provides:
                provided_by.setdefault(symbol, []).append(pos)
        for pos, child in enumerate(children):
            for symbol in sorted(child.requires):
                found = provided_by.get(symbol)
                if not found:
                    continue
                if len(found) == 1:
                    # One provider, the common case: no list to build.
                    if found[0] != pos:
                        add_edge(found[0], pos)
                    continue
                providers = [p for p in found if p != pos]
                if len(providers) > 1:
                    raise exc.AmbiguousDependency(
                        "graph flow %r: %s requires %r, which several of its siblings provide: %s"
                        % (
                            flow.name,
                            _describe(child, symbol, "requires"),
                            symbol,
                            ", ".join(_describe(children[p], symbol, "provides") for p in providers),
                        )
                    )
                if providers:
                    add_edge(providers[0], pos)
        order = _topological_order(succ, pred)
        if len(order) < count:
            raise self._cycle_error(flow, children, succ)
        table: dict[str, list[_Provider]] = {}
        tokens = [self._new_token() for _ in children]
        token_pos = {token: pos for pos, token in enumerate(tokens)}
        entries_of: list[Sequence[int]] = [()] * count
        exits_of: list[Sequence[int]] = [()] * count
        ranges: list[range] = [range(0)] * count
        exports: dict[str, list[_Provider]] = {}
        where = "graph flow %r" % flow.name
        for pos in order:
            child = children[pos]
            inner = _Scope(table, scope, where, tokens[pos], _OrderedBefore(pred, pos, token_pos))
            start = len(self.c.atoms)
            entries_of[pos], exits_of[pos], child_exports = self.compile_item(child, inner, owner)
            ranges[pos] = range(start, len(self.c.atoms))
            for symbol, child_providers in child_exports.items():
                retagged = [(p[0], p[1], tokens[pos]) for p in child_providers]
                table.setdefault(symbol, []).extend(retagged)
                exports.setdefault(symbol, []).extend(retagged)
        for u in range(count):
            for v in succ[u]:
                self._link_sets(exits_of[u], entries_of[v])
                made = link_meta.get((u, v)) if link_meta else None  # the meta of a link made with link()
                decider = made.get("decider") if made else None
                if made is None or decider is None:
                    continue
                depth = made.get("decider_depth", graph_flow.Depth.ALL)
                link = DeciderLink(
                    ident=len(self.c.deciders),
                    decider=decider,
                    depth=depth,
                    source=ranges[u],
                    target=ranges[v],
                    source_name=children[u].name,
                    target_name=children[v].name,
                    reach=_reach(depth, v, succ, children, ranges),
                )
                self.c.deciders.append(link)
                for entry in entries_of[v]:
                    self.c.incoming_deciders.setdefault(entry, []).append(link.ident)
        entries: list[int] = []
        exits: list[int] = []
        for pos in range(count):
            if not pred[pos]:
                entries.extend(entries_of[pos])
            if not succ[pos]:
                exits.extend(exits_of[pos])
        return entries, exits, cast(_Exports, exports)  # lists, read as sequences from here

    @staticmethod
    def _cycle_error(flow: Any, children: list[Any], succ: list[Sequence[int]]) -> exc.DependencyFailure:
        """Name the atoms of one cycle and the symbols that tie them (the rare path)."""
        graph = nx.DiGraph()
        for u, targets in enumerate(succ):
            for v in targets:
                graph.add_edge(u, v)
        steps = []
        for u, v in nx.find_cycle(graph):
            reasons = sorted(children[v].requires & children[u].provides)
            why = "needs %s" % ", ".join(repr(r) for r in reasons) if reasons else "linked"
            steps.append("%r -> %r (%s)" % (children[u].name, children[v].name, why))
        return exc.DependencyFailure("graph flow %r has a cycle: %s" % (flow.name, "; ".join(steps)))


def _add_shared(lists: list[Any], at: int, item: int, ones: list[tuple[int] | None]) -> None:
    """``_add_to(lists, at, item)``, but a first item is the shared one-item tuple ``ones[item]``.

    In a chain, atom k is the successor of k - 1 and the predecessor of k + 1:
    sharing its tuple makes half the tuples, and less for the collector to look at.
    """
    if lists[at]:
        _add_to(lists, at, item)
        return
    one = ones[item]
    if one is None:
        ones[item] = one = (item,)
    lists[at] = one


def _add_to(lists: list[Any], at: int, item: Any) -> None:
    """Add ``item`` to ``lists[at]``: a tuple of one item first, a list from the second (see ``Compilation``)."""
    found = lists[at]
    if type(found) is list:
        found.append(item)
    elif found:
        lists[at] = [*found, item]
    else:
        lists[at] = (item,)


def _topological_order(succ: list[Sequence[int]], pred: list[Sequence[int]]) -> list[int]:
    """Kahn's algorithm; shorter than the node count when there is a cycle."""
    remaining = [len(p) for p in pred]
    queue = collections.deque(pos for pos, n in enumerate(remaining) if n == 0)
    order: list[int] = []
    while queue:
        u = queue.popleft()
        order.append(u)
        for v in succ[u]:
            remaining[v] -= 1
            if remaining[v] == 0:
                queue.append(v)
    return order


class _OrderedBefore:
    """Whether a sibling (by owner token) always runs before child ``pos``: its ancestors, found on first use."""

    __slots__ = ("pred", "pos", "token_pos", "ancestors")

    def __init__(self, pred: list[Sequence[int]], pos: int, token_pos: dict[int, int]) -> None:
        self.pred = pred
        self.pos = pos
        self.token_pos = token_pos
        self.ancestors: set[int] | None = None

    def __call__(self, token: int) -> bool:
        if self.ancestors is None:
            seen: set[int] = set()
            stack = list(self.pred[self.pos])
            while stack:
                u = stack.pop()
                if u not in seen:
                    seen.add(u)
                    stack.extend(self.pred[u])
            self.ancestors = seen
        return self.token_pos.get(token, -1) in self.ancestors


def compile_flow(flow_or_atom: Any, retry_policy: RetryPolicy | None = None) -> Compilation:
    """Compile a flow (or a single atom) into a :class:`Compilation`.

    ``retry_policy`` is the policy of every task that gets none from itself or
    from a flow around it.

    Raises the :class:`~flowkit.exceptions.DefinitionError` family for
    duplicate names, cycles, ambiguous providers and dependencies inside
    unordered flows.
    """
    if not isinstance(flow_or_atom, (Flow, Atom)):
        raise TypeError("can only compile a flow or an atom, got %r" % (flow_or_atom,))
    compiler = _Compiler(flow_or_atom, RetryPolicy.check(retry_policy, "the engine"))
    compiler.compile_item(flow_or_atom, None, NO_RETRY)
    return compiler.c


def missing_requirements(compilation: Compilation, available: Iterable[str]) -> dict[str, list[str]]:
    """Atom name -> symbols it needs from the store that ``available`` lacks."""
    have = set(available)
    missing: dict[str, list[str]] = {}
    for symbol, needers in compilation.store_requires.items():
        if symbol not in have:
            for index in needers:
                missing.setdefault(compilation.atoms[index].name, []).append(symbol)
    return missing
