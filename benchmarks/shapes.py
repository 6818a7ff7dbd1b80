"""Flow shapes the suite measures, each built from no-op tasks.

Every builder takes a :class:`~benchmarks.targets.Library` and a size ``n``
and returns a flow of exactly ``n`` atoms:

``linear``
    ``linear_flow.Flow``; task ``i`` provides ``v{i}`` and task ``i+1``
    requires it. The chain carries data (rather than relying on the pattern's
    order alone) so the run also exercises result storage and lookup.
``unordered``
    ``unordered_flow.Flow`` of ``n`` independent tasks with no data.
``graph-chain``
    ``graph_flow.Flow`` with the same data chain as ``linear``; the engine
    has to infer the order from the data.
``graph-fanin``
    ``graph_flow.Flow`` of ``n - 1`` independent providers and one sink whose
    ``requires`` lists all of them (the values reach ``execute`` as keyword
    arguments, as in TaskFlow).
``graph-fanout``
    ``graph_flow.Flow`` of one provider of ``v`` and ``n - 1`` tasks that
    each require ``v``: one value feeding every other task.
``graph-lattice``
    ``graph_flow.Flow`` of a diamond lattice: tasks on a grid about
    ``sqrt(n)`` wide, task ``(r, c)`` requiring the values of ``(r - 1, c)``
    and ``(r, c - 1)``, so every inner task joins two paths and forks two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from benchmarks.targets import Library

__all__ = ["SHAPES", "build", "one_task_flow"]

_task_classes: dict[str, type] = {}


def _noop_task_class(lib: Library) -> type:
    """Return (once per library) a Task subclass whose execute does nothing.

    ``execute(*args, **kwargs)`` lets the same class serve every position in
    every shape: its inputs come from ``requires=`` rather than from the
    signature, and it returns a small constant so providers have a value to
    store.
    """
    cls = _task_classes.get(lib.name)
    if cls is None:

        class NoOpTask(lib.task.Task):  # type: ignore[name-defined,misc]
            """A task that returns 1 and takes whatever it is given."""

            def execute(self, *args: Any, **kwargs: Any) -> int:
                return 1

        cls = _task_classes[lib.name] = NoOpTask
    return cls


def _data_chain(lib: Library, flow: Any, n: int) -> Any:
    """Add ``n`` tasks to ``flow`` where task ``i`` requires ``v{i-1}``."""
    task_cls = _noop_task_class(lib)
    flow.add(*(task_cls(name=f"t{i}", provides=f"v{i}", requires=[f"v{i - 1}"] if i else None) for i in range(n)))
    return flow


def _linear(lib: Library, n: int) -> Any:
    return _data_chain(lib, lib.linear_flow.Flow("linear"), n)


def _graph_chain(lib: Library, n: int) -> Any:
    return _data_chain(lib, lib.graph_flow.Flow("graph-chain"), n)


def _unordered(lib: Library, n: int) -> Any:
    task_cls = _noop_task_class(lib)
    flow = lib.unordered_flow.Flow("unordered")
    flow.add(*(task_cls(name=f"t{i}") for i in range(n)))
    return flow


def _graph_fanin(lib: Library, n: int) -> Any:
    task_cls = _noop_task_class(lib)
    flow = lib.graph_flow.Flow("graph-fanin")
    names = [f"v{i}" for i in range(n - 1)]
    flow.add(*(task_cls(name=f"t{i}", provides=name) for i, name in enumerate(names)))
    flow.add(task_cls(name="sink", requires=names))
    return flow


def _graph_fanout(lib: Library, n: int) -> Any:
    task_cls = _noop_task_class(lib)
    flow = lib.graph_flow.Flow("graph-fanout")
    flow.add(task_cls(name="source", provides="v"))
    flow.add(*(task_cls(name=f"t{i}", requires=["v"]) for i in range(1, n)))
    return flow


def _graph_lattice(lib: Library, n: int) -> Any:
    task_cls = _noop_task_class(lib)
    flow = lib.graph_flow.Flow("graph-lattice")
    width = max(1, math.isqrt(n))
    tasks = []
    for i in range(n):
        row, col = divmod(i, width)
        requires = []
        if row:
            requires.append(f"v{row - 1}_{col}")
        if col:
            requires.append(f"v{row}_{col - 1}")
        tasks.append(task_cls(name=f"t{row}_{col}", provides=f"v{row}_{col}", requires=requires or None))
    flow.add(*tasks)
    return flow


#: Shape name -> builder ``(library, n) -> flow``, in report order.
SHAPES: dict[str, Callable[[Library, int], Any]] = {
    "linear": _linear,
    "unordered": _unordered,
    "graph-chain": _graph_chain,
    "graph-fanin": _graph_fanin,
    "graph-fanout": _graph_fanout,
    "graph-lattice": _graph_lattice,
}


def build(lib: Library, shape: str, n: int) -> Any:
    """Build the ``shape`` flow of ``n`` atoms with ``lib``'s classes."""
    if n < 1:
        raise ValueError(f"a flow needs at least one atom, got n={n}")
    return SHAPES[shape](lib, n)


def one_task_flow(lib: Library) -> Any:
    """A linear flow holding a single no-op task (for fixed-cost benchmarks)."""
    flow = lib.linear_flow.Flow("one")
    flow.add(_noop_task_class(lib)(name="only"))
    return flow
