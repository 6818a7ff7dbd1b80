"""A corrupt or deleted logbook row is named, and a flow whose logbook is inconsistent is not resumed.

Rows are tampered with raw SQL (invalid JSON, an unknown state, a malformed failure, a deleted
atom detail) on SQLite, PostgreSQL and MariaDB, then read back through the public API:
``get_logbook``/``get_flow_details``/``get_atom_details`` raise ``CorruptLogbook`` naming the
table, the uuid, the column and the atom; ``load_from_detail`` and ``flowkit resume`` refuse a
flow detail with an unreadable or missing atom detail (``InconsistentLogbook``), and
``repair=True`` / ``--repair`` re-run exactly the atoms concerned and resume to SUCCESS.

Which atoms ran is read from a journal file every task appends to, so it holds in every engine
mode (in the distributed one tasks run in other processes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowkit import states
from flowkit.cli import main
from flowkit.engines import load_from_detail, load_from_factory
from flowkit.exceptions import CorruptLogbook, InconsistentLogbook
from flowkit.patterns import linear_flow
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.persistence.models import AtomDetail, FlowDetail, LogBook
from flowkit.task import Task
from flowkit.types.failure import Failure

# -- a flow that writes down what it runs -------------------------------------------------


class Step(Task):
    """Append ``<name>`` to the journal file and return ``[*trail, name]``."""

    def execute(self, journal: str, trail: list[str]) -> list[str]:
        with open(journal, "a", encoding="utf-8") as handle:
            handle.write(self.name + "\n")
        return [*trail, self.name]


def make_steps() -> Any:
    """a -> b -> c, each passing the trail on (module level: resumable by name)."""
    return linear_flow.Flow("steps").add(
        Step(name="a", provides="ta", rebind={"trail": "start"}),
        Step(name="b", provides="tb", rebind={"trail": "ta"}),
        Step(name="c", provides="tc", rebind={"trail": "tb"}),
    )


def ran(journal: Path) -> list[str]:
    return journal.read_text(encoding="utf-8").split() if journal.exists() else []


# -- backends --------------------------------------------------------------------------------

DATABASES = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=DATABASES)
def backend(request: pytest.FixtureRequest, tmp_path: Path, sql_backend_factory: Any) -> SQLAlchemyBackend:
    """A backend on each database, with fresh tables (the default prefix on SQLite, for the CLI)."""
    if request.param == "sqlite":
        made: SQLAlchemyBackend = sql_backend_factory("sqlite:///%s" % (tmp_path / "flows.db"), table_prefix="flowkit_")
        return made
    url = request.getfixturevalue("postgres_url" if request.param == "postgresql" else "mysql_url")
    made = sql_backend_factory(url)
    return made


def tamper(backend: SQLAlchemyBackend, table: sa.Table, uuid: str, **values: Any) -> None:
    """Set columns of one row with plain SQL, behind flowkit's back."""
    with backend.engine.begin() as conn:
        done = conn.execute(sa.update(table).where(table.c.uuid == uuid).values(**values))
        assert done.rowcount == 1


def delete(backend: SQLAlchemyBackend, table: sa.Table, uuid: str) -> None:
    with backend.engine.begin() as conn:
        assert conn.execute(sa.delete(table).where(table.c.uuid == uuid)).rowcount == 1


def saved_book(backend: SQLAlchemyBackend) -> tuple[LogBook, FlowDetail]:
    """A logbook with one flow detail: a and b done, c pending (written without an engine)."""
    book = LogBook(name="orders")
    fd = FlowDetail(name="steps", state=states.SUSPENDED, meta={"store": {"start": []}})
    fd.add(AtomDetail(name="a", state=states.SUCCESS, results=["a"]))
    fd.add(AtomDetail(name="b", state=states.FAILURE, failure=Failure.from_exception(RuntimeError("no"))))
    fd.add(AtomDetail(name="c"))
    book.add(fd)
    with backend.get_connection() as conn:
        conn.save_logbook(book)
    return book, fd


def _every_read(backend: SQLAlchemyBackend, book: LogBook, fd: FlowDetail, atom: AtomDetail | None) -> list[Any]:
    conn = backend.get_connection()
    reads: list[Callable[[], Any]] = [
        lambda: conn.get_logbook(book.uuid),
        lambda: list(conn.get_logbooks()),
        lambda: conn.get_flow_details(fd.uuid),
        lambda: list(conn.get_flows_for_book(book.uuid)),
    ]
    if atom is not None:
        reads.append(lambda: conn.get_atom_details(atom.uuid))
    errors = []
    for read in reads:
        with pytest.raises(CorruptLogbook) as raised:
            read()
        errors.append(raised.value)
    return errors


# -- reading a corrupt row -------------------------------------------------------------------


ATOM_CASES = [
    ("results", "[1, 2", "invalid JSON"),
    ("failure", "{not json", "invalid JSON"),
    ("meta", "", "invalid JSON"),
    ("failure", json.dumps({"__failure__": {"exception_str": "x"}}), "not a failure dict"),
    ("meta", "[1, 2]", "meta must be an object"),
    ("version", json.dumps(["one"]), "expected [major, minor]"),
    ("state", "EXPLODED", "unknown state 'EXPLODED'"),
    ("intention", "PONDER", "unknown intention 'PONDER'"),
    ("atom_type", "gizmo", "unknown atom type 'gizmo'"),
]

FLOW_CASES = [
    ("meta", "{", "invalid JSON"),
    ("state", "MELTED", "unknown state 'MELTED'"),
    ("meta", "3", "meta must be"),
]


def _stored(backend: SQLAlchemyBackend, table: sa.Table, uuid: str, column: str) -> Any:
    with backend.engine.connect() as conn:
        return conn.execute(sa.select(table.c[column]).where(table.c.uuid == uuid)).scalar_one()


def test_a_corrupt_atom_row_names_table_uuid_column_and_atom(backend: SQLAlchemyBackend) -> None:
    book, fd = saved_book(backend)
    b = fd.find_by_name("b")
    assert b is not None
    table = backend.tables.atoms
    for column, value, reason in ATOM_CASES:
        original = _stored(backend, table, b.uuid, column)
        tamper(backend, table, b.uuid, **{column: value})
        for error in _every_read(backend, book, fd, b):
            assert (error.table, error.uuid, error.column, error.atom) == (table.name, b.uuid, column, "b")
            assert error.flow_detail == fd.uuid
            text = str(error)
            for part in (table.name, b.uuid, repr(column), "atom 'b'", fd.uuid, reason):
                assert part in text, (part, text)
        # Lazy reads do not decode atom rows, so the rest of the logbook stays readable.
        conn = backend.get_connection()
        assert conn.get_flow_details(fd.uuid, lazy=True).name == "steps"
        assert [b.name for b in conn.get_logbooks(lazy=True)] == ["orders"]
        tamper(backend, table, b.uuid, **{column: original})
        assert backend.get_connection().get_flow_details(fd.uuid).find(b.uuid) is not None


def test_a_corrupt_flow_row_names_table_uuid_and_column(backend: SQLAlchemyBackend) -> None:
    book, fd = saved_book(backend)
    table = backend.tables.flows
    for column, value, reason in FLOW_CASES:
        original = _stored(backend, table, fd.uuid, column)
        tamper(backend, table, fd.uuid, **{column: value})
        for error in _every_read(backend, book, fd, None):
            assert (error.table, error.uuid, error.column, error.atom) == (table.name, fd.uuid, column, None)
            assert reason in str(error) and table.name in str(error)
        tamper(backend, table, fd.uuid, **{column: original})


def test_a_corrupt_logbook_row_names_table_uuid_and_column(backend: SQLAlchemyBackend) -> None:
    book, fd = saved_book(backend)
    tamper(backend, backend.tables.logbooks, book.uuid, meta="{{")
    conn = backend.get_connection()
    for read in (lambda: conn.get_logbook(book.uuid), lambda: list(conn.get_logbooks(lazy=True))):
        with pytest.raises(CorruptLogbook) as raised:
            read()
        error = raised.value
        assert (error.table, error.uuid, error.column) == (backend.tables.logbooks.name, book.uuid, "meta")
        assert "invalid JSON" in str(error)


def test_show_lists_the_readable_atoms_and_names_the_unreadable_one(
    tmp_path: Path, sql_backend_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite:///%s" % (tmp_path / "flows.db")
    backend = sql_backend_factory(url, table_prefix="flowkit_")
    book, fd = saved_book(backend)
    b = fd.find_by_name("b")
    assert b is not None
    tamper(backend, backend.tables.atoms, b.uuid, results="[oops")
    assert main(["show", fd.uuid, "--backend", url]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:2] in ("a ", "b ", "c ")}
    assert rows["a"][2] == "SUCCESS" and rows["b"][2] == "UNREADABLE" and rows["c"][2] == "PENDING"
    problems = out.split("problems:\n", 1)[1]
    assert "table flowkit_atomdetails, uuid %s, column 'results', atom 'b'" % b.uuid in problems
    assert main(["logbooks", "--backend", url]) == 0  # the listing reads no atom rows
    assert fd.uuid in capsys.readouterr().out


def test_logbooks_lists_what_it_can_read_and_names_what_it_cannot(
    tmp_path: Path, sql_backend_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite:///%s" % (tmp_path / "flows.db")
    backend = sql_backend_factory(url, table_prefix="flowkit_")
    good_book, good = saved_book(backend)
    bad_book, bad = saved_book(backend)
    tamper(backend, backend.tables.flows, bad.uuid, meta="{")
    assert main(["logbooks", "--backend", url]) == 1
    out = capsys.readouterr().out
    table, problems = out.split("\nproblems:\n")
    assert any(good.uuid in row and row.endswith(" SUSPENDED") for row in table.splitlines())
    assert any(row.startswith(bad_book.uuid) and row.endswith(" UNREADABLE") for row in table.splitlines())
    assert "table flowkit_flowdetails, uuid %s, column 'meta'" % bad.uuid in problems


def test_show_reports_lost_atom_details(
    tmp_path: Path, sql_backend_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite:///%s" % (tmp_path / "flows.db")
    backend = sql_backend_factory(url, table_prefix="flowkit_")
    fd = run_until_b(backend, tmp_path / "journal.txt", {"engine": "serial"})
    delete(backend, backend.tables.atoms, _uuid_of(fd, "b"))
    assert main(["show", fd.uuid, "--backend", url]) == 1
    problems = capsys.readouterr().out.split("problems:\n", 1)[1]
    assert "flow detail %s recorded 3 atom details but has 2: 1 lost" % fd.uuid in problems


# -- resuming ----------------------------------------------------------------------------------


def run_until_b(backend: SQLAlchemyBackend, journal: Path, engine_options: dict[str, Any]) -> FlowDetail:
    """Run a -> b -> c, suspended once b is done; return the flow detail as stored."""
    engine = load_from_factory(
        make_steps, store={"start": [], "journal": str(journal)}, backend=backend, **engine_options
    )

    def suspend(state: Any, details: dict[str, Any]) -> None:
        if details["atom_name"] == "b" and state == states.SUCCESS:
            engine.suspend()

    engine.atom_notifier.register("*", suspend)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert ran(journal) == ["a", "b"]
    return backend.get_connection().get_flow_details(engine.flow_detail.uuid)


def _uuid_of(fd: FlowDetail, name: str) -> str:
    detail = fd.find_by_name(name)
    assert detail is not None
    return detail.uuid


def _resume_to_success(engine: Any) -> None:
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("tc") == ["a", "b", "c"]


def test_an_unreadable_atom_row_is_refused_then_repaired(
    backend: SQLAlchemyBackend, tmp_path: Path, engine_options: dict[str, Any]
) -> None:
    journal = tmp_path / "journal.txt"
    fd = run_until_b(backend, journal, engine_options)
    b_uuid = _uuid_of(fd, "b")
    tamper(backend, backend.tables.atoms, b_uuid, results='["a", "b"')
    conn = backend.get_connection()
    with pytest.raises(CorruptLogbook, match="column 'results', atom 'b'"):
        conn.get_flow_details(fd.uuid)
    salvaged = conn.get_flow_details(fd.uuid, salvage=True)
    with pytest.raises(InconsistentLogbook) as raised:
        load_from_detail(salvaged, backend=backend, **engine_options)
    [problem] = raised.value.problems
    assert (problem.table, problem.uuid, problem.column, problem.atom) == (
        backend.tables.atoms.name,
        b_uuid,
        "results",
        "b",
    )
    assert "repair=True" in str(raised.value) and fd.uuid in str(raised.value)
    # Refusing wrote nothing: the row is as it was, and nothing ran.
    with pytest.raises(CorruptLogbook):
        conn.get_flow_details(fd.uuid)
    assert ran(journal) == ["a", "b"]

    salvaged = conn.get_flow_details(fd.uuid, salvage=True)
    engine = load_from_detail(salvaged, backend=backend, repair=True, **engine_options)
    _resume_to_success(engine)
    assert ran(journal) == ["a", "b", "b", "c"]  # b's result was lost, so b ran again; a did not
    stored = conn.get_flow_details(fd.uuid)  # the row was overwritten: readable again
    assert _uuid_of(stored, "b") == b_uuid
    [repair] = stored.meta["repairs"]
    assert repair["atoms"] == ["b"] and "column 'results'" in repair["problems"][0]
    assert "unreadable" not in stored.meta


def test_a_deleted_atom_detail_whose_successor_ran_is_refused_then_repaired(
    backend: SQLAlchemyBackend, tmp_path: Path, engine_options: dict[str, Any]
) -> None:
    journal = tmp_path / "journal.txt"
    fd = run_until_b(backend, journal, engine_options)
    delete(backend, backend.tables.atoms, _uuid_of(fd, "a"))
    stored = backend.get_connection().get_flow_details(fd.uuid)
    with pytest.raises(InconsistentLogbook) as raised:
        load_from_detail(stored, backend=backend, **engine_options)
    [problem] = raised.value.problems
    assert (problem.table, problem.atom, problem.flow_detail) == (backend.tables.atoms.name, "a", fd.uuid)
    assert "atom 'b' after it is SUCCESS" in str(raised.value)
    assert ran(journal) == ["a", "b"]

    engine = load_from_detail(stored, backend=backend, repair=True, **engine_options)
    _resume_to_success(engine)
    # a again (its record was lost), not b; c may run beside a (its predecessor b is done)
    assert ran(journal)[:2] == ["a", "b"] and sorted(ran(journal)[2:]) == ["a", "c"]
    assert backend.get_connection().get_flow_details(fd.uuid).meta["repairs"][0]["atoms"] == ["a"]


def test_a_deleted_atom_detail_of_the_last_finished_atom_is_refused(
    backend: SQLAlchemyBackend, tmp_path: Path, engine_options: dict[str, Any]
) -> None:
    # Nothing after b has started, so only the count the flow detail keeps tells b's row was lost.
    journal = tmp_path / "journal.txt"
    fd = run_until_b(backend, journal, engine_options)
    delete(backend, backend.tables.atoms, _uuid_of(fd, "b"))
    stored = backend.get_connection().get_flow_details(fd.uuid)
    with pytest.raises(InconsistentLogbook, match="recorded 3 atom details but has 2") as raised:
        load_from_detail(stored, backend=backend, **engine_options)
    assert [p.atom for p in raised.value.problems] == ["b"]

    engine = load_from_detail(stored, backend=backend, repair=True, **engine_options)
    _resume_to_success(engine)
    assert ran(journal) == ["a", "b", "b", "c"]
    # Repaired for good: the next resume finds nothing wrong.
    again = backend.get_connection().get_flow_details(fd.uuid)
    assert len(again) == 3 and again.meta["atom_details"] == 3
    load_from_detail(again, backend=backend, **engine_options)


def test_flowkit_resume_refuses_then_repairs(
    tmp_path: Path, sql_backend_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite:///%s" % (tmp_path / "flows.db")
    backend = sql_backend_factory(url, table_prefix="flowkit_")
    journal = tmp_path / "journal.txt"
    fd = run_until_b(backend, journal, {"engine": "serial"})
    b_uuid = _uuid_of(fd, "b")
    tamper(backend, backend.tables.atoms, b_uuid, state="HALF_DONE")
    backend.close()

    assert main(["resume", fd.uuid, "--backend", url]) == 2
    err = capsys.readouterr().err
    assert "cannot be resumed from its logbook" in err
    assert "table flowkit_atomdetails, uuid %s, column 'state', atom 'b'" % b_uuid in err
    assert "unknown state 'HALF_DONE'" in err and "--repair" in err
    assert ran(journal) == ["a", "b"]

    assert main(["resume", "--repair", fd.uuid, "--backend", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "repairing flow 'steps' (%s): re-running 'b'" % fd.uuid
    assert "column 'state', atom 'b'" in out[1]
    assert out[-1] == "flow 'steps' (%s): SUCCESS" % fd.uuid
    assert ran(journal) == ["a", "b", "b", "c"]
