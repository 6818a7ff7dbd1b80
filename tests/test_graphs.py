"""flowkit.graphs: DOT text of the execution graph (always), rendering (when Graphviz is installed)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from flowkit import graphs, retry, states
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from flowkit.task import Task
from tests.support import BoomError, Fail, Name, stored_states

needs_dot = pytest.mark.usefixtures("dot_program")


class Check(Task):
    """Return whether the injected stock is positive."""

    def execute(self, stock: int) -> bool:
        return stock > 0


def in_stock(history: dict[str, Any]) -> bool:
    return bool(history["check"])


def nested() -> Any:
    return linear_flow.Flow("outer").add(
        Name(name="a"),
        unordered_flow.Flow("fan", retry=retry.Times(2, name="again")).add(Name(name="b"), Name(name="c")),
        linear_flow.Flow("solo").add(linear_flow.Flow("inner").add(Name(name="d"))),
    )


def node_lines(dot: str) -> dict[str, str]:
    return {m.group(1): line for line in dot.splitlines() if (m := re.match(r'\s*"([^"]+)" \[', line))}


def edges(dot: str) -> list[tuple[str, str]]:
    return re.findall(r'^\s*"([^"]+)" -> "([^"]+)"', dot, re.M)


def test_structure_nodes_edges_and_clusters() -> None:
    dot = graphs.to_dot(nested())
    assert dot.startswith('digraph "outer" {\n') and dot.endswith("}\n")
    assert set(node_lines(dot)) == {"a", "again", "b", "c", "d"}
    assert edges(dot) == [("a", "again"), ("again", "b"), ("again", "c"), ("b", "d"), ("c", "d")]
    assert 'shape="hexagon"' in node_lines(dot)["again"]  # retries look different
    assert 'shape="box"' in node_lines(dot)["a"]
    # nested flows are clusters, inner inside solo; the root flow is the graph itself
    assert re.search(r'label="solo".*?subgraph "cluster_\d+" \{\s*graph \[label="inner"', dot, re.S)
    assert 'label="outer", labelloc' in dot and 'graph [label="outer", style' not in dot
    # no states given: nothing is coloured
    assert "fillcolor=\"palegreen\"" not in dot


def test_without_clusters_and_the_same_text_every_time() -> None:
    dot = graphs.to_dot(nested(), clusters=False)
    assert "subgraph" not in dot
    assert graphs.to_dot(nested()) == graphs.to_dot(nested())


def test_single_atom() -> None:
    dot = graphs.to_dot(Name(name="alone"))
    assert set(node_lines(dot)) == {"alone"} and edges(dot) == []


def test_names_are_quoted() -> None:
    dot = graphs.to_dot(linear_flow.Flow('say "hi"').add(Name(name='a "quoted" \\ name')))
    assert '"a \\"quoted\\" \\\\ name" [' in dot
    assert 'digraph "say \\"hi\\"" {' in dot


def fulfil() -> Any:
    check, ship, wait = Check(name="check", provides="ok"), Name(name="ship"), Name(name="wait")
    flow = graph_flow.Flow("fulfil").add(check, ship, wait)
    flow.link(check, ship, decider=in_stock)
    flow.link(check, wait, decider=lambda history: not history["check"])
    return flow


def test_decider_links_are_dashed_and_labelled() -> None:
    dot = graphs.to_dot(fulfil())
    assert '"check" -> "ship" [label="in_stock", style="dashed"];' in dot
    assert '"check" -> "wait" [label="decider", style="dashed"];' in dot
    assert 'label="in_stock"' not in graphs.to_dot(fulfil(), deciders=False)


def test_coloured_by_the_engine_run(load: Any) -> None:
    engine = load(fulfil(), store={"stock": 0})
    engine.run()
    lines = node_lines(graphs.to_dot(engine))
    assert 'fillcolor="palegreen"' in lines["check"] and 'label="check\\nSUCCESS"' in lines["check"]
    assert 'fillcolor="palegreen"' in lines["wait"]
    assert 'fillcolor="lightgrey"' in lines["ship"] and "dashed" in lines["ship"]


def test_coloured_by_a_flow_detail_or_explicit_states(load: Any) -> None:
    flow = linear_flow.Flow("f").add(Name(name="a"), Fail(name="b"))
    engine = load(flow)
    with pytest.raises(BoomError):
        engine.run()
    lines = node_lines(graphs.to_dot(flow, flow_detail=engine.storage.flow_detail))
    assert 'fillcolor="khaki"' in lines["a"]  # REVERTED
    lines = node_lines(graphs.to_dot(flow, atom_states={"a": states.SUCCESS, "b": states.FAILURE}))
    assert graphs.STATE_COLORS[states.FAILURE] in lines["b"]
    assert 'fillcolor="palegreen"' in lines["a"]


def test_every_state_an_atom_or_flow_is_stored_in_has_a_colour_of_its_own() -> None:
    wanted = stored_states()
    assert {states.WAITING, states.BROKEN, states.SUSPENDED} <= wanted  # the derivation sees flowkit's own states
    assert wanted - set(graphs.STATE_COLORS) == set()
    colours = [graphs.STATE_COLORS[state] for state in wanted]
    assert len(set(colours)) == len(colours), "two states share a colour"
    lines = node_lines(graphs.to_dot(linear_flow.Flow("f").add(Name(name="a")), atom_states={"a": states.BROKEN}))
    assert 'fillcolor="%s"' % (graphs.STATE_COLORS[states.BROKEN],) in lines["a"]


def test_render_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="gif"):
        graphs.render("digraph {}", "gif")


def test_render_without_dot_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graphs.shutil, "which", lambda name: None)
    with pytest.raises(graphs.GraphvizNotFound, match="apt-get install graphviz"):
        graphs.render(graphs.to_dot(nested()), "svg")


@needs_dot
def test_render_svg_and_png() -> None:
    dot = graphs.to_dot(nested())
    svg = graphs.render(dot, "svg")
    assert b"<svg" in svg and b">again<" in svg
    assert graphs.render(dot, "png").startswith(b"\x89PNG\r\n\x1a\n")


@needs_dot
def test_render_reports_bad_dot() -> None:
    with pytest.raises(graphs.RenderFailed, match="exit status"):
        graphs.render("digraph { this is not dot", "svg")
