"""User types in results (``codec.register_type``), and what the memory backend keeps.

A registered type is stored as tagged JSON and read back through the registry of this
process, never by importing what the data names.  The memory backend keeps copies: what it
stored does not change when the engine, a task or a reader later changes its objects.
"""

from __future__ import annotations

import datetime
import decimal
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowkit import exceptions, states
from flowkit.patterns import linear_flow
from flowkit.persistence import codec
from flowkit.persistence.backends import MemoryBackend
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.persistence.base import Backend
from flowkit.persistence.models import AtomDetail, FlowDetail, LogBook
from flowkit.task import Task
from tests.engines.test_values import Keep, Spoil

OpenBackend = Callable[[], Backend]

PRICE = decimal.Decimal("12.30")
WHEN = datetime.datetime(2026, 12, 1, 23, 30, 5, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))


@pytest.fixture
def money_and_time() -> Iterator[None]:
    """Decimal and datetime registered for the test, and forgotten after it."""
    codec.register_type(decimal.Decimal, "test.decimal", str, decimal.Decimal)
    iso = datetime.datetime.isoformat
    codec.register_type(datetime.datetime, "test.datetime", iso, datetime.datetime.fromisoformat)
    try:
        yield
    finally:
        codec.unregister_type("test.decimal")
        codec.unregister_type("test.datetime")


@pytest.fixture(params=["memory", "sqlite"])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenBackend]:
    """``open()``: a backend on this test's store; for SQLite a new backend object each call, as a new process."""
    opened: list[Backend] = []

    def open_() -> Backend:
        if request.param == "memory":
            if not opened:
                opened.append(MemoryBackend())
            return opened[0]
        opened.append(SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "logbook.db")))
        return opened[-1]

    yield open_
    for backend in opened:
        backend.close()


class Quote(Task):
    def execute(self) -> Any:
        return {"price": PRICE, "at": WHEN, "history": (PRICE, WHEN)}


class Describe(Task):
    """What the successor sees: the types of the quote's parts."""

    def execute(self, quote: Any) -> Any:
        return {key: type(value).__name__ for key, value in quote.items()}


def quote_flow() -> Any:
    return linear_flow.Flow("quote").add(Quote(name="quote", provides="quote"), Describe(name="describe"))


DESCRIBED = {"price": "Decimal", "at": "datetime", "history": "list"}


def stored_result(backend: Backend, fd_uuid: str, name: str) -> Any:
    with backend.get_connection() as conn:
        detail = conn.get_flow_details(fd_uuid).find_by_name(name)
    assert detail is not None
    return detail.results


def test_a_registered_type_round_trips_uninterrupted_and_resumed(
    money_and_time: None, load: Any, open_backend: OpenBackend
) -> None:
    engine = load(quote_flow(), backend=open_backend())
    engine.run()
    assert engine.storage.get("describe") == DESCRIBED
    assert engine.storage.get("quote") == {"price": PRICE, "at": WHEN, "history": [PRICE, WHEN]}
    read_back = stored_result(open_backend(), engine.flow_detail.uuid, "quote")
    assert read_back == {"price": PRICE, "at": WHEN, "history": [PRICE, WHEN]}
    assert str(read_back["price"]) == "12.30" and read_back["at"].utcoffset() == datetime.timedelta(hours=2)

    # Stopped after 'quote' and resumed from what was stored: the successor sees the same types.
    first = load(quote_flow(), backend=open_backend())
    first.atom_notifier.register(
        states.SUCCESS, lambda state, details: details["atom_name"] == "quote" and first.suspend()
    )
    first.run()
    assert first.storage.get_atom_state("describe") == states.PENDING
    backend = open_backend()
    with backend.get_connection() as conn:
        detail = conn.get_flow_details(first.flow_detail.uuid)
    resumed = load(quote_flow(), backend=backend, flow_detail=detail)
    resumed.run()
    assert resumed.storage.get_flow_state() == states.SUCCESS
    assert resumed.storage.get("describe") == DESCRIBED


def test_a_registered_value_is_stored_as_tagged_json(money_and_time: None) -> None:
    value = codec.canonical({"price": PRICE, "at": [WHEN]})
    assert json.loads(codec.encode(value)) == {
        "price": {"__type__": "test.decimal", "value": "12.30"},
        "at": [{"__type__": "test.datetime", "value": WHEN.isoformat()}],
    }
    assert codec.to_data(value) == json.loads(codec.encode(value))
    assert codec.from_data(codec.to_data(value)) == {"price": PRICE, "at": [WHEN]}


def test_an_unregistered_type_fails_the_atom_naming_the_hook(run: Any) -> None:
    with pytest.raises(exceptions.ResultNotStorable, match=r"result\['price'\] is a decimal.Decimal.*register_type"):
        run(linear_flow.Flow("unregistered").add(Quote(name="quote")))


def test_a_type_whose_codec_does_not_read_back_is_refused_when_the_atom_returns() -> None:
    codec.register_type(decimal.Decimal, "test.broken", lambda value: "not a number", decimal.Decimal)
    try:
        with pytest.raises(exceptions.ResultNotStorable, match=r"result\[0\] is a test.broken whose from_json"):
            codec.canonical([PRICE])
    finally:
        codec.unregister_type("test.broken")


def test_what_the_codec_stores_itself_or_what_is_taken_cannot_be_registered(money_and_time: None) -> None:
    for cls in (str, int, float, bool, list, tuple, dict, type(None)):
        with pytest.raises(ValueError, match="stored by the codec itself"):
            codec.register_type(cls, "test.builtin", str, str)
    with pytest.raises(ValueError, match="'test.decimal' is already registered to Decimal"):
        codec.register_type(datetime.date, "test.decimal", str, str)
    with pytest.raises(ValueError, match="Decimal is already registered as 'test.decimal'"):
        codec.register_type(decimal.Decimal, "test.other", str, decimal.Decimal)


def test_a_dict_shaped_like_a_tag_is_refused(money_and_time: None) -> None:
    with pytest.raises(exceptions.ResultNotStorable, match="would read back as a registered type"):
        codec.canonical({"a": {"__type__": "test.decimal", "value": "1"}})


TRAP = "codec_trap_module"


def test_a_tag_no_registered_type_answers_to_is_corrupt_and_imports_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module of the tag's name on the path, which says so if it is ever imported.
    marker = tmp_path / "imported"
    (tmp_path / ("%s.py" % TRAP)).write_text("open(%r, 'w').close()\n" % (str(marker),))
    monkeypatch.syspath_prepend(str(tmp_path))
    url = "sqlite:///%s" % (tmp_path / "logbook.db")
    book = LogBook(name="tampered")
    flow_detail = FlowDetail(name="tampered")
    atom = AtomDetail(name="quote", state=states.SUCCESS)
    flow_detail.add(atom)
    book.add(flow_detail)
    codec.register_type(decimal.Decimal, TRAP, str, decimal.Decimal)
    try:
        atom.results = codec.canonical({"price": PRICE})
        with SQLAlchemyBackend(url) as backend, backend.get_connection() as conn:
            conn.save_logbook(book)
            conn.flush()
    finally:
        codec.unregister_type(TRAP)

    with SQLAlchemyBackend(url) as backend, backend.get_connection() as conn:
        with pytest.raises(exceptions.CorruptLogbook, match="stored as type '%s', which no type registered" % TRAP):
            conn.get_flow_details(flow_detail.uuid)
    with pytest.raises(ValueError, match="no type registered in this process"):
        codec.from_data({"__type__": "%s:anything" % TRAP, "value": None})
    assert not marker.exists()
    assert TRAP not in sys.modules


# --- the memory backend keeps copies ----------------------------------------------------------


def test_the_memory_backend_is_not_changed_through_the_objects_of_a_run(load: Any) -> None:
    backend = MemoryBackend()
    bag: list[Any] = []
    engine = load(linear_flow.Flow("alias").add(Keep(bag, name="keep"), Spoil(bag, name="spoil")), backend=backend)
    engine.run()
    fd_uuid = engine.flow_detail.uuid
    assert stored_result(backend, fd_uuid, "keep") == ["kept"]

    # The engine's own record, changed after it was written.
    engine.storage.get("keep").append("changed by the engine's reader")
    own = engine.flow_detail.find_by_name("keep")
    assert own is not None
    own.meta["note"] = "not written"
    # A record read from the backend, changed by its reader.
    with backend.get_connection() as conn:
        read = conn.get_flow_details(fd_uuid)
        read_atom = read.find_by_name("keep")
        assert read_atom is not None
        read_atom.results.append("changed by a reader")
        read.meta["note"] = "not written"
        conn.get_atom_details(read_atom.uuid).results.append("changed too")
        again = conn.get_flow_details(fd_uuid)
    stored = again.find_by_name("keep")
    assert stored is not None
    assert stored.results == ["kept"]
    assert "note" not in stored.meta and "note" not in again.meta


def test_the_memory_backend_stores_what_is_written_when_it_is_written() -> None:
    backend = MemoryBackend()
    book = LogBook(name="b")
    flow_detail = FlowDetail(name="f")
    atom = AtomDetail(name="a", results={"items": [1]})
    flow_detail.add(atom)
    book.add(flow_detail)
    with backend.get_connection() as conn:
        conn.save_logbook(book)
        atom.results["items"].append(2)
        atom.state = states.SUCCESS
        assert conn.get_atom_details(atom.uuid).results == {"items": [1]}
        assert conn.get_atom_details(atom.uuid).state == states.PENDING
        conn.update_atom_details(atom)
        assert conn.get_atom_details(atom.uuid).results == {"items": [1, 2]}
        atom.results["items"].append(3)
        conn.update_flow_details(flow_detail)  # a flow update writes its atoms changed in place
        assert conn.get_atom_details(atom.uuid).results == {"items": [1, 2, 3]}
        assert conn.get_logbook(book.uuid).find(flow_detail.uuid) is not flow_detail


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ({"a": [1, {"b": "c"}], "d": None}, {"a": [1, {"b": "c"}], "d": None}, True),
        (1, 1.0, False),
        ([True], [1], False),
        ({"a": [1]}, {"a": [1.0]}, False),
        ({"a": {"b": 0}}, {"a": {"b": False}}, False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ([float("nan")], [float("nan")], False),
    ],
)
def test_same_compares_stored_data_types_included(left: Any, right: Any, expected: bool) -> None:
    assert codec.same(left, right) is expected
    assert codec.same(right, left) is expected


def test_copy_shares_no_container_and_reads_like_a_round_trip() -> None:
    value = {"a": [1, {"b": ("c",)}], "d": {"e": "f"}}
    copied = codec.copy(value)
    assert copied == {"a": [1, {"b": ["c"]}], "d": {"e": "f"}}
    assert copied["a"] is not value["a"] and copied["d"] is not value["d"]
    assert copied["a"][1] is not value["a"][1]
