"""Conductor processes on real boards: racing, crashing, freezing, and posts that roll back.

Every conductor here is ``flowkit conductor`` in its own process.  What ran is
read from the lines the tasks append (one ``O_APPEND`` write each, see ``flows.py``)
and from the events each conductor prints; the tests wait on those with
deadlines, never with fixed sleeps.
"""

from __future__ import annotations

import collections
import os
import signal
import time
import uuid

import pytest

from flowkit import states
from flowkit.conductors import post_flow
from flowkit.jobs.base import JobState
from tests.conductors import flows
from tests.conductors.conftest import AppModule, ConductorProcess, Setup
from tests.support import wait_until

pytestmark = pytest.mark.slow

#: Jobs raced over by 4 conductors.  The issue asks for 1,000 on PostgreSQL and
#: Redis; on two CPUs PostgreSQL takes ~80 s for them (posting included: each
#: job is a logbook and a job row, and each run commits its atoms).  SQLite
#: serialises the commits of all 4 processes on one file lock, so 300 there.
RACE_JOBS = {"sqlite": 300, "postgres": 1000, "redis": 1000}
RACE_DEADLINE = 240.0
TTL = 1.0


def _lines(path: str) -> list[list[str]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f.read().splitlines()]


@pytest.mark.timeout(RACE_DEADLINE + 60)
def test_four_conductors_run_every_job_exactly_once(setup: Setup, conductors: list[ConductorProcess]) -> None:
    count = RACE_JOBS[setup.kind]
    log = str(setup.tmp / "ran.txt")
    with setup.persistence() as persistence:
        board = setup.board(persistence)
        jobs = [post_flow(board, flows.one_line, store={"log": log, "job": "j%d" % i}) for i in range(count)]
        # A TTL far above a job's run time: a claim that expired here would
        # be a real (if legitimate) double claim, which the test must not see.
        conductors.extend(ConductorProcess(setup, "c%d" % i, ttl=10.0) for i in range(4))
        deadline = time.monotonic() + RACE_DEADLINE
        wait_until(lambda: len(_lines(log)) >= count and board.job_count == 0, "every job to finish", deadline=deadline)

        for process in conductors:
            assert process.terminate(30) == 0, process.text()
            assert process.lines()[-1] == "conductor %s stopped" % process.name

        ran = collections.Counter(line[1] for line in _lines(log))
        assert len(ran) == count and set(ran.values()) == {1}, "a job ran twice or never"
        claims = collections.Counter(j for process in conductors for j in process.events("job_claimed"))
        consumed = collections.Counter(j for process in conductors for j in process.events("job_consumed"))
        assert set(claims) == set(consumed) == {job.uuid for job in jobs}
        assert set(claims.values()) == set(consumed.values()) == {1}, "a job was claimed or consumed twice"
        for process in conductors:
            assert not process.events("job_lost") and not process.events("job_abandoned"), process.text()
        assert all(board.state_of(job) == JobState.COMPLETE for job in jobs)
        assert list(board.iterjobs()) == []
        # The work was shared, not done by one conductor while the others idled.
        assert sum(1 for process in conductors if process.events("job_consumed")) >= 2
        board.close()


@pytest.mark.timeout(90)
def test_killed_conductor_job_is_reclaimed_and_finished(setup: Setup, conductors: list[ConductorProcess]) -> None:
    log = str(setup.tmp / "ran.txt")
    release = str(setup.tmp / "release")
    with setup.persistence() as persistence:
        board = setup.board(persistence)
        job = post_flow(board, flows.two_steps, store={"log": log, "job": "k", "release": release})
        first = ConductorProcess(setup, "first", ttl=TTL, hold=True)
        conductors.append(first)
        deadline = time.monotonic() + 60
        wait_until(lambda: [line[0] for line in _lines(log)] == ["first", "hold"], "the hold task", deadline=deadline)

        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        second = ConductorProcess(setup, "second", ttl=TTL)
        conductors.append(second)
        assert job.wait(60), "the job was not finished after its lease expired"

        assert board.state_of(job) == JobState.COMPLETE
        assert second.terminate(30) == 0
        assert second.events("job_claimed") == [job.uuid]
        ran = [(line[0], int(line[2])) for line in _lines(log)]
        # "first" finished before the kill, so it is not run again; "hold" was
        # in flight (RUNNING in the logbook), so it runs again.
        assert ran == [
            ("first", first.proc.pid),
            ("hold", first.proc.pid),
            ("hold", second.proc.pid),
            ("last", second.proc.pid),
        ]
        board.close()


@pytest.mark.timeout(90)
def test_a_conductor_whose_task_stopped_heartbeating_loses_the_job(
    setup: Setup, conductors: list[ConductorProcess]
) -> None:
    log = str(setup.tmp / "ran.txt")
    release = str(setup.tmp / "release")
    with setup.persistence() as persistence:
        board = setup.board(persistence)
        job = post_flow(board, flows.hung_revert, store={"log": log, "job": "h", "release": release})
        hung = ConductorProcess(setup, "hung", ttl=TTL, hold=True)
        conductors.append(hung)
        deadline = time.monotonic() + 60
        wait_until(
            lambda: [line[0] for line in _lines(log)] == ["reserve", "undo-reserve"], "the revert", deadline=deadline
        )

        # Its own lease thread is alive, but the revert sends no more heartbeats
        # (heartbeat_timeout=1): the conductor stops renewing, the claim expires.
        hung.wait_for_line("job_lost %s" % job.uuid, deadline)
        assert "sent no heartbeat" in hung.text()
        healthy = ConductorProcess(setup, "healthy", ttl=TTL)
        conductors.append(healthy)
        assert job.wait(60), "the job was not finished by the other conductor"
        # The board says COMPLETE as the conductor consumes the job; its line follows.
        healthy.wait_for_line("job_consumed %s" % job.uuid, time.monotonic() + 60)

        assert healthy.events("job_claimed") == [job.uuid]
        assert healthy.events("job_consumed") == [job.uuid]
        ran = [(line[0], int(line[2])) for line in _lines(log)]
        assert ran == [
            ("reserve", hung.proc.pid),
            ("undo-reserve", hung.proc.pid),
            ("undo-reserve", healthy.proc.pid),  # REVERTING in the logbook: reverted again, to the end
        ]
        with persistence.get_connection() as conn:
            (fd,) = conn.get_logbook(job.book_uuid or "")
        assert fd.state == states.REVERTED
        assert {ad.name: ad.meta.get("heartbeat", {}).get("details") for ad in fd}["reserve"] == {"undoing": "h"}
        open(release, "w").close()
        assert healthy.terminate(30) == 0
        board.close()


@pytest.mark.timeout(90)
def test_frozen_conductor_cannot_write_after_its_lease(setup: Setup, conductors: list[ConductorProcess]) -> None:
    log = str(setup.tmp / "ran.txt")
    release = str(setup.tmp / "release")
    with setup.persistence() as persistence:
        board = setup.board(persistence)
        job = post_flow(board, flows.two_steps, store={"log": log, "job": "s", "release": release})
        frozen = ConductorProcess(setup, "frozen", ttl=TTL, hold=True)
        conductors.append(frozen)
        deadline = time.monotonic() + 60
        wait_until(lambda: [line[0] for line in _lines(log)] == ["first", "hold"], "the hold task", deadline=deadline)

        os.kill(frozen.proc.pid, signal.SIGSTOP)
        wait_until(lambda: board.find_owner(job) is None, "the frozen conductor's lease to expire", deadline=deadline)
        thief = board.claim(job, "thief", ttl=60)
        open(release, "w").close()
        os.kill(frozen.proc.pid, signal.SIGCONT)

        # "hold" returns in the frozen conductor; its result cannot be written.
        frozen.wait_for_line("job_lost %s" % job.uuid, deadline)
        assert "last" not in [line[0] for line in _lines(log)]
        with persistence.get_connection() as conn:
            (fd,) = conn.get_logbook(job.book_uuid or "")
            atoms = {ad.name: ad.state for ad in fd}
        assert atoms["first"] == states.SUCCESS
        assert atoms["hold"] == states.RUNNING, "a write of the stale owner reached the logbook"
        assert fd.state == states.RUNNING
        assert not frozen.events("job_consumed") and not frozen.events("job_abandoned")

        # Its next owner resumes it from the logbook the stale one could not touch.
        board.abandon(job, "thief", token=thief.token)
        assert job.wait(60)
        assert frozen.terminate(30) == 0
        assert [line[0] for line in _lines(log)] == ["first", "hold", "hold", "last"]
        board.close()


@pytest.mark.timeout(60)
def test_post_rolled_back_leaves_nothing_a_conductor_could_see(postgres_url: str) -> None:
    import sqlalchemy as sa

    from flowkit.conductors import fetch
    from flowkit.exceptions import NotFound
    from flowkit.jobs.backends import fetch as fetch_board
    from flowkit.persistence.backends import fetch as fetch_backend
    from flowkit.persistence.backends.impl_sqlalchemy import normalize_url

    with fetch_backend(postgres_url) as persistence:
        board = fetch_board("t-%s" % uuid.uuid4().hex[:12], {"board": "sql"}, persistence=persistence).connect()
        engine = sa.create_engine(normalize_url(postgres_url), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                transaction = conn.begin()
                ghost = post_flow(board, flows.one_line, store={"log": "/nonexistent", "job": "g"}, connection=conn)
                transaction.rollback()
        finally:
            engine.dispose()
        marker = post_flow(board, flows.one_line, store={"log": os.devnull, "job": "m"})

        conductor = fetch("blocking", "c1", board, wait_timeout=0.05)
        seen: list[str] = []
        conductor.notifier.register("job_claimed", lambda event, details: seen.append(details["job"].uuid))
        conductor.run(max_dispatches=1)

        assert seen == [marker.uuid]
        assert board.state_of(marker) == JobState.COMPLETE
        assert list(board.iterjobs()) == []
        with pytest.raises(NotFound):
            board.get_job(ghost.uuid)
        with persistence.get_connection() as read, pytest.raises(NotFound):
            read.get_logbook(ghost.book_uuid or "")
        board.close()


@pytest.fixture
def postgres_url() -> str:
    from tests.persistence.conftest import POSTGRES_URL, server_url

    return server_url(POSTGRES_URL, "PostgreSQL", "FLOWKIT_TEST_POSTGRES_URL")


@pytest.mark.timeout(180)
def test_conductors_started_without_the_factory_module_keep_the_job(
    setup: Setup, conductors: list[ConductorProcess], app: AppModule, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowkit.cli import main

    log = str(setup.tmp / "ran.txt")
    with setup.persistence() as persistence:
        board = setup.board(persistence)
        job = post_flow(board, app.make, store={"log": log, "job": "j"})
        # The operator allows the module's factories, but conductors started in setup.tmp cannot
        # import it; no backoff, so each claims at once.
        allow = ("--allow-module", app.name)
        for i, name in enumerate(("c1", "c2", "c3")):
            process = ConductorProcess(setup, name, ttl=10.0, extra=("--max-dispatches", "1", "--backoff", "0", *allow))
            conductors.append(process)
            assert process.proc.wait(60) == 0, process.text()
            failures = board.failures_of(job)
            assert failures.attempts == i + 1 and failures.failed_by[-1] == name, process.text()
            assert failures.last_error is not None and app.name in failures.last_error
            if i < 2:
                assert board.state_of(job) == JobState.UNCLAIMED and process.events("job_abandoned") == [job.uuid]
        assert board.state_of(job) == JobState.TRASHED and conductors[-1].events("job_trashed") == [job.uuid]
        assert not os.path.exists(log)

        where = ["--board", setup.board_url, "--board-name", setup.board_name, "--persistence", setup.persistence_url]
        capsys.readouterr()
        assert main(["jobs", "list", "--all", *where]) == 0
        (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(job.uuid)]
        assert "TRASHED" in row and " 3 " in row and app.name in row
        assert main(["jobs", "retry", job.uuid, *where]) == 0
        assert capsys.readouterr().out.split() == [job.uuid, "UNCLAIMED"]

        # Started in the module's folder, a conductor can build the flow.
        fixed = ConductorProcess(setup, "c4", ttl=10.0, extra=("--max-dispatches", "1", *allow), cwd=app.folder)
        conductors.append(fixed)
        assert fixed.proc.wait(60) == 0, fixed.text()
        assert fixed.events("job_consumed") == [job.uuid]
        assert board.state_of(job) == JobState.COMPLETE
        assert [line[:2] for line in _lines(log)] == [["run", "j"]]
        board.close()
