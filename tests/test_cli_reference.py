"""The CLI reference page (doc/cli.rst) is generated from the command's own parser."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

EXTENSION = Path(__file__).resolve().parent.parent / "doc" / "_ext" / "cli_reference.py"


def _extension() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_reference", EXTENSION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(parser: argparse.ArgumentParser, path: str = "flowkit") -> list[str]:
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append("%s %s" % (path, name))
                found += _commands(sub, "%s %s" % (path, name))
    return found


def test_every_command_and_subcommand_has_a_section_with_its_options() -> None:
    reference = _extension()
    lines = reference.reference_lines()
    commands = _commands(reference.build_parser())
    assert "flowkit conductor" in commands and "flowkit jobs post" in commands
    for command in commands:
        at = lines.index(command)
        assert set(lines[at + 1]) <= set("=-~^") and len(lines[at + 1]) == len(command), command
    text = "\n".join(lines)
    # Options come from the parser itself: the conductor's metrics options are there.
    assert "--metrics-port PORT" in text and "--metrics-host HOST" in text
    assert text.count("usage: flowkit ") == len(commands) + 1


def test_a_command_added_to_the_parser_appears_in_the_reference() -> None:
    reference = _extension()
    built = reference.build_parser()
    commands = next(a for a in built._actions if isinstance(a, argparse._SubParsersAction))
    extra = commands.add_parser("frobnicate", help="do something new")
    extra.add_argument("--level", type=int, help="how much")
    lines = reference.render(built)
    at = lines.index("flowkit frobnicate")
    assert lines[at + 3] == "Do something new."
    assert any("--level LEVEL" in line and "how much" in line for line in lines[at:])
