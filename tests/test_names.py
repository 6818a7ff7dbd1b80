"""Names that become stored keys are checked when the flow is defined, the same on every backend.

The logbook's name columns are ``VARCHAR(255)``: SQLite stores anything there, PostgreSQL and
MariaDB refuse a longer name at the first write, PostgreSQL refuses a NUL, and no backend can
store a lone surrogate.  The round trips below show the longest legal names work on every
backend; the refusals show the error comes before anything is written, so it is the same
whichever backend the flow would have run on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flowkit import exceptions, states
from flowkit.decorators import as_task
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from flowkit.persistence.backends import MemoryBackend
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.retry import Times
from flowkit.task import FunctorTask
from tests.persistence.conftest import (  # noqa: F401  (fixtures)
    BackendFactory,
    mysql_url,
    postgres_url,
    sql_backend_factory,
)
from tests.support import Name

LONGEST = "n" * 254 + "é"  # 255 characters, 256 bytes in UTF-8
BAD_NAMES = {
    "too long": ("a" * 256, "is too long: at most 255 characters"),
    "40 KB": ("b" * 40_000, "is too long: at most 255 characters"),
    "NUL": ("before\x00after", "has a NUL character at position 6"),
    "surrogate": ("bad\ud800", "a lone surrogate"),
}


@pytest.fixture(params=["memory", "sqlite", "postgresql", "mariadb"])
def make_backend(
    request: pytest.FixtureRequest, tmp_path: Any, sql_backend_factory: BackendFactory  # noqa: F811
) -> Callable[[], Backend]:
    """A new backend of each kind (SQL ones on a fresh table prefix)."""
    kind = request.param
    if kind == "memory":
        return MemoryBackend
    if kind == "sqlite":
        url = "sqlite:///%s" % (tmp_path / "names.db",)
    else:
        url = request.getfixturevalue("postgres_url" if kind == "postgresql" else "mysql_url")
    return lambda: sql_backend_factory(url)


def stored_logbooks(backend: Backend) -> list[Any]:
    with backend.get_connection() as conn:
        return list(conn.get_logbooks())


def check_message(error: BaseException, what: str, name: str, cause: str) -> None:
    message = str(error)
    assert message.startswith(what + " ")
    assert cause in message
    assert len(message) < 250, "the message must not repeat the whole name"
    if len(name) > 40:
        assert repr(name[:40]) in message and "(%d characters)" % len(name) in message


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_a_name_that_cannot_be_stored_is_refused_when_the_atom_is_built(case: str) -> None:
    name, cause = BAD_NAMES[case]
    builders: list[Callable[[], Any]] = [
        lambda: Name(name=name),
        lambda: FunctorTask(lambda: None, name=name),
        lambda: as_task(name=name)(lambda: None),
        lambda: Times(2, name=name),
    ]
    for build in builders:
        with pytest.raises(exceptions.InvalidName) as info:
            build()
        check_message(info.value, "atom name", name, cause)
        assert isinstance(info.value, exceptions.DefinitionError)


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
@pytest.mark.parametrize("pattern", [linear_flow.Flow, unordered_flow.Flow, graph_flow.Flow])
def test_a_name_that_cannot_be_stored_is_refused_when_the_flow_is_built(case: str, pattern: Any) -> None:
    name, cause = BAD_NAMES[case]
    with pytest.raises(exceptions.InvalidName) as info:
        pattern(name)
    check_message(info.value, "flow name", name, cause)


def test_names_that_are_not_strings_are_still_type_errors() -> None:
    for bad in ("", 42, b"bytes"):
        with pytest.raises(TypeError, match="atom name must be a non-empty str"):
            Name(name=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="flow name must be a non-empty str"):
            linear_flow.Flow(bad)  # type: ignore[arg-type]


def test_the_longest_names_round_trip_on_every_backend(load: Any, make_backend: Callable[[], Backend]) -> None:
    flow = linear_flow.Flow("f" * 255).add(Name(name=LONGEST), Name(name="emoji 😀" + "x" * 248))
    backend = make_backend()
    engine = load(flow, backend=backend)
    engine.run()
    (book,) = stored_logbooks(backend)
    assert len(book.name) <= 255 and book.name.endswith("-book")
    (detail,) = list(book)
    assert detail.name == "f" * 255
    assert detail.find_by_name(LONGEST).state == states.SUCCESS
    assert engine.storage.get(LONGEST) == LONGEST


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_a_logbook_or_flow_detail_name_is_refused_before_anything_is_written(
    load: Any, make_backend: Callable[[], Backend], case: str
) -> None:
    name, cause = BAD_NAMES[case]
    flow = linear_flow.Flow("ok").add(Name(name="task"))
    backend = make_backend()
    with pytest.raises(exceptions.InvalidName) as info:
        load(flow, backend=backend, book=LogBook(name=name))
    check_message(info.value, "logbook name", name, cause)
    with pytest.raises(exceptions.InvalidName) as info:
        load(flow, backend=backend, flow_detail=FlowDetail(name=name))
    check_message(info.value, "flow detail name", name, cause)
    assert stored_logbooks(backend) == []
    engine = load(flow, backend=backend)  # the same backend still works
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
