"""Waits survive SIGKILL: a real process parks a flow, dies, and a new process finishes it.

Each test runs ``tests/engines/wait_crash_child.py`` twice, in every engine mode and on
every SQL backend (an SQLite file, PostgreSQL at ``FLOWKIT_TEST_POSTGRES_URL``, MariaDB
or MySQL at ``FLOWKIT_TEST_MYSQL_URL``; an unreachable server skips, or fails under
``CI=true``): a ``start`` process that runs the flow with a blocking ``run()`` until this
process SIGKILLs it (or one of the flow's tasks ends it), and a ``resume`` process,
started at the same time so that it is connected and ready when the first one dies,
that rebuilds the flow with ``load_from_detail`` and runs it to its end.

What they show:

- a timer's deadline is the one written ahead before the crash: the atom after a
  2-second timer starts at that deadline, not 2 seconds after the resume (the resume
  begins a second after the kill, so the two are a second apart);
- a signal sent while no process runs the flow, whether the flow was already waiting
  for it or had not reached the wait yet, ends the wait with its value;
- nothing durable runs twice: the atom before the wait executed once (counted with one
  ``O_EXCL`` file per execution, which no crash can undo);
- a task's idempotency key is the same when its attempt runs again after a crash, and
  another one when a retry controller starts a new attempt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit import signals, states
from flowkit.persistence.backends import fetch
from flowkit.persistence.models import FlowDetail
from tests.engines.wait_crash_child import NAP_SECONDS, SIGNAL, executions, read_events, read_keys
from tests.persistence.conftest import MYSQL_URL, POSTGRES_URL, drop_tables, server_url, unique_prefix
from tests.support import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]

#: How long after the kill the resume begins: long enough to tell "the original
#: deadline" from "a fresh timer started at the resume" apart by a second.
RESUME_AFTER_KILL = 1.0

#: How late the atom after a timer may start after its deadline, or after the resume began
#: when that was later (loading the flow, scheduling, a Dask round trip on a busy machine).
LATE = 3.0

#: A child that reports nothing for this long has hung.
CHILD_TIMEOUT = 60.0

pytestmark = pytest.mark.slow


# -- backends ----------------------------------------------------------------------------


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def backend_conf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The conf (for ``fetch``) of a database the children and this process share."""
    if request.param == "sqlite":
        yield {"connection": "sqlite:///%s" % (tmp_path / "waits.db",)}
        return
    if request.param == "postgresql":
        url = server_url(POSTGRES_URL, "PostgreSQL", "FLOWKIT_TEST_POSTGRES_URL")
    else:
        url = server_url(MYSQL_URL, "MySQL", "FLOWKIT_TEST_MYSQL_URL")
    prefix = unique_prefix()
    yield {"connection": url, "table_prefix": prefix}
    drop_tables(url, prefix)


# -- the two processes -------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    # The children must import the same flowkit and tests package as this process.
    env = dict(os.environ)
    roots = [str(REPO_ROOT), str(Path(flowkit.__file__).resolve().parent.parent)]
    env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONWARNINGS", None)
    return env


def _child_engine_options(engine_options: dict[str, Any]) -> dict[str, Any]:
    """The engine options as JSON data: a Dask client is passed by its scheduler's address."""
    client = engine_options.get("client")
    if client is None:
        return engine_options
    options = {k: v for k, v in engine_options.items() if k != "client"}
    options["address"] = client.scheduler.address
    return options


class Run:
    """One test's pair of processes and the directory they share with it."""

    def __init__(self, workdir: Path, backend_conf: dict[str, Any], engine_options: dict[str, Any]) -> None:
        self.workdir = workdir
        self.backend_conf = backend_conf
        self.options = json.dumps(_child_engine_options(engine_options))
        self.first: subprocess.Popen[str] | None = None
        self.second: subprocess.Popen[str] | None = None
        self.fd_uuid = ""
        self.killed_at = 0.0

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[str]:
        argv = [
            sys.executable,
            "-m",
            "tests.engines.wait_crash_child",
            *args,
            "--backend",
            json.dumps(self.backend_conf),
            "--workdir",
            str(self.workdir),
            "--engine-options",
            self.options,
        ]
        with open(self.workdir / ("%s.out" % name), "w") as out:
            return subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=_child_env(),
                cwd=str(REPO_ROOT),
            )

    def detail(self) -> str:
        """What the children wrote, for a failure message."""
        parts = ["--- events ---", *read_events(self.workdir)]
        for name in ("start", "resume"):
            path = self.workdir / ("%s.out" % name)
            if path.exists():
                parts += ["--- %s output ---" % name, path.read_text()]
        return "\n".join(parts)

    def wait_for(self, line: str, *, prefix: bool = False, first_may_end: bool = False) -> str:
        """Wait until a child writes the event ``line`` (or one starting with it); return it.

        A child that exits with an error before that fails the wait at once (the first
        one may, with ``first_may_end``).
        """
        watched = [self.second] if first_may_end else [self.first, self.second]

        def seen() -> str | None:
            for got in read_events(self.workdir):
                if got == line or (prefix and got.startswith(line)):
                    return got
            for proc in watched:
                if proc is not None and proc.poll() is not None and proc.returncode != 0:
                    raise AssertionError("a child exited %s before %r\n%s" % (proc.returncode, line, self.detail()))
            return None

        return wait_until(seen, "a child to report %r" % (line,), timeout=CHILD_TIMEOUT, detail=self.detail)

    def start(self, scenario: str) -> None:
        """Start the flow's process and, beside it, the process that will resume the flow."""
        self.first = self._spawn("start", "start", "--scenario", scenario)
        self.second = self._spawn("resume", "resume")
        self.fd_uuid = self.wait_for("flow-detail ", prefix=True).split()[1]

    def kill(self) -> None:
        """SIGKILL the first process (once the resuming one is ready)."""
        assert self.first is not None
        self.wait_for("ready")
        self.first.send_signal(signal.SIGKILL)
        self._wait(self.first, "the killed process to be gone")
        self.killed_at = time.time()
        assert self.first.returncode == -signal.SIGKILL, self.detail()

    def ended_itself(self, returncode: int) -> None:
        """Wait for the first process to end by itself, with ``returncode``."""
        assert self.first is not None
        self.wait_for("ready", first_may_end=True)
        self._wait(self.first, "the first process to end")
        assert self.first.returncode == returncode, self.detail()

    def resume(self, not_before: float) -> None:
        """Let the second process resume the flow at ``not_before`` (epoch seconds); wait for it to end."""
        assert self.second is not None and self.second.stdin is not None
        self.second.stdin.write("%s %r\n" % (self.fd_uuid, not_before))
        self.second.stdin.close()
        self._wait(self.second, "the resumed flow to end")
        assert self.second.returncode == 0, self.detail()

    def _wait(self, proc: subprocess.Popen[str], what: str) -> None:
        try:
            proc.wait(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "gave up after %.0f s waiting for %s\n%s" % (CHILD_TIMEOUT, what, self.detail())
            ) from None

    def stored(self) -> FlowDetail:
        with fetch(self.backend_conf) as backend, backend.get_connection() as conn:
            return conn.get_flow_details(self.fd_uuid)

    def close(self) -> None:
        for proc in (self.first, self.second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc is not None and proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()


@pytest.fixture
def crash_run(tmp_path: Path, backend_conf: dict[str, Any], engine_options: dict[str, Any]) -> Iterator[Run]:
    run = Run(tmp_path, backend_conf, engine_options)
    try:
        yield run
    finally:
        run.close()


def _resumed_events(run: Run) -> list[str]:
    """The events the resuming process wrote, from ``resuming`` on."""
    events = read_events(run.workdir)
    return events[next(i for i, line in enumerate(events) if line.startswith("resuming ")) :]


# -- timers ------------------------------------------------------------------------------


def test_a_timer_fires_at_its_original_deadline_after_a_sigkill(crash_run: Run) -> None:
    run = crash_run
    run.start("timer")
    run.wait_for("flow WAITING")
    run.kill()

    at_kill = run.stored()
    assert at_kill.state == states.WAITING
    assert {ad.name: ad.state for ad in at_kill} == {"a": "SUCCESS", "nap": "WAITING", "b": "PENDING"}
    wait = at_kill.find_by_name("nap").meta["wait"]
    until = wait["until"]
    assert until == pytest.approx(wait["started"] + NAP_SECONDS)
    assert at_kill.meta["wake"] == {"due": until, "signals": []}

    run.resume(run.killed_at + RESUME_AFTER_KILL)
    resumed_at = float(_resumed_events(run)[0].split()[1])
    done = run.stored()
    assert done.state == states.SUCCESS, run.detail()
    b_started = done.find_by_name("b").results["started"]
    # At the deadline written before the crash (never before it), and before a whole
    # timer from the resume, which is the earliest a restarted wait would end.
    timings = "b started %.3f s after the deadline, %.3f s after the resume began" % (
        b_started - until,
        b_started - resumed_at,
    )
    assert 0.0 <= b_started - until, timings
    assert b_started - max(until, resumed_at) <= LATE, timings
    assert b_started < resumed_at + NAP_SECONDS, timings
    assert done.find_by_name("nap").meta["wait"] == wait  # not started over
    assert (executions(run.workdir, "a"), executions(run.workdir, "b")) == (1, 1)
    assert _resumed_events(run)[-1] == "finished SUCCESS"


def test_a_retry_backoff_ends_at_its_original_due_time_after_a_sigkill(crash_run: Run) -> None:
    run = crash_run
    run.start("backoff")
    run.wait_for("flow WAITING")
    run.kill()

    at_kill = run.stored()
    assert at_kill.state == states.WAITING
    call = at_kill.find_by_name("call")
    assert call.state == states.WAITING
    wait = call.meta["wait"]
    due = wait["until"]
    assert due == pytest.approx(call.meta["attempts"][0]["ended"] + NAP_SECONDS)
    assert at_kill.meta["wake"] == {"due": due, "signals": []}

    run.resume(run.killed_at + RESUME_AFTER_KILL)
    resumed_at = float(_resumed_events(run)[0].split()[1])
    done = run.stored()
    assert done.state == states.SUCCESS, run.detail()
    started = done.find_by_name("call").results["started"]
    timings = "the second attempt started %.3f s after its due time, %.3f s after the resume began" % (
        started - due,
        started - resumed_at,
    )
    assert 0.0 <= started - due, timings
    assert started - max(due, resumed_at) <= LATE, timings
    assert started < resumed_at + NAP_SECONDS, timings
    assert (executions(run.workdir, "a"), executions(run.workdir, "call")) == (1, 2)
    assert done.find_by_name("call").meta["errors"] == 0


# -- signals -----------------------------------------------------------------------------


def test_a_signal_sent_while_no_process_runs_the_waiting_flow_ends_its_wait(crash_run: Run) -> None:
    run = crash_run
    run.start("signal")
    run.wait_for("flow WAITING")
    run.kill()

    at_kill = run.stored()
    assert at_kill.state == states.WAITING
    assert at_kill.find_by_name(SIGNAL).state == states.WAITING
    assert at_kill.meta["wake"] == {"due": None, "signals": [SIGNAL]}
    with fetch(run.backend_conf) as backend:
        assert signals.send(backend, run.fd_uuid, SIGNAL, {"by": "ann", "amount": 42}) is True

    run.resume(time.time())
    done = run.stored()
    assert done.state == states.SUCCESS, run.detail()
    assert done.find_by_name(SIGNAL).results == {"by": "ann", "amount": 42}
    assert done.find_by_name("b").results["got"] == {"by": "ann", "amount": 42}
    assert (executions(run.workdir, "a"), executions(run.workdir, "b")) == (1, 1)


def test_a_signal_sent_before_the_flow_reaches_its_wait_is_kept_across_a_sigkill(crash_run: Run) -> None:
    run = crash_run
    run.start("signal-early")
    wait_until(lambda: (run.workdir / "gate.ready").exists(), "the gate task to hold the flow", detail=run.detail)
    run.kill()

    at_kill = run.stored()
    assert {ad.name: ad.state for ad in at_kill} == {
        "a": "SUCCESS",
        "gate": "RUNNING",
        SIGNAL: "PENDING",
        "b": "PENDING",
    }
    with fetch(run.backend_conf) as backend:
        assert signals.send(backend, run.fd_uuid, SIGNAL, "yes") is True

    run.resume(time.time())
    done = run.stored()
    assert done.state == states.SUCCESS, run.detail()
    assert done.find_by_name("b").results["got"] == "yes"
    # The signal was there when the wait began: the flow never waited.
    assert "flow WAITING" not in _resumed_events(run)
    # The gate was in flight at the kill, so it ran again; nothing else did.
    assert [executions(run.workdir, name) for name in ("a", "gate", "b")] == [1, 2, 1]


# -- idempotency keys --------------------------------------------------------------------


def test_an_attempt_keeps_its_idempotency_key_across_a_crash_and_a_retry_gets_a_new_one(
    crash_run: Run, engine_options: dict[str, Any]
) -> None:
    run = crash_run
    run.start("key")
    # The task ends its engine process: os._exit(1) where it runs in that process,
    # SIGKILL from the Dask worker it runs on in the distributed mode.
    run.ended_itself(-signal.SIGKILL if engine_options["engine"] == "distributed" else 1)
    assert run.stored().find_by_name("charge").state == states.RUNNING

    run.resume(time.time())
    done = run.stored()
    assert done.state == states.SUCCESS, run.detail()
    crashed, resumed, retried = read_keys(run.workdir)
    assert resumed == crashed  # the same attempt, run again after the crash
    assert retried != crashed  # the retry controller's new attempt
    assert done.find_by_name("charge").results == retried
    assert executions(run.workdir, "a") == 1
