"""What an atom's result becomes: one canonical value, the same in every run and on every backend.

Each test runs in every engine mode (the ``load`` fixture) and on every logbook store
(``store_kind``: memory, SQLite, PostgreSQL).  A resumed run reads the logbook through a new
backend object on the same store, as a new process would.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flowkit import exceptions, states
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import MemoryBackend
from flowkit.persistence.base import Backend
from flowkit.task import Task
from flowkit.types.failure import Failure
from tests.persistence.conftest import (  # noqa: F401  (fixtures)
    BackendFactory,
    postgres_url,
    sql_backend_factory,
    unique_prefix,
)
from tests.support import Const, Fail, Name

OpenBackend = Callable[..., Backend]


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def open_backend(
    store_kind: str, tmp_path: Any, request: pytest.FixtureRequest, sql_backend_factory: BackendFactory  # noqa: F811
) -> Iterator[OpenBackend]:
    """``open(**options)``: a backend on this test's store; every call a new backend object on it.

    Memory has no second object to open: every call returns the one backend.
    """
    memory: list[Backend] = []
    prefix = unique_prefix()
    if store_kind == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = "sqlite:///%s" % (tmp_path / "logbook.db",)

    def open_(**options: Any) -> Backend:
        if store_kind == "memory":
            if not memory:
                memory.append(MemoryBackend(**options))
            return memory[0]
        return sql_backend_factory(url, table_prefix=prefix, **options)

    yield open_


def reload(load: Any, flow: Any, open_backend: OpenBackend, fd_uuid: str, **options: Any) -> Any:
    """A new engine for flow detail ``fd_uuid``, read back through a new backend object."""
    backend = open_backend(**options)
    with backend.get_connection() as conn:
        detail = conn.get_flow_details(fd_uuid)
    return load(flow, backend=backend, flow_detail=detail)


def suspend_after(engine: Any, atom_name: str) -> None:
    """Suspend ``engine`` as soon as ``atom_name`` succeeds (before any successor starts)."""

    def on_state(state: Any, details: dict[str, Any]) -> None:
        if state == states.SUCCESS and details["atom_name"] == atom_name:
            engine.suspend()

    engine.atom_notifier.register(states.SUCCESS, on_state)


# --- tuples come back as lists, and they are lists from the start --------------------------


class Pair(Task):
    def execute(self) -> Any:
        return (1, ("two", (3.0, None)), {"k": (True,)})


def shape(value: Any) -> Any:
    """The value with each container replaced by its type's name: what a successor sees."""
    if isinstance(value, (list, tuple)):
        return [type(value).__name__] + [shape(v) for v in value]
    if isinstance(value, dict):
        return {"dict": {k: shape(v) for k, v in value.items()}}
    return type(value).__name__


class Shape(Task):
    def execute(self, pair: Any) -> Any:
        return shape(pair)


def pair_flow() -> Any:
    return linear_flow.Flow("values").add(Pair(name="pair", provides="pair"), Shape(name="shape"))


EXPECTED_SHAPE = ["list", "int", ["list", "str", ["list", "float", "NoneType"]], {"dict": {"k": ["list", "bool"]}}]


def test_a_successor_sees_the_same_value_uninterrupted_and_resumed(load: Any, open_backend: OpenBackend) -> None:
    engine = load(pair_flow(), backend=open_backend())
    engine.run()
    assert engine.storage.get("shape") == EXPECTED_SHAPE
    assert engine.storage.get("pair") == [1, ["two", [3.0, None]], {"k": [True]}]

    # The same flow stopped after 'pair' and resumed from the logbook.
    first = load(pair_flow(), backend=open_backend())
    suspend_after(first, "pair")
    first.run()
    assert first.storage.get_flow_state() == states.SUSPENDED
    assert first.storage.get_atom_state("shape") == states.PENDING
    resumed = reload(load, pair_flow(), open_backend, first.flow_detail.uuid)
    resumed.run()
    assert resumed.storage.get_flow_state() == states.SUCCESS
    assert resumed.storage.get("shape") == EXPECTED_SHAPE


def test_listeners_see_the_stored_value(load: Any, open_backend: OpenBackend) -> None:
    engine = load(pair_flow(), backend=open_backend())
    seen: list[Any] = []

    def on_success(state: Any, details: dict[str, Any]) -> None:
        if details["atom_name"] == "pair":
            seen.append(details["result"])

    engine.atom_notifier.register(states.SUCCESS, on_success)
    engine.run()
    assert shape(seen[0]) == shape(engine.storage.get("pair")) == EXPECTED_SHAPE


class Keep(Task):
    """Returns the list it was built with (the same object, in this process)."""

    def __init__(self, bag: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bag = bag

    def execute(self) -> list[Any]:
        self.bag.append("kept")
        return self.bag


class Spoil(Keep):
    """Changes the list after :class:`Keep` returned it."""

    def execute(self) -> list[Any]:
        self.bag.append("spoiled")
        return ["done"]


def test_a_recorded_result_is_not_the_object_the_task_keeps(load: Any, open_backend: OpenBackend) -> None:
    bag: list[Any] = []
    flow = linear_flow.Flow("alias").add(Keep(bag, name="keep"), Spoil(bag, name="spoil"))
    engine = load(flow, backend=open_backend())
    engine.run()
    assert engine.storage.get("keep") == ["kept"]
    resumed = reload(load, flow, open_backend, engine.flow_detail.uuid)
    assert resumed.storage.get("keep") == ["kept"]


# --- NaN and Infinity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"x": [1, 2, math.nan]}, "result['x'][2] is nan"),
        ([math.inf], "result[0] is inf"),
        (-math.inf, "result is -inf"),
    ],
)
def test_nan_and_infinity_fail_the_atom_naming_the_path(
    load: Any, open_backend: OpenBackend, value: Any, path: str
) -> None:
    flow = linear_flow.Flow("floats").add(Name(name="first"), Const(name="float_maker", inject={"value": value}))
    engine = load(flow, backend=open_backend())
    with pytest.raises(exceptions.ResultNotStorable) as info:
        engine.run()
    message = str(info.value)
    assert "'float_maker'" in message and "'floats'" in message and path in message
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("first") == states.REVERTED
    resumed = reload(load, flow, open_backend, engine.flow_detail.uuid)
    failure = resumed.storage.get("float_maker")
    assert isinstance(failure, Failure) and failure.check(exceptions.ResultNotStorable)
    assert path in failure.exception_str


# --- max_result_bytes ------------------------------------------------------------------------


def test_a_result_over_max_result_bytes_fails_the_atom_and_the_flow_reverts(
    load: Any, open_backend: OpenBackend
) -> None:
    # "x" * 998 is 1000 bytes as JSON (the quotes count): exactly the limit.
    flow = linear_flow.Flow("sizes").add(
        Name(name="first"),
        Const(name="fits", inject={"value": "x" * 998}),
        Const(name="too_big", inject={"value": "x" * 999}),
    )
    engine = load(flow, backend=open_backend(max_result_bytes=1000))
    with pytest.raises(exceptions.ResultNotStorable) as info:
        engine.run()
    message = str(info.value)
    assert "'too_big'" in message and "1001 bytes" in message and "limit of 1000 bytes" in message
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("fits") == states.REVERTED
    assert engine.storage.get_atom_state("first") == states.REVERTED
    resumed = reload(load, flow, open_backend, engine.flow_detail.uuid, max_result_bytes=1000)
    assert resumed.storage.get_atom_state("too_big") == states.REVERTED
    assert resumed.storage.get("fits") == "x" * 998


# --- a revert whose result cannot be stored ---------------------------------------------------


def _mark(directory: str, name: str) -> None:
    with open(os.path.join(directory, name), "a") as marks:
        marks.write("x")


def marks(directory: Any, name: str) -> int:
    path = os.path.join(str(directory), name)
    if not os.path.exists(path):
        return 0
    with open(path) as recorded:
        return len(recorded.read())


class Recorded(Task):
    """Counts its reverts in a file (they may run in another process)."""

    def execute(self, marker_dir: str) -> str:
        return self.name

    def revert(self, marker_dir: str, **kwargs: Any) -> None:
        _mark(marker_dir, self.name)


class UnstorableRevert(Recorded):
    """A revert that returns ``inject['bad']``, which cannot be stored."""

    def revert(self, marker_dir: str, bad: Any, **kwargs: Any) -> Any:
        _mark(marker_dir, self.name)
        return bad

    def execute(self, marker_dir: str, bad: Any) -> str:
        return self.name


@pytest.mark.parametrize(
    ("bad", "cause"),
    [
        ({"a": {1, 2}}, "revert result['a'] is a builtins.set"),
        ([math.nan], "revert result[0] is nan"),
        ("y" * 2000, "revert result is 2002 bytes as JSON, more than the limit of 1000 bytes"),
    ],
)
def test_a_revert_result_that_cannot_be_stored_is_a_revert_failure_and_is_not_repeated(
    load: Any, open_backend: OpenBackend, tmp_path: Any, bad: Any, cause: str
) -> None:
    def flow() -> Any:
        return linear_flow.Flow("undo").add(
            Recorded(name="earlier"),
            UnstorableRevert(name="bad_undo", inject={"bad": bad}),
            Fail(name="boom"),
        )

    engine = load(flow(), store={"marker_dir": str(tmp_path)}, backend=open_backend(max_result_bytes=1000))
    # A single failed revert re-raises its own error, as TaskFlow does.
    with pytest.raises(exceptions.ResultNotStorable) as info:
        engine.run()
    assert "atom 'bad_undo'" in str(info.value)
    storage = engine.storage
    assert storage.get_flow_state() == states.FAILURE
    assert storage.get_atom_state("bad_undo") == states.REVERT_FAILURE
    assert storage.get_atom_state("earlier") == states.SUCCESS  # a failed revert stops everything
    failure = storage.get_revert_result("bad_undo")
    assert isinstance(failure, Failure) and failure.check(exceptions.ResultNotStorable)
    assert "atom 'bad_undo' of flow 'undo' returned from revert() a value" in failure.exception_str
    assert cause in failure.exception_str
    assert marks(tmp_path, "bad_undo") == 1

    for _ in range(2):  # each resume reports the end again, running nothing
        resumed = reload(load, flow(), open_backend, engine.flow_detail.uuid, max_result_bytes=1000)
        # The revert's error again: itself where this process still holds it (memory), else
        # read back from the logbook, where only its text is left (wrapped, as in TaskFlow).
        with pytest.raises((exceptions.ResultNotStorable, exceptions.WrappedFailure)) as again:
            resumed.run()
        if isinstance(again.value, exceptions.WrappedFailure):
            assert again.value.check(exceptions.ResultNotStorable)
        assert resumed.storage.get_flow_state() == states.FAILURE
        assert resumed.storage.get_atom_state("bad_undo") == states.REVERT_FAILURE
        assert resumed.storage.get_atom_state("earlier") == states.SUCCESS
        assert cause in resumed.storage.get_revert_result("bad_undo").exception_str
    assert marks(tmp_path, "bad_undo") == 1
    assert marks(tmp_path, "earlier") == 0
