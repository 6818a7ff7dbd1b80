"""``flowkit jobs`` and ``flowkit conductor`` on a SQLite board."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit.cli import main
from flowkit.conductors.cli import board_conf
from tests.conductors.conftest import AppModule


def test_board_conf_from_urls_and_kinds() -> None:
    assert board_conf("redis://h:6379/0") == {"board": "redis", "url": "redis://h:6379/0"}
    assert board_conf("postgresql://u@h/db") == {"board": "sql", "url": "postgresql://u@h/db"}
    assert board_conf("sql") == {"board": "sql"}
    assert board_conf("memory://") == {"board": "memory"}
    with pytest.raises(ValueError, match="no job board"):
        board_conf("ftp://x")


def test_post_list_run_and_cancel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    log = tmp_path / "log.txt"
    where = ["--board", url, "--persistence", url, "--board-name", "cli"]
    store = '{"log": "%s", "job": "from-cli"}' % log

    assert main(["jobs", "post", "tests.conductors.flows:one_line", "--store", store, *where]) == 0
    ran = capsys.readouterr().out.strip()
    assert main(["jobs", "post", "tests.conductors.flows:one_line", "--name", "later", *where]) == 0
    cancelled = capsys.readouterr().out.strip()
    assert main(["jobs", "list", *where]) == 0
    listing = capsys.readouterr().out
    assert ran in listing and cancelled in listing and "UNCLAIMED" in listing

    assert main(["jobs", "cancel", cancelled, *where]) == 0
    assert capsys.readouterr().out.split() == [cancelled, "CANCELLED"]

    assert main(["conductor", "--name", "c1", "--max-dispatches", "1", *where]) == 0
    out = capsys.readouterr().out
    assert "job_consumed %s tests.conductors.flows:one_line SUCCESS" % ran in out
    assert log.read_text().split()[:2] == ["run", "from-cli"]
    assert main(["jobs", "list", *where]) == 0
    assert capsys.readouterr().out == "no unfinished jobs (--all lists finished ones too)\n"


def test_post_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    where = ["--board", url, "--persistence", url]
    assert main(["jobs", "post", "tests.conductors.flows:nothing_here", *where]) == 2
    assert (
        "factory 'tests.conductors.flows:nothing_here' cannot be imported: "
        "module 'tests.conductors.flows' has no attribute 'nothing_here'"
    ) in capsys.readouterr().err
    assert main(["jobs", "post", "tests.conductors.flows:one_line", "--args", "{}", *where]) == 2
    assert "JSON list" in capsys.readouterr().err


def test_a_trashed_job_is_listed_with_its_error_and_retried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], app: AppModule
) -> None:
    url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    log = tmp_path / "log.txt"
    where = ["--board", url, "--persistence", url, "--board-name", "cli"]
    store = '{"log": "%s", "job": "j"}' % log
    assert main(["jobs", "post", "%s:make" % app.name, "--store", store, *where]) == 0
    job = capsys.readouterr().out.strip()
    app.hide()  # the conductor below runs where the factory's module is not importable

    run = ["conductor", "--max-dispatches", "1", "--max-conductor-failures", "1", *where]
    assert main([*run, "--name", "c1"]) == 0
    assert "job_trashed %s" % job in capsys.readouterr().out

    assert main(["jobs", "list", *where]) == 0
    assert job not in capsys.readouterr().out  # finished: not listed by default
    assert main(["jobs", "list", "--all", *where]) == 0
    listing = capsys.readouterr().out
    (row,) = [line for line in listing.splitlines() if line.startswith(job)]
    assert "TRASHED" in row and app.name in row and " 1 " in row
    assert "ATTEMPTS" in listing and "LAST ERROR" in listing

    assert main(["jobs", "retry", job, *where]) == 0
    assert capsys.readouterr().out.split() == [job, "UNCLAIMED"]
    assert main(["jobs", "retry", job, *where]) == 2  # only a trashed job can be retried
    assert "only a TRASHED job" in capsys.readouterr().err

    app.put_back()
    assert main([*run, "--name", "c2"]) == 0
    assert "job_consumed %s" % job in capsys.readouterr().out
    assert log.read_text().split()[:2] == ["run", "j"]
    assert main(["jobs", "list", "--all", *where]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(job)]
    assert "COMPLETE" in row


def test_post_with_a_delay_or_not_before_is_listed_with_its_due_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    store = '{"log": "%s", "job": "j"}' % (tmp_path / "log.txt")
    where = ["--board", url, "--persistence", url, "--board-name", "cli", "--store", store]
    factory = "tests.conductors.flows:one_line"
    assert main(["jobs", "post", factory, "--name", "in-an-hour", "--delay", "3600", *where]) == 0
    delayed = capsys.readouterr().out.strip()
    new_year = ["--name", "new-year", "--not-before", "2999-01-01T09:30:00+02:00"]
    assert main(["jobs", "post", factory, *new_year, *where]) == 0
    dated = capsys.readouterr().out.strip()
    assert main(["jobs", "post", factory, "--name", "past", "--not-before", "2000-01-01T00:00:00+00:00", *where]) == 0
    past = capsys.readouterr().out.strip()

    where = where[:-2]
    assert main(["jobs", "list", *where]) == 0
    listing = capsys.readouterr().out
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "DUE" in listing.splitlines()[0]
    assert " at 2999-01-01 07:30:00 " in rows[dated]  # shown in UTC
    assert " at " in rows[delayed]
    assert " at " not in rows[past]

    # A conductor now runs only the job that is due.
    assert main(["conductor", "--name", "c1", "--max-dispatches", "1", *where]) == 0
    assert "job_consumed %s" % past in capsys.readouterr().out
    assert main(["jobs", "list", "--all", *where]) == 0
    listing = capsys.readouterr().out
    assert "OUTCOME" in listing.splitlines()[0]
    (row,) = [line for line in listing.splitlines() if line.startswith(past)]
    assert "COMPLETE" in row and "SUCCESS" in row
    (row,) = [line for line in listing.splitlines() if line.startswith(delayed)]
    assert "UNCLAIMED" in row


def test_jobs_list_shows_parked_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flowkit.jobs.backends.impl_sql import SQLJobBoard

    url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    where = ["--board", url, "--persistence", url, "--board-name", "cli"]
    board = SQLJobBoard("cli", url).connect()
    try:
        timer, signal = board.post("timer"), board.post("signal")
        for job, due in ((timer, 32503680000.0), (signal, None)):  # 3000-01-01 UTC, and until woken
            claim = board.claim(job, "c1")
            board.park(job, "c1", due=due, token=claim.token)
    finally:
        board.close()
    assert main(["jobs", "list", *where]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "parked until 3000-01-01 00:00:00" in rows[timer.uuid]
    assert "parked on signal" in rows[signal.uuid]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--delay", "-5"], "delay"),
        (["--delay", "nan"], "delay"),
        (["--not-before", "2030-01-01T00:00:00"], "no timezone"),
        (["--not-before", "next tuesday"], "ISO 8601"),
        (["--delay", "5", "--not-before", "2030-01-01T00:00:00+00:00"], "not allowed with"),
    ],
)
def test_post_refuses_a_bad_due_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    where = ["--board", url, "--persistence", url, "--board-name", "cli"]
    assert main(["jobs", "post", "tests.conductors.flows:one_line", "--name", "fine", *where]) == 0
    capsys.readouterr()
    try:
        code = main(["jobs", "post", "tests.conductors.flows:one_line", *options, *where])
    except SystemExit as exit:  # argparse refuses what it parses
        code = exit.code  # type: ignore[assignment]
    assert code == 2
    assert message in capsys.readouterr().err
    assert main(["jobs", "list", *where]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # the header and the one fine job
