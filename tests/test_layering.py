"""The layering written at the top of ``flowkit/__init__.py``, checked on the import graph.

The graph is read from the source with :mod:`ast`, so a rule holds for every
import statement, not only for those a test happens to execute.  An import
counts as one of three kinds:

- ``module``: run while the importing module is imported (top level, class
  bodies, ``try``/``if`` blocks at top level);
- ``function``: inside a function, run when the function is called (a lazy
  import);
- ``typing``: under ``if TYPE_CHECKING:``, never run.

The rules:

(a) No import cycles between modules, counting imports of every kind: a lazy
    or type-only import that goes back up is still a dependency in both
    directions, and is how every cycle flowkit has had was hidden.  An edge
    goes to the module named (``from flowkit.engines import engine`` goes to
    ``flowkit.engines.engine``); the import of parent packages that Python does
    on the way is not an edge, or every package ``__init__`` that re-exports
    its children would be in a cycle with them.
(b) The engine core imports no SQL, Dask, Redis or web package at module
    level, directly or through any flowkit module it imports at module level;
    backends and executors import them lazily.
(c) Per package, what it never imports (imports of ``module`` and
    ``function`` kind; ``typing`` imports only name types), except at the
    lazy seams listed in ``LAZY_SEAMS``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flowkit"


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``importer`` imports ``target`` (a module name) on ``line``."""

    importer: str
    target: str
    kind: str  # "module", "function" or "typing"
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(name: str, source: str, *, is_package: bool) -> Iterator[Import]:
    package = name.split(".") if is_package else name.split(".")[:-1]

    def walk(node: ast.AST, kind: str) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    yield from visit(statement, "typing")
                for statement in child.orelse:
                    yield from visit(statement, kind)
            else:
                yield from visit(child, kind)

    def visit(node: ast.AST, kind: str) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, kind, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                submodule = "%s.%s" % (base, alias.name)
                yield Import(name, submodule if submodule in MODULES else base, kind, node.lineno)
        inner = "function" if kind == "module" and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else kind
        yield from walk(node, inner)

    yield from walk(ast.parse(source), "module")


# ``from x import a, b`` is one edge when neither is a module: dict.fromkeys drops the repeats.
IMPORTS: list[Import] = list(
    dict.fromkeys(
        edge
        for name, path in MODULES.items()
        for edge in _imports_of(name, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py")
    )
)


def _within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _internal(kinds: Iterable[str]) -> dict[str, set[str]]:
    wanted = set(kinds)
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for edge in IMPORTS:
        if edge.kind in wanted and edge.target in MODULES and edge.target != edge.importer:
            graph[edge.importer].add(edge.target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component: set[str] = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def _shown(edges: Iterable[Import]) -> str:
    return "\n".join(
        "  %s:%d imports %s (%s)" % (MODULES[e.importer].relative_to(ROOT), e.line, e.target, e.kind) for e in edges
    )


# -- (a) no cycles -------------------------------------------------------------------

#: Cycles that are part of the design, each with the reason it cannot be cut.
ACCEPTED_CYCLES: dict[frozenset[str], str] = {
    frozenset({"flowkit.exceptions", "flowkit.types.failure"}): (
        "WrappedFailure (in the one error tree) holds Failures, and Failure.reraise() raises WrappedFailure; "
        "exceptions imports Failure for its annotations only, failure imports exceptions when it raises"
    ),
}


def test_no_import_cycles() -> None:
    graph = _internal(("module", "function", "typing"))
    cycles = set(_cycles(graph))
    unexpected = cycles - set(ACCEPTED_CYCLES)
    details = [
        _shown(e for e in IMPORTS if e.importer in cycle and e.target in cycle and e.importer != e.target)
        for cycle in sorted(unexpected, key=sorted)
    ]
    assert not unexpected, "import cycles between modules:\n" + "\n\n".join(details)
    gone = set(ACCEPTED_CYCLES) - cycles
    assert not gone, "no longer cycles, remove them from ACCEPTED_CYCLES: %s" % sorted(sorted(cycle) for cycle in gone)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]


def test_imports_are_read_with_their_kind() -> None:
    source = """
import json
from typing import TYPE_CHECKING
from . import _compiler
from .. import states
from flowkit.engines import engine, load
if TYPE_CHECKING:
    from flowkit.persistence.models import FlowDetail
else:
    import flowkit.retry

class Holder:
    from flowkit import task

def later() -> None:
    import distributed
"""
    found = {(e.target, e.kind) for e in _imports_of("flowkit.engines.example", source, is_package=False)}
    assert found == {
        ("json", "module"),
        ("typing", "module"),
        ("flowkit.engines._compiler", "module"),  # relative to the importing module's package
        ("flowkit.states", "module"),
        ("flowkit.engines.engine", "module"),  # a submodule is the edge, not its package
        ("flowkit.engines", "module"),  # a name defined in the package's __init__
        ("flowkit.persistence.models", "typing"),
        ("flowkit.retry", "module"),
        ("flowkit.task", "module"),  # class bodies run at import
        ("distributed", "function"),
    }


# -- (b) the engine core stays light -------------------------------------------------

#: The engine core: what runs a flow in one process.
ENGINE_CORE = (
    "flowkit.atom",
    "flowkit.task",
    "flowkit.retry",
    "flowkit.waits",
    "flowkit.policies",
    "flowkit.clock",
    "flowkit.flow",
    "flowkit.patterns",
    "flowkit.storage",
    "flowkit.states",
    "flowkit.types",
    "flowkit.engines",
)
#: Engine modules outside the core: they choose where atoms run.
NOT_CORE = ("flowkit.engines.executors", "flowkit.engines.distributed")

SQL = ("sqlalchemy", "alembic", "psycopg", "psycopg2", "pymysql", "MySQLdb")
DASK = ("distributed", "dask")
REDIS = ("redis",)
WEB = ("flask", "fastapi", "starlette", "aiohttp", "django", "tornado", "uvicorn", "werkzeug", "jinja2")
HEAVY = SQL + DASK + REDIS + WEB


def _core_modules() -> list[str]:
    return [m for m in MODULES if _within(m, ENGINE_CORE) and not _within(m, NOT_CORE)]


def _module_level_closure(start: str) -> dict[str, Import]:
    """Every flowkit module ``start`` imports at module level, directly or not, with the edge that got there."""
    reached: dict[str, Import] = {}
    todo = [start]
    while todo:
        current = todo.pop()
        for edge in IMPORTS:
            if edge.importer == current and edge.kind == "module" and edge.target in MODULES:
                if edge.target not in reached and edge.target != start:
                    reached[edge.target] = edge
                    todo.append(edge.target)
    return reached


@pytest.mark.parametrize("module", _core_modules())
def test_engine_core_imports_no_sql_dask_redis_or_web_code(module: str) -> None:
    closure = _module_level_closure(module)
    loaded = {module, *closure}
    heavy = [e for e in IMPORTS if e.importer in loaded and e.kind == "module" and _within(e.target, HEAVY)]
    assert not heavy, "%s imports at module level (through %s):\n%s" % (
        module,
        ", ".join(sorted({e.importer for e in heavy})),
        _shown(heavy),
    )


def test_importing_the_engine_core_loads_no_sql_dask_redis_or_web_package() -> None:
    # The same rule seen from the outside: what a fresh interpreter holds after importing the core.
    code = "import sys\n%s\nprint(' '.join(sorted(sys.modules)))" % "\n".join("import " + m for m in _core_modules())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    loaded = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    heavy = sorted(m for m in loaded.stdout.split() if _within(m, HEAVY) and m != "sqlite3")
    assert heavy == []


# -- (c) what each package never imports ----------------------------------------------

#: The modules of the ``flowkit`` command.
CLI = ("flowkit.cli", "flowkit.conductors.cli", "flowkit._cli_common", "flowkit._cli_metrics", "flowkit.web.cli")
CLI += ("flowkit._cli_plan",)  # flowkit plan, flowkit resume --dry-run
CLI += ("flowkit.__main__", "flowkit._cli_flows", "flowkit._cli_recover")  # python -m flowkit, flows, recover
CLI += ("flowkit._cli_resources",)  # flowkit reconcile, flowkit resources
#: What every other module may build on: errors, states, names, small value types, the clock.
FOUNDATION = (
    "flowkit.exceptions",
    "flowkit.states",
    "flowkit._names",
    "flowkit._imports",
    "flowkit.types",
    "flowkit.clock",
)
#: What users subclass and compose.
ATOMS = (
    "flowkit.atom",
    "flowkit.task",
    "flowkit.retry",
    "flowkit.waits",
    "flowkit.policies",
    "flowkit.decorators",
    "flowkit.flow",
    "flowkit.patterns",
)
#: The SQL code of the persistence package.
PERSISTENCE_SQL = (
    "flowkit.persistence._sql",
    "flowkit.persistence.backends.impl_sqlalchemy",
    "flowkit.persistence.migrations",
)
#: What runs flows and stores them.
_RUNNING = ("flowkit.engines", "flowkit.storage", "flowkit.persistence", "flowkit.factories")
#: What is built on the engine.
_ABOVE_ENGINES = ("flowkit.jobs", "flowkit.conductors", "flowkit.listeners", "flowkit.testing", "flowkit.graphs") + CLI
_ABOVE_ENGINES += ("flowkit.web",)  # the dashboard
_ABOVE_ENGINES += ("flowkit.metrics", "flowkit.tracing")  # observers of engines and conductors

#: Package (or module) -> what it never imports; a module obeys the rules of
#: every package it is in.  The foundation has its own, stricter test
#: (``test_foundation_builds_on_nothing_else``).  Matches the layering note in
#: ``flowkit/__init__.py``.
NEVER_IMPORTS: dict[str, tuple[str, ...]] = {
    # A task never sees the engine; patterns never run anything.
    **dict.fromkeys(ATOMS, _RUNNING + _ABOVE_ENGINES),
    # The engine never imports boards, conductors, listeners or the command, nor SQL code.
    "flowkit.engines": _ABOVE_ENGINES + PERSISTENCE_SQL,
    # An executor never sees persistence.
    "flowkit.engines.executors": ("flowkit.persistence", "flowkit.storage", "flowkit.factories"),
    "flowkit.engines.distributed": ("flowkit.persistence", "flowkit.storage", "flowkit.factories"),
    "flowkit.storage": ("flowkit.engines", "flowkit.factories") + _ABOVE_ENGINES + PERSISTENCE_SQL,
    # Stored data only: no atoms, no engine.
    "flowkit.persistence": ATOMS + ("flowkit.engines", "flowkit.storage", "flowkit.factories") + _ABOVE_ENGINES,
    # The only way stored data reaches code; it reads nothing from storage itself.
    "flowkit.factories": _RUNNING[:-1] + ATOMS + _ABOVE_ENGINES,
    # Signals are stored data plus an in-process wake-up: never the engine or anything on it.
    "flowkit.signals": ATOMS + ("flowkit.engines", "flowkit.storage", "flowkit.factories") + _ABOVE_ENGINES,
    # Cancel requests are stored data too (signals of their own), acted on by the engine.
    "flowkit.cancellation": ATOMS + ("flowkit.engines", "flowkit.storage", "flowkit.factories") + _ABOVE_ENGINES,
    # Job boards store jobs and run nothing.
    "flowkit.jobs": ATOMS + ("flowkit.engines", "flowkit.storage", "flowkit.factories") + _ABOVE_ENGINES[1:],
    # Conductors run jobs with the engine; the command sits above them.
    "flowkit.conductors": ("flowkit.listeners", "flowkit.testing", "flowkit.graphs") + CLI,
    # Listeners see the notifier only (and engine types, in annotations).
    "flowkit.listeners": _RUNNING + ("flowkit.jobs", "flowkit.conductors", "flowkit.testing", "flowkit.graphs") + CLI,
    # Drawing a flow needs the compiler, never a backend or a board.
    "flowkit.graphs": ("flowkit.persistence", "flowkit.factories") + _ABOVE_ENGINES,
    # Starting by key is built on the engine, beside conductors, not on them.
    "flowkit.starts": ("flowkit.jobs", "flowkit.conductors", "flowkit.listeners", "flowkit.testing", "flowkit.graphs")
    + CLI,
    # Reconciling is built on boards and conductors; the command sits above it.
    "flowkit.reconcile": ("flowkit.listeners", "flowkit.testing", "flowkit.graphs") + CLI,
    # The conformance suites test the public contracts of backends and boards.
    "flowkit.testing": ("flowkit.conductors", "flowkit.listeners", "flowkit.graphs") + CLI,
    # The structure a run recorded and the changes a resume may make: data and rules, never running anything.
    "flowkit.versioning": ("flowkit.storage", "flowkit.factories") + _ABOVE_ENGINES + PERSISTENCE_SQL,
    # What a resume would do: read from the logbook and the compiled flow, built on the engine's helpers.
    "flowkit.plan": ("flowkit.jobs", "flowkit.conductors", "flowkit.listeners", "flowkit.testing", "flowkit.graphs")
    + CLI,
    # Metrics and tracing watch engines and conductors through their notifiers: never boards, SQL or the command.
    **dict.fromkeys(
        ("flowkit.metrics", "flowkit.tracing"),
        ("flowkit.jobs", "flowkit.testing", "flowkit.graphs", "flowkit.web") + PERSISTENCE_SQL + CLI,
    ),
    # The dashboard reads logbooks and boards it is handed; the command builds them.
    "flowkit.web": ("flowkit.jobs", "flowkit.conductors", "flowkit.testing") + CLI,
    # TaskFlow's module paths beside the layers they belong to.
    "flowkit.deciders": _RUNNING + _ABOVE_ENGINES,
    "flowkit.logging": ATOMS + _RUNNING + _ABOVE_ENGINES,
    "flowkit.formatters": ATOMS + _RUNNING + _ABOVE_ENGINES,
    "flowkit.utils": ATOMS + ("flowkit.engines", "flowkit.storage", "flowkit.factories") + _ABOVE_ENGINES,
}

#: Imports that break a rule of NEVER_IMPORTS on purpose, each with the reason.
LAZY_SEAMS: dict[tuple[str, str], str] = {}


def _forbidden_to(module: str) -> tuple[str, ...] | None:
    """What ``module`` never imports (None when no rule covers it; the command may import anything)."""
    if _within(module, CLI):
        return ()
    owners = [owner for owner in NEVER_IMPORTS if _within(module, (owner,))]
    if not owners:
        return None
    return tuple(target for owner in owners for target in NEVER_IMPORTS[owner])


def test_every_module_has_a_rule() -> None:
    free = [m for m in MODULES if _forbidden_to(m) is None and not _within(m, FOUNDATION)]
    # The root package pulls the public API together: it imports what it re-exports.
    assert free == ["flowkit"]


def test_packages_never_import_what_their_layer_forbids() -> None:
    broken = [
        edge
        for edge in IMPORTS
        if edge.kind != "typing"
        and (edge.importer, edge.target) not in LAZY_SEAMS
        and _within(edge.target, _forbidden_to(edge.importer) or ())
    ]
    assert not broken, "imports that break the layering (see flowkit/__init__.py):\n" + _shown(broken)


def test_nothing_outside_the_command_imports_it() -> None:
    upward = [e for e in IMPORTS if not _within(e.importer, CLI) and _within(e.target, CLI)]
    assert not upward, _shown(upward)


def test_nothing_imports_the_conformance_suites() -> None:
    suites = ("flowkit.testing",)
    upward = [e for e in IMPORTS if not _within(e.importer, suites) and _within(e.target, suites)]
    assert not upward, _shown(upward)


def test_nothing_imports_the_root_package() -> None:
    # ``flowkit/__init__.py`` pulls the public API together; a module importing it would import everything.
    upward = [e for e in IMPORTS if e.target == "flowkit" and e.importer != "flowkit"]
    assert not upward, _shown(upward)


def test_foundation_builds_on_nothing_else() -> None:
    above = [
        e
        for e in IMPORTS
        if _within(e.importer, FOUNDATION)
        and e.kind != "typing"
        and e.target in MODULES
        and not _within(e.target, FOUNDATION)
    ]
    assert not above, _shown(above)
