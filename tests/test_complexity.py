"""Preparing and running a flow costs O(atoms + edges) in every shape.

Counted, not timed: every line of flowkit's own code executed while a flow of
N atoms is loaded, compiled, prepared, validated and run is counted (through
``sys.settrace``), and the count at 4N must stay within 4.4 times the count at
N.  A loop over all atoms per atom, or over all edges per edge, makes that
ratio approach 16 and fails here whatever the machine's speed.  (A scan inside
one C-level operation, such as ``x in some_list``, is one line to the tracer:
the shapes below are also the benchmark's, which times those.)
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest

import flowkit
from flowkit import engines
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from flowkit.task import Task

FLOWKIT_DIR = os.path.dirname(os.path.abspath(flowkit.__file__)) + os.sep
SMALL = 200
GROWTH = 4
#: Linear cost at 4N is at most 4N's share plus fixed cost; allow a little for dict resizes.
MAX_RATIO = 4.4


class Noop(Task):
    def execute(self, *args: Any, **kwargs: Any) -> int:
        return 1


def _chain(flow: Any, n: int) -> Any:
    return flow.add(*(Noop("t%d" % i, provides="v%d" % i, requires=["v%d" % (i - 1)] if i else None) for i in range(n)))


def _linear(n: int) -> Any:
    return _chain(linear_flow.Flow("linear"), n)


def _graph_chain(n: int) -> Any:
    return _chain(graph_flow.Flow("graph-chain"), n)


def _unordered(n: int) -> Any:
    return unordered_flow.Flow("unordered").add(*(Noop("t%d" % i) for i in range(n)))


def _fan_in(n: int) -> Any:
    names = ["v%d" % i for i in range(n - 1)]
    flow = graph_flow.Flow("fan-in").add(*(Noop("t%d" % i, provides=name) for i, name in enumerate(names)))
    return flow.add(Noop("sink", requires=names))


def _fan_out(n: int) -> Any:
    flow = graph_flow.Flow("fan-out").add(Noop("source", provides="v"))
    return flow.add(*(Noop("t%d" % i, requires=["v"]) for i in range(1, n)))


def _linear_fan_out(n: int) -> Any:
    flow = linear_flow.Flow("linear-fan-out").add(Noop("source", provides="v"))
    return flow.add(*(Noop("t%d" % i, requires=["v"]) for i in range(1, n)))


def _lattice(n: int) -> Any:
    width = math.isqrt(n)
    tasks = []
    for i in range(n):
        row, col = divmod(i, width)
        requires = ([f"v{row - 1}_{col}"] if row else []) + ([f"v{row}_{col - 1}"] if col else [])
        tasks.append(Noop(f"t{row}_{col}", provides=f"v{row}_{col}", requires=requires or None))
    return graph_flow.Flow("lattice").add(*tasks)


def _nested(n: int) -> Any:
    # Subflows of 10 atoms, alternating patterns, each fed by the one before.
    root = linear_flow.Flow("nested")
    for block in range(n // 10):
        sub: Any = (graph_flow.Flow if block % 2 else linear_flow.Flow)("block%d" % block)
        for i in range(10):
            k = block * 10 + i
            sub.add(Noop("t%d" % k, provides="v%d" % k, requires=["v%d" % (k - 1)] if k else None))
        root.add(sub)
    return root


SHAPES: dict[str, Callable[[int], Any]] = {
    "linear": _linear,
    "unordered": _unordered,
    "graph-chain": _graph_chain,
    "fan-in": _fan_in,
    "fan-out": _fan_out,
    "linear-fan-out": _linear_fan_out,
    "lattice": _lattice,
    "nested": _nested,
}


@contextmanager
def _count_lines() -> Iterator[list[int]]:
    """Count the lines of flowkit's code executed in this thread inside the block."""
    count = [0]

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            count[0] += 1
        return local

    def global_(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.startswith(FLOWKIT_DIR) else None

    previous = sys.gettrace()
    sys.settrace(global_)
    try:
        yield count
    finally:
        sys.settrace(previous)


def _lines(build: Callable[[int], Any], n: int) -> tuple[int, int]:
    """Lines counted while preparing, then while running, a flow of ``n`` atoms."""
    flow = build(n)
    with _count_lines() as prepared:
        engine = engines.load(flow, engine="serial")
        engine.compile()
        engine.prepare()
        engine.validate()
    with _count_lines() as ran:
        engine.run()
    assert engine.storage.get_flow_state() == "SUCCESS"
    return prepared[0], ran[0]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_cost_grows_linearly(shape: str) -> None:
    build = SHAPES[shape]
    small = _lines(build, SMALL)
    large = _lines(build, SMALL * GROWTH)
    for phase, at_n, at_4n in zip(("prepare", "run"), small, large):
        ratio = at_4n / at_n
        assert ratio <= MAX_RATIO, "%s of %s: %d lines at N=%d, %d at N=%d (%.1fx for %dx the atoms)" % (
            phase,
            shape,
            at_n,
            SMALL,
            at_4n,
            SMALL * GROWTH,
            ratio,
            GROWTH,
        )


def test_the_count_sees_a_quadratic_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # The yardstick itself: validating that looks every atom up once per
    # atom, in flowkit's own code, must show up as about 16x for 4x the atoms.
    from flowkit.engines import _compiler

    original = _compiler.missing_requirements

    def quadratic(compilation: Any, available: Any) -> Any:
        for _atom in compilation.atoms:
            for other in compilation.atoms:
                compilation.index_of(other.name)
        return original(compilation, available)

    monkeypatch.setattr(_compiler, "missing_requirements", quadratic)
    ratio = _lines(_linear, 200)[0] / _lines(_linear, 50)[0]
    assert ratio > MAX_RATIO
