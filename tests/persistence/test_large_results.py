"""Results of 1, 16 and 64 MB through the engine, on every backend.

A task returns a string of the size, its successor receives it, and the
stored result reads back whole from a fresh backend.  What a backend cannot
hold (``max_value_bytes``: on MySQL/MariaDB the server's max_allowed_packet,
16 MB by default) fails the atom with ResultNotStorable naming the atom and
the size, and the flow reverts, instead of a driver error or a hang.

PostgreSQL used to hang for ever from 16 MB on: the write went through
psycopg's pipeline, whose COMMIT could leave the tail of a large parameter
unsent while both sides waited for each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flowkit import engines, states
from flowkit.exceptions import ResultNotStorable
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import Backend, MemoryBackend, SQLAlchemyBackend
from flowkit.task import Task

MB = 1024 * 1024


class Big(Task):
    """Return a string of ``size`` characters (a JSON text of ``size + 2`` bytes)."""

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(name="big", provides="blob", **kwargs)
        self.size = size

    def execute(self) -> str:
        return "x" * (self.size - 1) + "y"

    def revert(self, **kwargs: Any) -> None:
        return None


class Measure(Task):
    """Return the length and last character of what ``big`` returned."""

    def execute(self, blob: str) -> list[Any]:
        return [len(blob), blob[-1]]


@pytest.fixture(params=["memory", "sqlite", "postgresql", "mariadb"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    # No cap of flowkit's own (max_result_bytes, 16 MiB by default, is tested in
    # tests/engines/test_values.py): what is tested here is what each store takes.
    kind = request.param
    if kind == "memory":
        yield MemoryBackend(max_result_bytes=None)
        return
    factory: Callable[..., SQLAlchemyBackend] = request.getfixturevalue("sql_backend_factory")
    if kind == "sqlite":
        yield factory("sqlite:///%s" % (tmp_path / "big.db"), max_result_bytes=None)
    elif kind == "postgresql":
        request.applymarker(pytest.mark.postgres)
        yield factory(request.getfixturevalue("postgres_url"), max_result_bytes=None)
    else:
        request.applymarker(pytest.mark.mysql)
        yield factory(request.getfixturevalue("mysql_url"), max_result_bytes=None)


def fits(backend: Backend, size: int) -> bool:
    limit = backend.max_value_bytes
    if limit is None:
        return True
    stored = size + 2  # the JSON string's quotes
    if isinstance(backend, SQLAlchemyBackend):
        stored = backend.sent_size(json.dumps("x" * (size - 1) + "y"))
    return stored <= limit


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(1 * MB, id="1MB"),
        pytest.param(16 * MB, id="16MB"),
        pytest.param(64 * MB, id="64MB", marks=pytest.mark.slow),
    ],
)
@pytest.mark.timeout(180)
# Dask's advice when a task's arguments are this large; the distributed mode still runs it.
@pytest.mark.filterwarnings("ignore:Sending large graph:UserWarning")
def test_large_result_is_stored_or_refused_cleanly(
    backend: Backend, size: int, engine_options: dict[str, Any]
) -> None:
    flow = linear_flow.Flow("large").add(Big(size), Measure("measure", provides="measured"))
    engine = engines.load(flow, backend=backend, **engine_options)
    if fits(backend, size):
        engine.run()
        assert engine.storage.get_flow_state() == states.SUCCESS
        assert engine.storage.fetch("measured") == [size, "y"]
        if isinstance(backend, SQLAlchemyBackend):
            # Read back whole through another backend on the same tables: it was really written.
            with SQLAlchemyBackend(backend.url, table_prefix=backend.table_prefix) as other:
                with other.get_connection() as conn:
                    fd = conn.get_flow_details(engine.flow_detail.uuid)
            blob = fd.find_by_name("big").results  # type: ignore[union-attr]
            assert len(blob) == size and blob[-1] == "y"
            assert fd.state == states.SUCCESS
        return
    with pytest.raises(ResultNotStorable) as caught:
        engine.run()
    message = str(caught.value)
    assert "'big'" in message and str(size + 2) in message
    assert engine.storage.get_flow_state() == states.REVERTED
    assert isinstance(backend, SQLAlchemyBackend)
    with SQLAlchemyBackend(backend.url, table_prefix=backend.table_prefix) as other:
        with other.get_connection() as conn:
            fd = conn.get_flow_details(engine.flow_detail.uuid)
    assert fd.state == states.REVERTED
    assert {ad.name: ad.state for ad in fd} == {"big": states.REVERTED, "measure": states.PENDING}


def test_max_value_bytes_of_each_backend(backend: Backend) -> None:
    limit = backend.max_value_bytes
    if isinstance(backend, MemoryBackend):
        assert limit is None
        return
    assert isinstance(backend, SQLAlchemyBackend)
    assert isinstance(limit, int)
    if backend.dialect in ("mysql", "mariadb"):
        assert limit == backend.max_packet_bytes() - 64 * 1024
    else:
        assert limit >= 512 * MB
