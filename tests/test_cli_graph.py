"""``flowkit graph`` and the colours and timeline of ``flowkit show``."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from flowkit import graphs
from flowkit.cli import main
from flowkit.engines import load_from_factory
from flowkit.factories import flow_factory
from flowkit.listeners import DurationListener
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from tests.support import Name

needs_dot = pytest.mark.usefixtures("dot_program")

FACTORY = "tests.test_cli_graph:make_flow"


@flow_factory
def make_flow() -> Any:
    """a -> b, registered under its import path."""
    return linear_flow.Flow("pair").add(Name(name="a"), Name(name="b"))


class Ticker:
    """One second per reading."""

    def __init__(self) -> None:
        self.now = -1.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def url(tmp_path: Path) -> str:
    return "sqlite:///%s" % (tmp_path / "graph.db",)


def run_timed(url: str) -> str:
    with fetch(url) as backend:
        engine = load_from_factory(make_flow, backend=backend)
        with DurationListener(engine, clock=Ticker()):
            engine.run()
        engine.close()
        return engine.flow_detail.uuid


def test_graph_prints_dot(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["graph", FACTORY]) == 0
    out = capsys.readouterr().out
    assert out == graphs.to_dot(make_flow())
    assert list(tmp_path.iterdir()) == []  # no backend was opened (no flowkit.db appeared)


def test_graph_colours_a_stored_run(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = run_timed(url)
    # the factory comes from the flow detail when it is not given
    assert main(["graph", "--flow-detail", uuid, "--backend", url]) == 0
    out = capsys.readouterr().out
    assert 'label="a\\nSUCCESS"' in out and 'fillcolor="palegreen"' in out


def test_graph_writes_dot_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "pair.dot"
    assert main(["graph", FACTORY, "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == graphs.to_dot(make_flow())


@needs_dot
@pytest.mark.parametrize("suffix,magic", [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_graph_renders_by_the_output_suffix(tmp_path: Path, suffix: str, magic: bytes) -> None:
    target = tmp_path / ("pair." + suffix)
    assert main(["graph", FACTORY, "-o", str(target)]) == 0
    assert magic in target.read_bytes()[:1000]


def test_graph_without_dot_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graphs.shutil, "which", lambda name: None)
    assert main(["graph", FACTORY, "--format", "svg"]) == 2
    assert "Graphviz 'dot' program" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["graph"], "give a flow factory"),
        (["graph", "no_colon"], "is not a 'module:factory' name"),
        (
            ["graph", "tests.test_cli_graph:missing"],
            "cannot import 'tests.test_cli_graph:missing': module 'tests.test_cli_graph' has no attribute 'missing'",
        ),
        (["graph", "tests.no_such_module:f"], "ModuleNotFoundError: No module named 'tests.no_such_module'"),
    ],
)
def test_graph_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_show_draws_a_timeline(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = run_timed(url)
    assert main(["show", uuid, "--backend", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  took:    5.000s" in lines
    start = lines.index("timeline (5.000s)")
    # a ran from 1 s to 2 s, b from 3 s to 4 s of a 5 s run, on a 24-column scale
    assert lines[start + 1 :] == [
        "  a |" + " " * 4 + "=" * 5 + " " * 15 + "| 1.000s",
        "  b |" + " " * 14 + "=" * 5 + " " * 5 + "| 1.000s",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_show_colours_states_on_a_terminal(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uuid = run_timed(url)
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    assert main(["show", uuid, "--backend", url]) == 0
    coloured = terminal.getvalue()
    assert "  state:   \x1b[32mSUCCESS\x1b[0m" in coloured
    row = next(line for line in coloured.splitlines() if line.startswith("a "))
    assert "\x1b[32mSUCCESS\x1b[0m" in row
    monkeypatch.setenv("NO_COLOR", "1")
    terminal.seek(0)
    terminal.truncate()
    assert main(["show", uuid, "--backend", url]) == 0
    plain = terminal.getvalue()
    assert "\x1b[" not in plain
    # colours are added after padding: without them the table is the same, still aligned
    assert re.sub("\x1b\\[[0-9;]*m", "", coloured) == plain
