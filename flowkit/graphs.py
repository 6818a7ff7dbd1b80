"""Pictures of flows: the compiled execution graph as Graphviz DOT, and rendered.

::

    from flowkit import graphs

    print(graphs.to_dot(flow))                 # the structure
    print(graphs.to_dot(engine))               # coloured by the states of its run
    svg = graphs.render(graphs.to_dot(engine), "svg")   # needs Graphviz's ``dot``

The picture is of what the engine runs: every atom of the flattened flow,
every ordering edge (explicit links and data dependencies), nested flows as
boxes around their atoms, retry controllers drawn as hexagons, and links with
deciders dashed and labelled.  ``flowkit graph module:factory`` does the same
from the command line.

Making DOT text needs nothing but flowkit; rendering calls the ``dot``
program (``apt-get install graphviz``, ``brew install graphviz``), and
raises :class:`GraphvizNotFound` when it is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from flowkit import states
from flowkit.exceptions import FlowkitError

if TYPE_CHECKING:
    from flowkit.engines._compiler import Compilation
    from flowkit.persistence.models import FlowDetail

__all__ = [
    # DOT text
    "to_dot",
    "STATE_COLORS",
    # rendering
    "render",
    "dot_program",
    "FORMATS",
    "GraphvizNotFound",
    "RenderFailed",
]

#: Fill colour of an atom in each state an atom or a flow can be stored in, each its own
#: (a state without an entry, such as an engine-loop state, is white).
STATE_COLORS: Mapping[str, str] = {
    states.PENDING: "white",
    states.RUNNING: "lightskyblue",
    states.SUCCESS: "palegreen",
    states.FAILURE: "salmon",
    states.REVERTING: "orange",
    states.REVERTED: "khaki",
    states.REVERT_FAILURE: "red",
    states.RETRYING: "plum",
    states.IGNORE: "lightgrey",
    states.WAITING: "paleturquoise",
    # stopped until an operator retries or reverts it: it must catch the eye
    states.BROKEN: "hotpink",
    states.SUSPENDING: "lavender",
    states.SUSPENDED: "lightsteelblue",
    states.RESUMING: "lightcyan",
}

#: Output formats :func:`render` accepts.
FORMATS = ("svg", "png")


class GraphvizNotFound(FlowkitError):
    """The Graphviz ``dot`` program is not installed (or not on ``PATH``)."""


class RenderFailed(FlowkitError):
    """``dot`` ran but could not render the graph."""


def _quote(text: str) -> str:
    return '"%s"' % (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"),)


def _attrs(**attrs: str) -> str:
    return "[%s]" % (", ".join("%s=%s" % (key, _quote(value)) for key, value in attrs.items()),)


def _compilation_of(subject: Any) -> tuple[Compilation, FlowDetail | None]:
    """The compilation to draw and, for an engine, the flow detail of its run."""
    from flowkit.engines._compiler import Compilation, compile_flow
    from flowkit.engines.engine import Engine

    if isinstance(subject, Engine):
        return subject.compilation, subject.storage.flow_detail
    if isinstance(subject, Compilation):
        return subject, None
    return compile_flow(subject), None


def _decider_name(decider: Any) -> str:
    name = getattr(decider, "__name__", None) or type(decider).__name__
    return "decider" if name == "<lambda>" else name


class _Cluster:
    """A nested flow: its index range, the flows inside it, its own atoms."""

    def __init__(self, name: str, span: range) -> None:
        self.name = name
        self.span = span
        self.children: list[_Cluster] = []


def _clusters(compilation: Compilation) -> list[_Cluster]:
    """The tree of nested flows below the root flow, outermost first."""
    n = len(compilation)
    ranges = list(compilation.flow_ranges.items())
    # Flows are recorded after their children; a parent with the same span as
    # its only child must still come first, so later entries sort earlier.
    ordered = sorted(
        ((name, span, position) for position, (name, span) in enumerate(ranges) if len(span)),
        key=lambda item: (item[1].start, -item[1].stop, -item[2]),
    )
    roots: list[_Cluster] = []
    stack: list[_Cluster] = []
    for name, span, _ in ordered:
        if span.start == 0 and span.stop == n and not stack and not roots:
            continue  # the root flow is the whole picture
        cluster = _Cluster(name, span)
        while stack and not (stack[-1].span.start <= span.start and span.stop <= stack[-1].span.stop):
            stack.pop()
        (stack[-1].children if stack else roots).append(cluster)
        stack.append(cluster)
    return roots


def to_dot(
    subject: Any,
    *,
    flow_detail: FlowDetail | None = None,
    atom_states: Mapping[str, str] | None = None,
    clusters: bool = True,
    deciders: bool = True,
    rankdir: str = "LR",
) -> str:
    """The execution graph of ``subject`` as Graphviz DOT text.

    ``subject`` is a flow (or a single atom), an engine, or a compilation.
    Atoms are coloured by state (:data:`STATE_COLORS`) when states are known:
    from ``atom_states`` (name -> state), else from ``flow_detail``, else, for
    an engine, from its own flow detail.  ``clusters`` draws nested flows as
    boxes; ``deciders`` labels decider links.  The text is the same for the
    same flow and states, so it can be compared in tests.
    """
    compilation, own_detail = _compilation_of(subject)
    if atom_states is None:
        detail = flow_detail if flow_detail is not None else own_detail
        if detail is not None:
            atom_states = {ad.name: str(ad.state) for ad in detail}
    coloured = atom_states is not None
    known = atom_states or {}
    atoms = compilation.atoms
    title = getattr(compilation.root, "name", "flow")

    lines = ["digraph %s {" % (_quote(title),)]
    lines.append("  graph %s;" % (_attrs(label=title, labelloc="t", rankdir=rankdir, fontname="Helvetica"),))
    lines.append("  node %s;" % (_attrs(fontname="Helvetica", style="rounded,filled", fillcolor="white"),))
    lines.append("  edge %s;" % (_attrs(fontname="Helvetica", fontsize="10"),))

    def node(index: int, indent: str) -> str:
        atom = atoms[index]
        attrs: dict[str, str] = {}
        if compilation.is_retry[index]:
            attrs["shape"] = "hexagon"
            attrs["style"] = "filled"
        else:
            attrs["shape"] = "box"
        label = atom.name
        if coloured:
            state = str(known.get(atom.name, states.PENDING))
            label += "\n" + state
            attrs["fillcolor"] = STATE_COLORS.get(state, "white")
            if state == states.IGNORE:
                attrs["style"] = attrs.get("style", "rounded,filled") + ",dashed"
        attrs["label"] = label
        attrs["tooltip"] = "%s %s" % ("retry" if compilation.is_retry[index] else "task", atom.name)
        return "%s%s %s;" % (indent, _quote(atom.name), _attrs(**attrs))

    placed: set[int] = set()

    def emit(cluster: _Cluster, depth: int, counter: Iterator[int]) -> None:
        indent = "  " * depth
        lines.append("%ssubgraph %s {" % (indent, _quote("cluster_%d" % next(counter))))
        lines.append("%s  graph %s;" % (indent, _attrs(label=cluster.name, style="rounded", color="grey50")))
        for child in cluster.children:
            emit(child, depth + 1, counter)
        for index in cluster.span:
            if index not in placed:
                placed.add(index)
                lines.append(node(index, indent + "  "))
        lines.append("%s}" % (indent,))

    if clusters:
        counter = iter(range(len(compilation.flow_ranges) + 1))
        for cluster in _clusters(compilation):
            emit(cluster, 1, counter)
    for index in range(len(atoms)):
        if index not in placed:
            lines.append(node(index, "  "))

    labels: dict[tuple[int, int], str] = {}
    if deciders:
        for link in compilation.deciders:
            for source in link.source:
                for target in compilation.succs[source]:
                    if target in link.target:
                        labels[(source, target)] = _decider_name(link.decider)
    for source, successors in enumerate(compilation.succs):
        for target in sorted(successors):
            text = "  %s -> %s" % (_quote(atoms[source].name), _quote(atoms[target].name))
            label = labels.get((source, target))
            if label is not None:
                text += " " + _attrs(label=label, style="dashed")
            lines.append(text + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_program() -> str | None:
    """The path of Graphviz's ``dot`` program, or None when it is not installed."""
    return shutil.which("dot")


def render(dot_source: str, fmt: str = "svg", *, program: str | None = None, timeout: float = 60.0) -> bytes:
    """Render DOT text to ``fmt`` (``"svg"`` or ``"png"``) with Graphviz; return the bytes.

    Raises ValueError for an unknown format, :class:`GraphvizNotFound` when
    ``dot`` is not installed, :class:`RenderFailed` when it fails.
    """
    if fmt not in FORMATS:
        raise ValueError("cannot render to %r; choose one of %s" % (fmt, ", ".join(FORMATS)))
    executable = program or dot_program()
    if executable is None:
        raise GraphvizNotFound(
            "rendering to %s needs the Graphviz 'dot' program, which is not on PATH; install Graphviz "
            "(e.g. 'apt-get install graphviz') or use the DOT text instead" % (fmt,)
        )
    try:
        done = subprocess.run(
            [executable, "-T" + fmt],
            input=dot_source.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as error:
        raise GraphvizNotFound("Graphviz program %r not found: %s" % (executable, error)) from error
    except subprocess.TimeoutExpired as error:
        raise RenderFailed("Graphviz took longer than %s seconds to render the graph" % (timeout,)) from error
    if done.returncode != 0:
        raise RenderFailed(
            "Graphviz 'dot' failed (exit status %d): %s"
            % (done.returncode, done.stderr.decode("utf-8", "replace").strip())
        )
    return done.stdout
