"""A logbook row rewritten to name ``os:system`` runs nothing, wherever the flow is rebuilt.

Each test rewrites the flow detail's factory record in the SQLite file itself (what
anyone with write access to the database can do) to ``{"name": "os:system", "args":
["touch MARKER"]}`` and then rebuilds the flow the way an operator or a conductor would:
``load_from_detail``, ``flowkit resume`` (in this process and in a fresh one),
``flowkit graph --flow-detail`` and a conductor claiming the job.  The marker file must
never appear; the flow detail and the factory name are reported instead.
"""

from __future__ import annotations

import json
import shlex
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from flowkit import exceptions
from flowkit.cli import main
from flowkit.conductors import EVENTS, JOB_CONSUMED, fetch, post_flow
from flowkit.engines import load_from_detail
from flowkit.jobs.backends import fetch as fetch_board
from flowkit.persistence.backends import fetch as fetch_backend
from flowkit.persistence.models import FlowDetail, LogBook
from tests.conductors import flows
from tests.support import run_flowkit

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "logbook.db"


@pytest.fixture
def url(db: Path) -> str:
    return "sqlite:///%s" % (db,)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned.txt"


def tamper(db: Path, flow_uuid: str, marker: Path) -> None:
    """Rewrite the flow detail's row, as an attacker with the database's password would."""
    with sqlite3.connect(str(db)) as conn:
        (meta,) = conn.execute("SELECT meta FROM flowkit_flowdetails WHERE uuid = ?", (flow_uuid,)).fetchone()
        meta = json.loads(meta)
        meta["factory"] = {"name": "os:system", "args": ["touch %s" % shlex.quote(str(marker))], "kwargs": {}}
        conn.execute("UPDATE flowkit_flowdetails SET meta = ? WHERE uuid = ?", (json.dumps(meta), flow_uuid))


def tampered_flow_detail(url: str, db: Path, marker: Path) -> str:
    """A saved flow detail (not yet run) whose factory record names os:system."""
    detail = FlowDetail(name="innocent")
    detail.meta["factory"] = {"name": "tests.conductors.flows:one_line", "args": [], "kwargs": {}}
    book = LogBook(name="innocent")
    book.add(detail)
    with fetch_backend(url) as backend, backend.get_connection() as conn:
        conn.save_logbook(book)
    tamper(db, detail.uuid, marker)
    return detail.uuid


def test_load_from_detail_runs_nothing(
    url: str, db: Path, marker: Path, engine_options: dict[str, Any]
) -> None:
    uuid = tampered_flow_detail(url, db, marker)
    with fetch_backend(url) as backend:
        with backend.get_connection() as conn:
            detail = conn.get_flow_details(uuid)
        with pytest.raises(Exception) as raised:
            load_from_detail(detail, backend=backend, **engine_options)
    assert not marker.exists(), "the logbook ran a shell command"
    error = raised.value
    assert isinstance(error, exceptions.UnknownFactory)
    assert isinstance(error, exceptions.NotFound)
    assert (error.factory_name, error.flow_detail_name, error.flow_detail_uuid) == ("os:system", "innocent", uuid)
    assert "flow detail 'innocent' (%s): factory 'os:system' is not registered" % uuid in str(error)


def test_flowkit_resume_runs_nothing(url: str, db: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = tampered_flow_detail(url, db, marker)
    status = main(["resume", uuid, "--backend", url])
    assert not marker.exists(), "flowkit resume ran a shell command"
    assert status == 2
    err = capsys.readouterr().err
    assert "flow detail 'innocent' (%s): factory 'os:system' is not registered" % uuid in err
    # The message tells the operator how to make a real factory known.
    for option in ("--import MODULE", "--allow-module PREFIX", "'flowkit.factories'", "flow_factory"):
        assert option in err


def test_flowkit_resume_in_a_fresh_process_runs_nothing(url: str, db: Path, marker: Path, tmp_path: Path) -> None:
    uuid = tampered_flow_detail(url, db, marker)
    proc = run_flowkit("resume", uuid, "--backend", url, cwd=tmp_path)
    assert not marker.exists(), "flowkit resume ran a shell command"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "factory 'os:system' is not registered" in proc.stderr


def test_flowkit_graph_runs_nothing(url: str, db: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = tampered_flow_detail(url, db, marker)
    status = main(["graph", "--flow-detail", uuid, "--backend", url])
    assert not marker.exists(), "flowkit graph ran a shell command"
    assert status == 2
    assert "flow detail 'innocent' (%s): factory 'os:system' is not registered" % uuid in capsys.readouterr().err


def test_a_conductor_claiming_the_job_runs_nothing(url: str, db: Path, marker: Path, tmp_path: Path) -> None:
    log = tmp_path / "ran.txt"
    with fetch_backend(url) as persistence:
        board = fetch_board("tampered", {"board": "sql"}, persistence=persistence).connect()
        try:
            job = post_flow(board, flows.one_line, store={"log": str(log), "job": "j"})
            tamper(db, job.details["flow_uuid"], marker)
            conductor = fetch("blocking", "c1", board, persistence=persistence)
            seen: list[tuple[str, dict[str, Any]]] = []
            for event in EVENTS:
                conductor.notifier.register(event, lambda event, details: seen.append((event, details)))
            conductor.run(max_dispatches=1)
        finally:
            board.close()
    assert not marker.exists(), "a conductor ran a shell command from the logbook"
    assert not log.exists()
    names = [event for event, _ in seen]
    assert JOB_CONSUMED not in names
    reasons = [str(details.get("reason")) for _, details in seen if details.get("reason")]
    assert any("factory 'os:system' is not registered" in reason for reason in reasons), seen
