"""flowkit.persistence.codec: one walk from a value to canonical, storable JSON data."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import pytest

from flowkit import exceptions
from flowkit.persistence import codec
from flowkit.persistence.backends import MemoryBackend, fetch
from flowkit.persistence.base import DEFAULT_MAX_RESULT_BYTES, Backend, Connection
from flowkit.types.failure import Failure


class Color(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def test_tuples_become_lists_at_every_depth() -> None:
    value = (1, ("a", (True, None)), {"k": (2.5,)})
    assert codec.canonical(value) == [1, ["a", [True, None]], {"k": [2.5]}]
    assert type(codec.canonical(value)[1][1]) is list


def test_the_canonical_value_is_what_json_reads_back() -> None:
    value = {"a": (1, 2), "b": [Color.RED, Level.HIGH], "c": {"d": ()}}
    result = codec.canonical(value)
    assert result == json.loads(json.dumps(value))
    assert type(result["b"][0]) is str and type(result["b"][1]) is int


def test_containers_are_copied_not_shared() -> None:
    inner = [1, 2]
    value = {"inner": inner}
    result = codec.canonical(value)
    inner.append(3)
    value["new"] = 1
    assert result == {"inner": [1, 2]}


def test_failures_are_kept_as_they_are() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failure = Failure()
    history = [[None, {"atom": failure}]]
    assert codec.canonical(history)[0][1]["atom"] is failure
    assert json.loads(codec.encode(history))[0][1]["atom"]["__failure__"]["exception_str"] == "boom"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"x": [1, 2, math.nan]}, "result['x'][2] is nan"),
        ([math.inf], "result[0] is inf"),
        ({"y": -math.inf}, "result['y'] is -inf"),
    ],
)
def test_nan_and_infinity_are_refused_with_their_path(value: Any, expected: str) -> None:
    with pytest.raises(exceptions.ResultNotStorable) as info:
        codec.canonical(value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({1: "a"}, "result has a key 1 of type int"),
        ({"a": {1, 2}}, "result['a'] is a builtins.set, which is not JSON data"),
        (b"bytes", "result is a builtins.bytes"),
        ({"__failure__": {"exception_str": "forged"}}, "would read back as a captured Failure"),
    ],
)
def test_values_that_are_not_json_data_are_refused(value: Any, expected: str) -> None:
    with pytest.raises(exceptions.ResultNotStorable) as info:
        codec.canonical(value)
    assert expected in str(info.value)


def test_a_value_nested_too_deep_or_holding_itself_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(exceptions.ResultNotStorable, match="nested more than 200 levels"):
        codec.canonical(loop)
    deep: Any = "leaf"
    for _ in range(codec.MAX_DEPTH):
        deep = [deep]
    assert codec.canonical(deep) == deep  # 200 levels are fine
    with pytest.raises(exceptions.ResultNotStorable):
        codec.canonical([deep])


def test_an_int_too_long_to_write_is_refused() -> None:
    with pytest.raises(exceptions.ResultNotStorable, match="int too large"):
        codec.canonical({"n": 10**5000})
    assert codec.canonical(10**100) == 10**100


def test_what_names_the_value_in_messages() -> None:
    with pytest.raises(exceptions.ResultNotStorable, match=r"revert result\[0\] is nan"):
        codec.canonical([math.nan], what="revert result")


@pytest.mark.parametrize("value", ["é" * 10, {"k": ["\x00", "\ud800", "😀"]}, [1.5, -2, None, True], "x" * 100])
def test_encoded_size_is_the_length_of_the_stored_json(value: Any) -> None:
    text = codec.encode(value)
    assert json.loads(text) == value
    assert codec.encoded_size(value) == len(text.encode("utf-8")) == len(json.dumps(value).encode("utf-8"))


def test_max_bytes_refuses_larger_values_naming_size_and_limit() -> None:
    value = {"data": "x" * 1000}  # {"data": "xxx..."} is 1012 bytes
    assert codec.encoded_size(value) == 1012
    assert codec.canonical(value, max_bytes=1012) == value
    with pytest.raises(exceptions.ResultNotStorable) as info:
        codec.canonical(value, max_bytes=1011)
    assert "1012 bytes" in str(info.value) and "limit of 1011 bytes" in str(info.value)


def test_escapes_count_towards_the_size() -> None:
    value = "\x01" * 100  # each character is written as \u0001
    assert codec.encoded_size(value) == 602
    with pytest.raises(exceptions.ResultNotStorable, match="602 bytes"):
        codec.canonical(value, max_bytes=601)


# -- the limit on backends ------------------------------------------------------------------


def test_backends_default_to_16_mib() -> None:
    assert DEFAULT_MAX_RESULT_BYTES == 16 * 1024 * 1024
    assert MemoryBackend().result_limit == DEFAULT_MAX_RESULT_BYTES
    assert MemoryBackend(max_result_bytes=None).result_limit is None


def test_max_result_bytes_is_keyword_only_and_checked() -> None:
    with pytest.raises(TypeError):
        MemoryBackend(None, 100)  # type: ignore[misc]
    for bad in (0, -1, 1.5, "100", True):
        with pytest.raises(ValueError, match="max_result_bytes"):
            MemoryBackend(max_result_bytes=bad)  # type: ignore[arg-type]


def test_fetch_passes_max_result_bytes(tmp_path: Any) -> None:
    assert fetch({"connection": "memory://", "max_result_bytes": 1234}).result_limit == 1234
    with fetch({"connection": "sqlite:///%s" % (tmp_path / "f.db"), "max_result_bytes": 99}) as backend:
        assert backend.max_result_bytes == 99 and backend.result_limit == 99


class _SmallStore(MemoryBackend):
    """A backend whose store takes at most 500 bytes a value (as a server's packet limit would)."""

    @property
    def max_value_bytes(self) -> int | None:
        return 500


@pytest.mark.parametrize(("configured", "effective"), [(100, 100), (1000, 500), (None, 500)])
def test_the_limit_is_the_smaller_of_configured_and_storable(configured: int | None, effective: int) -> None:
    backend: Backend = _SmallStore(max_result_bytes=configured)
    assert backend.result_limit == effective
    conn: Connection = backend.get_connection()
    assert conn.backend.result_limit == effective


def test_a_job_runs_under_its_backends_limit(run: Any) -> None:
    # A conductor runs a claimed job on the board's fenced view of the backend:
    # the limit configured on the backend must hold there too.
    from flowkit.jobs.backends.impl_memory import MemoryJobBoard
    from flowkit.patterns import linear_flow
    from tests.support import Const

    persistence = MemoryBackend(max_result_bytes=100)
    board = MemoryJobBoard("limits", persistence=persistence)
    job = board.post("j")
    claim = board.claim(job, "alice")
    fenced = board.fenced_backend(persistence, claim)
    assert fenced.result_limit == 100
    flow = linear_flow.Flow("f").add(Const(name="big", inject={"value": "x" * 200}))
    with pytest.raises(exceptions.ResultNotStorable, match="'big'.*202 bytes.*limit of 100 bytes"):
        run(flow, backend=fenced)
    board.close()
