"""The graph types TaskFlow code formats and walks: networkx graphs with a few helpers.

``engine.compilation.execution_graph`` is a :class:`DiGraph`; so are the
graphs user code builds to inspect flows.  On top of networkx they add
``pformat()`` (a readable summary: name, type, nodes, edges, density and,
for directed graphs, cycles), ``freeze()``, ``export_to_dot()`` and a few
iterators.  Python dicts keep insertion order, so the ``Ordered*`` types are
the same graphs under TaskFlow's names.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterator
from typing import Any

import networkx as nx

__all__ = ["Graph", "DiGraph", "OrderedGraph", "OrderedDiGraph", "merge_graphs"]


def _summary(graph: Any, arrow: str) -> list[str]:
    lines = [
        "Name: %s" % graph.name,
        "Type: %s" % type(graph).__name__,
        "Frozen: %s" % nx.is_frozen(graph),
        "Density: %0.3f" % nx.density(graph),
        "Nodes: %s" % graph.number_of_nodes(),
    ]
    for node, data in graph.nodes(data=True):
        lines.append("  - %s (%s)" % (node, data) if data else "  - %s" % (node,))
    lines.append("Edges: %s" % graph.number_of_edges())
    for u, v, data in graph.edges(data=True):
        lines.append("  %s %s %s (%s)" % (u, arrow, v, data) if data else "  %s %s %s" % (u, arrow, v))
    return lines


def _dot_id(node: Any) -> str:
    return '"%s"' % str(node).replace("\\", "\\\\").replace('"', '\\"')


def _to_dot(graph: Any, kind: str, arrow: str) -> str:
    lines = ["%s %s {" % (kind, _dot_id(graph.name or "G"))]
    lines.extend("%s;" % _dot_id(node) for node in graph.nodes)
    lines.extend("%s %s %s;" % (_dot_id(u), arrow, _dot_id(v)) for u, v in graph.edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


class Graph(nx.Graph):
    """An undirected graph with ``pformat()``, ``freeze()`` and ``export_to_dot()``."""

    def __init__(self, incoming_graph_data: Any = None, name: str = "") -> None:
        super().__init__(incoming_graph_data, name=name)
        #: True once :meth:`freeze` was called (``networkx.freeze`` sets it).
        self.frozen = False

    def freeze(self) -> Graph:
        """Refuse every later change (networkx raises on a change); returns the graph."""
        nx.freeze(self)
        return self

    def pformat(self) -> str:
        """A readable summary: name, type, frozen, density, nodes, edges."""
        return os.linesep.join(_summary(self, "<->"))

    def export_to_dot(self) -> str:
        """The graph as Graphviz DOT text (node names only)."""
        return _to_dot(self, "graph", "--")

    def add_edge(self, u: Any, v: Any, attr_dict: dict[str, Any] | None = None, **attr: Any) -> None:
        """Add the edge ``u``-``v``; its attributes as keywords or as one dict (the older spelling)."""
        super().add_edge(u, v, **(attr_dict or {}), **attr)

    def add_node(self, n: Any, attr_dict: dict[str, Any] | None = None, **attr: Any) -> None:
        """Add node ``n``; its attributes as keywords or as one dict."""
        super().add_node(n, **(attr_dict or {}), **attr)

    def fresh_copy(self) -> Graph:
        """An empty graph of the same type."""
        return type(self)()


class DiGraph(nx.DiGraph):
    """A directed graph with ``pformat()`` (cycles included), ``freeze()`` and walks TaskFlow code uses."""

    def __init__(self, incoming_graph_data: Any = None, name: str = "") -> None:
        super().__init__(incoming_graph_data, name=name)
        #: True once :meth:`freeze` was called (``networkx.freeze`` sets it).
        self.frozen = False

    def freeze(self) -> DiGraph:
        """Refuse every later change (networkx raises on a change); returns the graph."""
        nx.freeze(self)
        return self

    def get_edge_data(self, u: Any, v: Any, default: Any = None) -> Any:
        """A copy of the attributes of the edge ``u`` -> ``v`` (``default`` when there is none)."""
        try:
            return dict(self.adj[u][v])
        except KeyError:
            return default

    def topological_sort(self) -> Iterator[Any]:
        """The nodes in an order where every edge goes forward."""
        return iter(nx.topological_sort(self))

    def pformat(self) -> str:
        """A readable summary: name, type, frozen, density, nodes, edges and every simple cycle."""
        lines = _summary(self, "->")
        cycles = list(nx.simple_cycles(self))
        lines.append("Cycles: %s" % len(cycles))
        for cycle in cycles:
            lines.append("  " + " --> ".join(str(node) for node in [*cycle, cycle[0]]))
        return os.linesep.join(lines)

    def export_to_dot(self) -> str:
        """The graph as Graphviz DOT text (node names only)."""
        return _to_dot(self, "digraph", "->")

    def is_directed_acyclic(self) -> bool:
        """True when the graph has no cycle."""
        return nx.is_directed_acyclic_graph(self)

    def no_successors_iter(self) -> Iterator[Any]:
        """The nodes nothing follows."""
        return (node for node in self.nodes if self.out_degree(node) == 0)

    def no_predecessors_iter(self) -> Iterator[Any]:
        """The nodes nothing precedes."""
        return (node for node in self.nodes if self.in_degree(node) == 0)

    def bfs_predecessors_iter(self, n: Any) -> Iterator[Any]:
        """Every node ``n`` is reachable from, nearest first, each once (cycles included)."""
        seen = {n}
        queue = collections.deque([n])
        while queue:
            for pred in self.predecessors(queue.popleft()):
                if pred not in seen:
                    seen.add(pred)
                    queue.append(pred)
                    yield pred

    def add_edge(self, u: Any, v: Any, attr_dict: dict[str, Any] | None = None, **attr: Any) -> None:
        """Add the edge ``u`` -> ``v``; its attributes as keywords or as one dict (the older spelling)."""
        super().add_edge(u, v, **(attr_dict or {}), **attr)

    def add_node(self, n: Any, attr_dict: dict[str, Any] | None = None, **attr: Any) -> None:
        """Add node ``n``; its attributes as keywords or as one dict."""
        super().add_node(n, **(attr_dict or {}), **attr)

    def fresh_copy(self) -> DiGraph:
        """An empty graph of the same type."""
        return type(self)()


class OrderedGraph(Graph):
    """A :class:`Graph` that iterates nodes and edges in insertion order (every graph does, on Python 3.7+)."""


class OrderedDiGraph(DiGraph):
    """A :class:`DiGraph` that iterates nodes and edges in insertion order (every graph does, on Python 3.7+)."""


def merge_graphs(
    graph: Any,
    *graphs: Any,
    allow_overlaps: bool = False,
    overlap_detector: Callable[[Any, Any], int] | None = None,
) -> Any:
    """``graph`` composed with each of ``graphs`` (a new graph keeping ``graph``'s name).

    Graphs that share nodes raise ValueError unless ``allow_overlaps``;
    ``overlap_detector(into, other)`` counts the shared nodes (default: the
    nodes of ``other`` already in ``into``).  With no other graph,
    ``graph`` itself is returned.
    """
    if overlap_detector is not None and not callable(overlap_detector):
        raise ValueError("overlap_detector must be callable, got %r" % (overlap_detector,))
    count = overlap_detector or (lambda into, other: sum(1 for node in other.nodes if node in into))
    merged = graph
    for other in graphs:
        if not allow_overlaps:
            shared = count(merged, other)
            if shared:
                raise ValueError(
                    "cannot merge graph %r into %r: they share %d node(s) (merging nodes is not supported)"
                    % (other.name, merged.name, shared)
                )
        merged = nx.compose(merged, other)
    if graphs:
        merged.name = graph.name
    return merged
