"""post_flow(): a posted job's flow detail holds all it needs, so it resumes without the job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowkit import states
from flowkit.conductors import post_flow
from flowkit.engines import load_from_detail
from flowkit.jobs.backends import fetch as fetch_board
from flowkit.persistence.backends import fetch as fetch_backend
from tests.conductors import flows
from tests.support import run_flowkit

ROOT = Path(__file__).resolve().parent.parent.parent


def post(url: str, store: dict[str, Any]) -> str:
    """Post one_line on a SQL board in ``url``; return the job's flow detail uuid."""
    with fetch_backend(url) as persistence:
        board = fetch_board("posting", {"board": "sql"}, persistence=persistence).connect()
        try:
            job = post_flow(board, flows.one_line, store=store)
        finally:
            board.close()
    return str(job.details["flow_uuid"])


def test_flowkit_resume_of_a_posted_job_uses_its_store(tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    log = tmp_path / "log.txt"
    uuid = post(url, {"log": str(log), "job": "from-the-flow-detail"})
    # A fresh process: what it knows of the store can only come from the database.
    proc = run_flowkit("resume", uuid, "--backend", url, "--import", "tests.conductors.flows", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "flow 'one_line' (%s): SUCCESS" % uuid
    assert log.read_text().split()[:2] == ["run", "from-the-flow-detail"]


def test_load_from_detail_of_a_posted_job_uses_its_store_and_explicit_values_win(
    tmp_path: Path, engine_options: dict[str, Any]
) -> None:
    url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    log = tmp_path / "log.txt"
    uuid = post(url, {"log": str(log), "job": "posted"})
    with fetch_backend(url) as backend:
        with backend.get_connection() as conn:
            detail = conn.get_flow_details(uuid)
        assert detail.meta["store"] == {"log": str(log), "job": "posted"}
        engine = load_from_detail(detail, store={"job": "overridden"}, backend=backend, **engine_options)
        engine.run()
        assert engine.storage.get_flow_state() == states.SUCCESS
    assert log.read_text().split()[:2] == ["run", "overridden"]


def test_a_store_that_is_not_json_is_refused_when_posting(tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    with pytest.raises(ValueError, match="store of job 'tests.conductors.flows:one_line' must be JSON data"):
        post(url, {"log": object()})
    with fetch_backend(url) as backend, backend.get_connection() as conn:
        assert list(conn.get_logbooks()) == []
