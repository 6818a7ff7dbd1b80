"""One adapter so the same benchmark code drives flowkit or TaskFlow.

flowkit keeps TaskFlow's import paths, so the adapter only has to pick the
top-level package name; everything else (``Task``, the three patterns,
``engines.load``/``engines.run``) is looked up the same way for both.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "LIBRARIES",
    "Library",
    "LibraryUnavailable",
    "import_library",
    "prepare_engine",
]

#: The libraries the suite knows how to drive, in the order they are reported.
LIBRARIES: tuple[str, ...] = ("flowkit", "taskflow")


class LibraryUnavailable(ImportError):
    """The requested library (or one of its modules) cannot be imported."""


@dataclass(frozen=True)
class Library:
    """The modules of one workflow library that the benchmarks use.

    ``task``, ``engines``, ``linear_flow``, ``unordered_flow`` and
    ``graph_flow`` are the library's modules of those names.
    """

    name: str
    version: str
    task: ModuleType
    engines: ModuleType
    linear_flow: ModuleType
    unordered_flow: ModuleType
    graph_flow: ModuleType

    def load(self, flow: Any, mode: str, *, max_workers: int = 2) -> Any:
        """Return an engine for ``flow`` in ``mode`` ("serial" or "parallel").

        ``max_workers`` is only passed to the parallel engine: TaskFlow's
        serial engine ignores it, but a stricter engine may reject it.
        """
        if mode == "parallel":
            return self.engines.load(flow, engine=mode, max_workers=max_workers)
        return self.engines.load(flow, engine=mode)


def prepare_engine(engine: Any) -> None:
    """Do every step an engine takes before its first atom executes.

    TaskFlow refuses ``prepare()`` before ``compile()`` and only validates
    requirements inside ``run()`` unless ``validate()`` is called first, so
    all three are called here when the engine has them. That way "prepare"
    means the same thing (flow fully checked and storage ready) for both
    libraries, and "run" measures only execution.
    """
    for step in ("compile", "prepare", "validate"):
        method = getattr(engine, step, None)
        if method is not None:
            method()


def _version_of(name: str, package: ModuleType) -> str:
    """Best-effort version string: metadata, ``__version__``, or git commit."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    version = getattr(package, "__version__", None)
    if isinstance(version, str):
        return version
    # An uninstalled checkout (the usual case for flowkit while developing):
    # the commit is the only useful identifier.
    source = getattr(package, "__file__", None)
    if source:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=Path(source).parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
        except OSError:
            commit = ""
        if commit:
            return f"git {commit}"
    return "unknown"


def import_library(name: str) -> Library:
    """Import ``name`` ("flowkit" or "taskflow") and return its modules.

    Raises :class:`LibraryUnavailable` with the underlying import error when
    the library (or a module the benchmarks need) is missing.
    """
    if name not in LIBRARIES:
        raise ValueError(f"unknown library {name!r}; expected one of {LIBRARIES}")
    try:
        package = importlib.import_module(name)
        task = importlib.import_module(f"{name}.task")
        engines = importlib.import_module(f"{name}.engines")
        linear_flow = importlib.import_module(f"{name}.patterns.linear_flow")
        unordered_flow = importlib.import_module(f"{name}.patterns.unordered_flow")
        graph_flow = importlib.import_module(f"{name}.patterns.graph_flow")
    except ImportError as exc:
        raise LibraryUnavailable(f"cannot import {name}: {exc}") from exc
    return Library(
        name=name,
        version=_version_of(name, package),
        task=task,
        engines=engines,
        linear_flow=linear_flow,
        unordered_flow=unordered_flow,
        graph_flow=graph_flow,
    )
