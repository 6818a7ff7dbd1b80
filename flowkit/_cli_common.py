"""What the ``flowkit`` command's modules share: the table, the usage error, the factory options.

:mod:`flowkit.cli` and the command groups it adds (:mod:`flowkit.conductors.cli`)
both import it, so neither imports the other's helpers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from flowkit import _imports

__all__ = [
    # the commands
    "Handler",
    "CommandError",
    # output
    "CELL_WIDTH",
    "cut",
    "table",
    # rebuilding flows
    "import_factory",
    "factory_options",
    "prepare_factories",
]

#: A subcommand: given the parsed arguments and standard output, returns the exit status.
Handler = Callable[[argparse.Namespace, TextIO], int]

# Cells longer than this are cut, so one huge result cannot wreck the table.
CELL_WIDTH = 48


class CommandError(Exception):
    """A user-facing error: printed as ``flowkit: <message>``, exit status 2."""


def cut(text: str, width: int = CELL_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters."""
    text = " ".join(text.split())  # tracebacks and multi-line values on one line
    return text if len(text) <= width else text[: width - 3] + "..."


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], style: Callable[[int, str, str], str] | None = None
) -> str:
    """Left-aligned columns separated by two spaces.

    ``style(column, cell, padded)`` may decorate a padded body cell (colours),
    after the widths are worked out from the plain text.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(headers, widths)).rstrip()]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths)]
        if style is not None:
            cells = [style(column, cell, padded) for column, (cell, padded) in enumerate(zip(row, cells))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def import_factory(name: str) -> Any:
    """The object ``"module:factory"`` names, given on the command line (so trusted)."""
    try:
        return _imports.resolve(name)
    except ValueError as error:
        raise CommandError("%r is not a 'module:factory' name" % (name,)) from error
    except _imports.ResolveError as error:
        raise CommandError(str(error)) from error


def factory_options() -> argparse.ArgumentParser:
    """The options saying which factories a command may rebuild flows from."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--import",
        dest="import_modules",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so the flow factories it decorates with @flow_factory are registered (repeatable)",
    )
    parser.add_argument(
        "--allow-module",
        dest="allow_modules",
        action="append",
        default=[],
        metavar="PREFIX",
        help="let factories named 'PREFIX...:name' in the logbook be imported (repeatable; "
        "prefer --import or entry points)",
    )
    return parser


def prepare_factories(args: argparse.Namespace) -> tuple[str, ...]:
    """Import the ``--import`` modules; return the ``--allow-module`` prefixes."""
    import importlib

    from flowkit.factories import _prefixes

    for module in args.import_modules:
        try:
            importlib.import_module(module)
        except Exception as error:
            raise CommandError("--import %s: %s: %s" % (module, type(error).__name__, error)) from error
    try:
        return _prefixes(args.allow_modules)
    except ValueError as error:
        raise CommandError("--allow-module: %s" % (error,)) from error
