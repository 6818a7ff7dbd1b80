"""Sphinx configuration for the flowkit documentation (built by ``tox -e docs``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

DOC_DIR = Path(__file__).resolve().parent
# Document the flowkit next to these docs, installed or not.
sys.path.insert(0, str(DOC_DIR.parent))

project = "flowkit"
author = "the flowkit authors"
copyright = "flowkit authors"  # noqa: A001 - the name Sphinx reads
release = "0.1.0"
version = "0.1"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# No network access while building: no intersphinx, no remote images.
root_doc = "index"
exclude_patterns = ["_build", "benchmarks_table.rst"]
pygments_style = "sphinx"
html_theme = "alabaster"
html_title = "flowkit"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
napoleon_google_docstring = True
napoleon_numpy_docstring = False


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


def setup(app: Any) -> None:
    app.connect("source-read", _include_benchmark_table)
