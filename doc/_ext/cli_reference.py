"""``.. flowkit-cli::``: the reference of the ``flowkit`` command, generated from its argparse parser.

The directive builds the parser the command itself uses (``flowkit.cli``)
and writes one section per command and subcommand: its one-line help, then
its ``--help`` text as argparse prints it.  A command added to the parser
appears here with no change to the docs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

#: The width the help text is wrapped at (argparse reads $COLUMNS).
WIDTH = 100


def build_parser() -> argparse.ArgumentParser:
    """The ``flowkit`` command's whole parser, with every command group added."""
    from flowkit import cli

    builder = getattr(cli, "build_parser", None)
    if builder is not None:
        built = builder()
        return built[0] if isinstance(built, tuple) else built
    parser = cli._parser()
    cli._extensions(parser)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, help, parser)`` of each subcommand of ``parser``, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


_UNDERLINES = "=-~^"


def _section(title: str, depth: int) -> list[str]:
    return [title, _UNDERLINES[depth] * len(title), ""]


def _literal(text: str) -> list[str]:
    return [".. code-block:: text", ""] + ["   " + line if line else "" for line in text.rstrip().splitlines()] + [""]


def render(parser: argparse.ArgumentParser, depth: int = 0, path: str = "flowkit") -> list[str]:
    """reStructuredText lines documenting ``parser`` and, below it, each of its subcommands."""
    lines = _literal(parser.format_help())
    for name, help_text, sub in _subcommands(parser):
        lines += _section("%s %s" % (path, name), depth)
        if help_text:
            lines += [help_text[0].upper() + help_text[1:] + ".", ""]
        lines += render(sub, depth + 1, "%s %s" % (path, name))
    return lines


def reference_lines() -> list[str]:
    """The whole reference, with the help text wrapped at :data:`WIDTH` columns."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return render(build_parser())
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def setup(app: Any) -> dict[str, Any]:
    # Sphinx is imported here, so that the rendering above can be tested without it.
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    class FlowkitCli(SphinxDirective):
        """Insert the generated reference of the ``flowkit`` command."""

        has_content = False

        def run(self) -> list[nodes.Node]:
            container = nodes.section()
            container.document = self.state.document
            nested_parse_with_titles(self.state, StringList(reference_lines(), source="flowkit.cli"), container)
            return list(container.children)

    app.add_directive("flowkit-cli", FlowkitCli)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
