"""Sphinx configuration for the flowkit documentation (built by ``tox -e docs``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

DOC_DIR = Path(__file__).resolve().parent
# Document the flowkit next to these docs, installed or not.
sys.path.insert(0, str(DOC_DIR.parent))
# The docs' own extensions (the generated CLI reference).
sys.path.insert(0, str(DOC_DIR / "_ext"))

project = "flowkit"
author = "the flowkit authors"
copyright = "flowkit authors"  # noqa: A001 - the name Sphinx reads
release = "0.1.0"
version = "0.1"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "cli_reference",
]

# No network access while building: no intersphinx, no remote images.
root_doc = "index"
exclude_patterns = ["_build", "_ext", "benchmarks_table.rst"]
pygments_style = "sphinx"
html_theme = "alabaster"
html_title = "flowkit"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
# Signatures name the spec aliases of flowkit.atom, not what they expand to.
autodoc_type_aliases = {name: "flowkit.atom." + name for name in ("ProvidesSpec", "RequiresSpec", "RebindSpec")}

# Every cross-reference must resolve (with -W, an unresolved one fails the build).  The build
# runs offline, so there is no intersphinx inventory of the standard library or of the
# third-party packages flowkit's signatures name: those names, and only those, are ignored.
nitpicky = True
_STDLIB = "|".join(sorted(name for name in sys.stdlib_module_names if not name.startswith("_")))
# (``sa`` is how flowkit's modules import SQLAlchemy.)
_THIRD_PARTY = "sa|sqlalchemy|networkx|futurist|distributed|dask|redis|starlette|jinja2|uvicorn|opentelemetry|prometheus_client"
nitpick_ignore_regex = [
    (r"py:.*", r"(%s)(\..+)?" % (_STDLIB,)),
    # Builtin generics, as the spec aliases spell them.
    (r"py:class", r"(set|frozenset|list|dict|tuple)\[.*\]"),
    # Standard-library names that signatures use unqualified (``from types import TracebackType``).
    (r"py:class", r"TracebackType"),
    # Internal types in public signatures: the compilation ``Storage.attach`` is handed by the
    # engine, the private ``_run`` argument of ``FlowHandle``, the SQL store a
    # ``SQLAlchemyConnection`` belongs to; internal modules have no page.
    (r"py:class", r"(flowkit\.engines\._compiler\.)?Compilation|_Run|(flowkit\.persistence\._sql\.store\.)?SQLStore"),
    (r"py:.*", r"(%s)(\..+)?" % (_THIRD_PARTY,)),
]


def _include_benchmark_table(app: Any, docname: str, source: list[str]) -> None:
    """Append the generated benchmark table to the benchmarks page when it exists.

    ``python -m benchmarks --output doc/benchmarks_table.rst`` writes the table; until it has
    been run the page says so instead of failing the build.
    """
    if docname != "benchmarks":
        return
    if (DOC_DIR / "benchmarks_table.rst").exists():
        source[0] += "\n\n.. include:: benchmarks_table.rst\n"
    else:
        source[0] += (
            "\n\n.. note::\n\n   No table has been generated yet: run\n"
            "   ``python -m benchmarks --output doc/benchmarks_table.rst``.\n"
        )


def _public_bases(app: Any, name: str, obj: Any, options: Any, bases: list[type]) -> None:
    """Show a class's public bases: an internal (underscored) base is replaced by its own bases.

    Internal classes have no page to link to; the public contract they implement does.
    """
    public: list[type] = []
    todo = list(bases)
    while todo:
        base = todo.pop(0)
        private = base.__name__.startswith("_") or any(part.startswith("_") for part in base.__module__.split("."))
        if private and base.__module__.startswith("flowkit"):
            todo[:0] = [b for b in base.__bases__ if b is not object]
        elif base not in public:
            public.append(base)
    bases[:] = public


def setup(app: Any) -> None:
    app.connect("source-read", _include_benchmark_table)
    app.connect("autodoc-process-bases", _public_bases)
