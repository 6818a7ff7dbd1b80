"""``flowkit jobs list`` (``--all``, ``--state``, ``--json``, leases and owners) and ``flowkit jobs show``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from flowkit.cli import main
from flowkit.jobs.backends.impl_sql import SQLJobBoard
from flowkit.persistence.backends import fetch


@pytest.fixture
def where(tmp_path: Path) -> list[str]:
    url = "sqlite:///%s" % (tmp_path / "jobs.db",)
    return ["--board", url, "--persistence", url, "--board-name", "cli"]


class _Board(SQLJobBoard):
    """The board the commands read, closing its persistence with it."""

    def close(self) -> None:
        super().close()
        self.persistence.close()


def _board(where: list[str]) -> SQLJobBoard:
    return _Board("cli", url=where[1], persistence=fetch(where[1]))


def test_a_job_whose_owner_died_shows_its_expired_lease(where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    board = _board(where)
    try:
        dead = board.post("dead-owner")
        alive = board.post("live-owner")
        board.post("waiting")
        board.claim(dead, "condA", ttl=0.05)
        board.claim(alive, "condB", ttl=3600)
        deadline = time.monotonic() + 10
        while board.status_of(dead).state.value == "CLAIMED" and time.monotonic() < deadline:
            time.sleep(0.01)  # the lease runs out on the board's real clock
    finally:
        board.close()
    assert main(["jobs", "list", *where]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["JOB", "NAME", "STATE", "OWNER", "LEASE"]
    by_name = {row.split()[1]: row for row in rows}
    assert by_name["dead-owner"].split()[2:4] == ["UNCLAIMED", "condA"] and "(owner gone)" in by_name["dead-owner"]
    assert by_name["live-owner"].split()[2:4] == ["CLAIMED", "condB"] and "(owner alive)" in by_name["live-owner"]
    assert by_name["waiting"].split()[3:5] == ["-", "-"]

    assert main(["jobs", "list", "--json", *where]) == 0
    listing = json.loads(capsys.readouterr().out)
    jobs = {job["name"]: job for job in listing["jobs"]}
    assert jobs["dead-owner"]["owner"] is None
    assert jobs["dead-owner"]["lease"]["owner"] == "condA" and jobs["dead-owner"]["lease"]["expired"] is True
    assert jobs["live-owner"]["owner"] == "condB" and jobs["live-owner"]["lease"]["expired"] is False
    assert jobs["waiting"]["lease"] is None

    assert main(["jobs", "show", dead.uuid[:10], *where]) == 0
    shown = capsys.readouterr().out
    assert "job:      %s\n" % (dead.uuid,) in shown and "owner:    condA\n" in shown
    assert "(owner gone)" in shown


def test_finished_jobs_by_state_and_with_all(where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    board = _board(where)
    try:
        done = board.post("done")
        board.claim(done, "c1")
        board.consume(done, "c1", outcome="SUCCESS")
        cancelled = board.post("cancelled")
        board.cancel(cancelled)
        board.post("open")
    finally:
        board.close()
    assert main(["jobs", "list", *where]) == 0
    assert [row.split()[1] for row in capsys.readouterr().out.splitlines()[1:]] == ["open"]
    assert main(["jobs", "list", "--all", *where]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert sorted(row.split()[1] for row in rows) == ["cancelled", "done", "open"]
    (row,) = [row for row in rows if row.split()[1] == "done"]
    assert row.split()[2] == "COMPLETE" and " SUCCESS " in row
    assert main(["jobs", "list", "--state", "complete,cancelled", *where]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    found = sorted((row.split()[1], row.split()[2]) for row in rows)
    assert found == [("cancelled", "CANCELLED"), ("done", "COMPLETE")]
    assert main(["jobs", "list", "--state", "gone", *where]) == 2
    assert "--state GONE: not a job state" in capsys.readouterr().err


def test_jobs_show_of_an_unknown_job(where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    board = _board(where)
    try:
        board.post("other")
    finally:
        board.close()
    assert main(["jobs", "show", "abc", *where]) == 2
    assert "no job 'abc' on board 'cli'" in capsys.readouterr().err
