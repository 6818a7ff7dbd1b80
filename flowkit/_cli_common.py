"""What the ``flowkit`` command's modules share: the table, the usage error, the factory options.

:mod:`flowkit.cli` and the command groups it adds (:mod:`flowkit.conductors.cli`)
both import it, so neither imports the other's helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    "paint",
    "wants_colour",
    "STATE_STYLES",
    "on_closed_pipe",
    # rebuilding flows
    "put_cwd_on_path",
    "import_factory",
    "factory_arguments",
    "factory_options",
    "prepare_factories",
    # job boards
    "board_conf",
    # running flows
    "ENGINE_MODES",
    "engine_option",
    "engine_options",
]

#: What ``--engine`` accepts, wherever a command takes it.
ENGINE_MODES = ("serial", "parallel", "distributed")

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


#: How each state is drawn on a terminal (rich styles); what fails or needs a hand stands out.
STATE_STYLES: dict[str, str] = {
    "SUCCESS": "green",
    "FAILURE": "bold red",
    "REVERT_FAILURE": "bold red",
    "BROKEN": "bold white on red",
    "INTERRUPTED": "bold magenta",
    "REVERTED": "yellow",
    "REVERTING": "yellow",
    "RUNNING": "cyan",
    "WAITING": "blue",
    "RETRYING": "magenta",
    "SUSPENDED": "magenta",
    "IGNORE": "dim",
}


def wants_colour(out: TextIO) -> bool:
    """True when ``out`` is a terminal and ``NO_COLOR`` is unset."""
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")
    except ValueError:  # a closed stream
        return False


def _console(colour: bool) -> Any:
    import io

    from rich.console import Console

    # Off a terminal nothing is wrapped or cut but by cut(): a pipe gets whole rows.
    return Console(
        file=io.StringIO(),
        force_terminal=colour,
        no_color=not colour,
        color_system="standard" if colour else None,
        width=None if colour else 100_000,
        highlight=False,
        emoji=False,
        markup=False,
    )


def _rendered(console: Any, renderable: Any) -> str:
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.file.getvalue().rstrip("\n").splitlines())


def paint(text: str, style: str | None, colour: bool) -> str:
    """``text`` in ``style`` (a rich style) when ``colour``, else as it is."""
    if not colour or not style:
        return text
    from rich.text import Text

    return _rendered(_console(True), Text(text, style=style, no_wrap=True))


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    style: Callable[[int, str], str | None] | None = None,
    *,
    colour: bool = False,
) -> str:
    """Left-aligned columns two spaces apart, drawn by rich.

    ``style(column, cell)`` may name a rich style for a body cell (used when
    ``colour``).  Cells are plain text: brackets in stored data are never
    read as markup.
    """
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False, header_style="")
    for header in headers:
        # On a terminal narrower than the table, rich cuts the widest cells with an ellipsis.
        grid.add_column(header, no_wrap=True, overflow="ellipsis")
    for row in rows:
        cells = []
        for column, cell in enumerate(row):
            wanted = style(column, cell) if (style is not None and colour) else None
            cells.append(Text(cell, style=wanted or ""))
        grid.add_row(*cells)
    return _rendered(_console(colour), grid)


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


def on_closed_pipe() -> int:
    """What a command does when its reader went away (``flowkit flows | head``): stop quietly, exit 1.

    Standard output is pointed at ``/dev/null`` first, so the interpreter's
    own flush at exit cannot fail again and print a traceback.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test's capture): nothing to protect
        pass
    return 1


def put_cwd_on_path() -> None:
    """Let ``--import`` and ``module:factory`` find modules in the current folder, as ``python -m`` does."""
    here = os.getcwd()
    if "" not in sys.path and here not in sys.path:
        sys.path.insert(0, here)


def factory_arguments(pairs: Sequence[str]) -> dict[str, Any]:
    """``["K=V", ...]`` from ``--arg`` as keywords: each V read as JSON when it is JSON, else as text."""
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CommandError("--arg %r is not KEY=VALUE with KEY a Python name" % (pair,))
        try:
            found[key] = json.loads(text)
        except ValueError:
            found[key] = text
    return found


def engine_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--engine serial|parallel|distributed``, ``--max-workers`` and ``--address`` to ``parser``."""
    parser.add_argument("--engine", choices=ENGINE_MODES, default="serial", help="engine mode (default: serial)")
    if not any("--max-workers" in action.option_strings for action in parser._actions):
        parser.add_argument("--max-workers", type=int, default=None, help="pool size of a parallel engine")
    parser.add_argument(
        "--address", default=None, metavar="TCP_URL",
        help="the Dask scheduler of --engine distributed (default: a local cluster per run)",
    )  # fmt: skip


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of :func:`flowkit.engines.load_from_detail` that :func:`engine_option` parsed."""
    options: dict[str, Any] = {"engine": args.engine}
    if getattr(args, "max_workers", None) is not None:
        options["max_workers"] = args.max_workers
    if getattr(args, "address", None) is not None:
        if args.engine != "distributed":
            raise CommandError("--address is the Dask scheduler of --engine distributed")
        options["address"] = args.address
    return options


_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def board_conf(board: str) -> dict[str, Any]:
    """The :func:`flowkit.jobs.backends.fetch` conf for a ``--board`` value (a URL or a kind)."""
    if "://" not in board:
        return {"board": board}
    scheme = board.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme == "memory":
        return {"board": "memory"}
    if scheme in ("redis", "rediss", "unix"):
        return {"board": "redis", "url": board}
    if scheme in _SQL_SCHEMES:
        return {"board": "sql", "url": board}
    raise ValueError("no job board for %r (known: redis://..., postgresql://..., sqlite:///..., memory://)" % (board,))
