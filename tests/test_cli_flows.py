"""``flowkit flows``, ``flowkit show`` (id prefixes, ``--traceback``, ``--json``) and ``flowkit recover``
against real SQLite logbooks; the interrupted runs are real processes killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit import states
from flowkit.cli import main
from flowkit.engines import load
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.task import Task
from tests.support import ROOT, wait_until
from tests.test_cli import make_flow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.fixture
def url(tmp_path: Path) -> str:
    return "sqlite:///%s" % (tmp_path / "flows.db",)


def killed_run(url: str, gate: Path) -> str:
    """Start a gated flow in a child, SIGKILL it inside the blocked task; return the flow detail uuid."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.cli_recover_child", url, str(gate)],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    try:
        uuid = child.stdout.readline().strip()
        assert child.stdout.readline().strip() == "blocked", child.stderr.read() if child.stderr else ""
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    return uuid


@pytest.fixture
def interrupted(url: str, tmp_path: Path) -> Iterator[str]:
    yield killed_run(url, tmp_path / "gate")


def _json_out(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_flows_lists_newest_first_with_filters(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    first = make_flow(url)
    second = make_flow(url, fail=True)
    third = make_flow(url, suspend_after="reserve")
    assert main(["flows", "--backend", url]) == 0
    header, *rows, summary = capsys.readouterr().out.splitlines()
    assert header.split() == ["FLOW", "DETAIL", "NAME", "STATE", "CREATED", "NOTE"]
    assert [row.split()[0] for row in rows] == [third, second, first]
    assert rows[0].split()[2] == states.SUSPENDED and rows[0].endswith("resume with: flowkit resume %s" % third)
    assert summary == "3 shown of 3 (REVERTED 1, SUCCESS 1, SUSPENDED 1)"

    assert main(["flows", "--backend", url, "--state", "success,reverted", "--limit", "1"]) == 0
    header, *rows, summary = capsys.readouterr().out.splitlines()
    assert [row.split()[0] for row in rows] == [second]
    assert summary.startswith("1 shown of 3")
    assert main(["flows", "--backend", url, "--name", "nothing-*"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "no flow details match the filters"
    assert main(["flows", "--backend", url, "--since", "2h", "--state", "SUCCESS"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == first


def test_flows_rejects_an_unknown_state_and_a_bad_since(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_flow(url)
    assert main(["flows", "--backend", url, "--state", "DONE"]) == 2
    assert "--state DONE: not a flow state" in capsys.readouterr().err
    assert main(["flows", "--backend", url, "--since", "yesterday"]) == 2
    assert "since must be a duration like 30m" in capsys.readouterr().err


def test_flows_json_has_the_documented_schema(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    done = make_flow(url)
    listing = _json_out(capsys, "flows", "--backend", url, "--json")
    assert set(listing) == {"flows", "counts", "total", "shown", "problems"}
    (flow,) = listing["flows"]
    assert set(flow) == {
        "uuid", "name", "state", "stored_state", "engine_alive", "logbook", "created", "updated", "factory", "wake",
    }  # fmt: skip
    assert flow["uuid"] == done and flow["state"] == states.SUCCESS and listing["counts"] == {"SUCCESS": 1}


def test_a_killed_run_is_listed_interrupted_with_how_to_resume_it(
    url: str, interrupted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["flows", "--backend", url, "--state", "INTERRUPTED"]) == 0
    _, row, _ = capsys.readouterr().out.splitlines()
    assert row.split()[:3] == [interrupted, "gated", "INTERRUPTED"]
    assert row.endswith("resume with: flowkit resume %s" % (interrupted,))
    assert main(["show", interrupted[:8], "--backend", url]) == 0
    out = capsys.readouterr().out
    assert "  state:   RUNNING  INTERRUPTED: no engine runs it (resume with: flowkit resume %s)" % interrupted in out


def test_show_takes_a_unique_prefix_and_refuses_an_ambiguous_one(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uuids = [make_flow(url) for _ in range(17)]
    assert main(["show", uuids[0][:13], "--backend", url]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "flow detail %s" % (uuids[0],)
    # 17 uuids, 16 hex digits: some two start with the same one.
    shared = next(c for c in "0123456789abcdef" if sum(u.startswith(c) for u in uuids) > 1)
    assert main(["show", shared, "--backend", url]) == 2
    assert "give more of it" in capsys.readouterr().err
    assert main(["show", "zzzz", "--backend", url]) == 2
    assert "no flow detail 'zzzz'" in capsys.readouterr().err


def test_show_traceback_prints_failures_whole(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    reverted = make_flow(url, fail=True)
    assert main(["show", reverted, "--backend", url]) == 0
    assert "--traceback' prints them whole" not in capsys.readouterr().out  # "card declined" fits its cell
    assert main(["show", reverted, "--backend", url, "--traceback"]) == 0
    out = capsys.readouterr().out
    assert "decline failed during execute:\n  builtins.RuntimeError: card declined\n" in out
    assert 'raise RuntimeError("card declined")' in out  # the traceback's source line


def test_show_json_has_the_documented_schema(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    reverted = make_flow(url, fail=True)
    view = _json_out(capsys, "show", reverted, "--backend", url, "--json")
    assert view["uuid"] == reverted and view["state"] == states.REVERTED
    assert [atom["name"] for atom in view["atoms"]] == ["reserve", "charge", "ship", "decline"]
    (failure,) = view["failures"]
    assert failure["atom"] == "decline" and failure["during"] == "execute"
    assert failure["message"] == "card declined" and 'raise RuntimeError("card declined")' in failure["traceback"]
    assert {"waits", "timeline", "duration"} <= set(view)


def _recover(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowkit", "--backend", url, "recover", "--import", "tests.cli_recover_child", *extra],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_recover_once_resumes_a_killed_run(url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    uuid = killed_run(url, gate)
    gate.touch()
    done = _recover(url, "--once")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "recovering flow 'gated' (%s) from RUNNING" % (uuid,),
        "  flow 'gated' (%s): SUCCESS" % (uuid,),
    ]
    with fetch(url) as backend, backend.get_connection() as conn:
        fd = conn.get_flow_details(uuid)
        assert fd.state == states.SUCCESS
        assert {ad.name: ad.results for ad in fd} == {"first": "first", "gate": "passed", "last": "last"}
    again = _recover(url, "--once")
    assert (again.returncode, again.stdout) == (0, "no interrupted flows\n")


@pytest.mark.slow
def test_recover_leaves_a_flow_an_engine_runs_alone(url: str, tmp_path: Path) -> None:
    uuid = killed_run(url, tmp_path / "gate")
    with fetch(url) as backend, backend.get_connection() as conn:
        lock = conn.lock_flow(conn.get_flow_details(uuid, lazy=True))  # a live engine, as far as anyone can tell
        try:
            done = _recover(url, "--once")
        finally:
            lock.release()
    assert (done.returncode, done.stdout) == (0, "no interrupted flows\n")


def test_recover_without_a_known_factory_says_so_and_exits_1(
    url: str, interrupted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # This process never imported tests.cli_recover_child: its factory is not registered here.
    assert main(["--backend", url, "recover", "--once"]) == 1
    out = capsys.readouterr().out
    assert "recovering flow 'gated' (%s) from RUNNING" % (interrupted,) in out
    assert "cannot rebuild flow 'gated'" in out
    with fetch(url) as backend, backend.get_connection() as conn:
        assert conn.get_flow_details(interrupted, lazy=True).state == states.RUNNING  # untouched


@pytest.mark.slow
def test_recover_says_sigterm_in_its_log_and_stops(url: str) -> None:
    make_flow(url)
    child = subprocess.Popen(
        [sys.executable, "-m", "flowkit", "--backend", url, "recover", "--interval", "0.2"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    started = child.stdout.readline()  # written once its signal handlers are in place
    assert started.startswith("recover: looking for interrupted flows every 0.2s"), started
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.splitlines() == ["received SIGTERM: stopping"]


@pytest.mark.slow
def test_a_conductor_with_recover_resumes_flows_without_jobs_first(url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    uuid = killed_run(url, gate)
    gate.touch()
    where = ["--board", url, "--persistence", url, "--board-name", "cli"]
    run = [sys.executable, "-m", "flowkit", "conductor", "--name", "c1", "--recover", "--max-dispatches", "0"]
    done = subprocess.run(
        [*run, "--import", "tests.cli_recover_child", *where],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == [
        "recovering flow 'gated' (%s) from RUNNING" % (uuid,),
        "  flow 'gated' (%s): SUCCESS" % (uuid,),
        "conductor c1: 1 interrupted flow(s) without a job found and resumed",
    ]
    with fetch(url) as backend, backend.get_connection() as conn:
        assert conn.get_flow_details(uuid, lazy=True).state == states.SUCCESS


class _Lines:
    """The lines a child prints, read on a thread of their own so a test can wait for one with a deadline.

    As a context manager, a child still running at the end is killed.
    """

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self.child = child
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.communicate(timeout=60)

    def _read(self) -> None:
        assert self.child.stdout is not None
        for line in self.child.stdout:
            self.seen.append(line.rstrip("\n"))

    def wait_for(self, line: str) -> None:
        def printed() -> bool:
            if self.child.poll() is not None and not self._thread.is_alive():
                raise AssertionError("the child exited (%s):\n%s" % (self.child.returncode, "\n".join(self.seen)))
            return line in self.seen

        wait_until(printed, "the line %r" % (line,), detail=lambda: "\n".join(self.seen))

    def finish(self, timeout: float = 60) -> str:
        """Wait for the child to exit and for every line it printed to be read; its standard error."""
        self.child.wait(timeout=timeout)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the child's output did not end"
        assert self.child.stdout is not None and self.child.stderr is not None
        self.child.stdout.close()
        with self.child.stderr:
            return self.child.stderr.read()


def _recovering_conductor(url: str) -> _Lines:
    """A ``flowkit conductor --recover --recover-interval 0.2`` process on the SQL board ``cli`` of ``url``."""
    where = ["--board", url, "--persistence", url, "--board-name", "cli"]
    run = [sys.executable, "-m", "flowkit", "conductor", "--name", "c1", "--recover", "--recover-interval", "0.2"]
    child = subprocess.Popen(
        [*run, "--import", "tests.cli_recover_child", *where],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = _Lines(child)
    lines.wait_for("conductor c1 working board 'cli' (pid %d)" % (child.pid,))
    return lines


@pytest.mark.slow
def test_a_conductor_with_a_recover_interval_resumes_a_flow_killed_while_it_runs_but_not_a_jobs_flow(
    url: str, tmp_path: Path
) -> None:
    from flowkit.jobs.backends.impl_sql import SQLJobBoard

    # Killed before the conductor starts, but its logbook belongs to a job (due tomorrow): the job's to resume.
    owned_gate = tmp_path / "owned-gate"
    owned = killed_run(url, owned_gate)
    owned_gate.touch()
    with fetch(url) as backend:
        with backend.get_connection() as conn:
            (book,) = [b for b in conn.get_logbooks() if b.find(owned) is not None]
        with SQLJobBoard("cli", persistence=backend) as board:
            job = board.post("owned", book=book, delay=86400)
    with _recovering_conductor(url) as lines:
        assert lines.seen[0] == "conductor c1: 0 interrupted flow(s) without a job found and resumed"

        gate = tmp_path / "gate"
        uuid = killed_run(url, gate)  # SIGKILLed while the conductor runs
        gate.touch()
        lines.wait_for("  flow 'gated' (%s): SUCCESS" % (uuid,))
        lines.wait_for("conductor c1: 1 interrupted flow(s) without a job resumed")
        lines.child.send_signal(signal.SIGTERM)
        err = lines.finish()
    assert lines.child.returncode == 0, err
    assert "recovering flow 'gated' (%s) from RUNNING" % (uuid,) in lines.seen
    assert not any(owned in line for line in lines.seen), lines.seen
    with fetch(url) as backend, backend.get_connection() as conn:
        assert conn.get_flow_details(uuid, lazy=True).state == states.SUCCESS
        assert conn.get_flow_details(owned, lazy=True).state == states.RUNNING  # left to its job
        with SQLJobBoard("cli", persistence=backend) as board:
            assert board.state_of(job).value == "UNCLAIMED"


@pytest.mark.slow
def test_a_conductor_stopped_while_its_recover_loop_resumes_a_flow_suspends_that_flow(url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with _recovering_conductor(url) as lines:
        uuid = killed_run(url, gate)
        lines.wait_for("recovering flow 'gated' (%s) from RUNNING" % (uuid,))
        lines.wait_for("blocked")  # the gate task runs again, in the conductor
        lines.child.send_signal(signal.SIGTERM)
        lines.wait_for("conductor c1: suspending flow %s it was recovering" % (uuid,))
        gate.touch()  # the task ends; the engine stops at the next atom boundary
        err = lines.finish()
    assert lines.child.returncode == 0, err
    assert "  flow 'gated' (%s): SUSPENDED" % (uuid,) in lines.seen
    with fetch(url) as backend, backend.get_connection() as conn:
        fd = conn.get_flow_details(uuid)
        assert fd.state == states.SUSPENDED
        assert {ad.name: ad.state for ad in fd} == {"first": "SUCCESS", "gate": "SUCCESS", "last": "PENDING"}


def test_recover_interval_needs_recover_and_a_positive_number(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    conductor = ["conductor", "--board", url, "--persistence", url, "--max-dispatches", "0"]
    assert main([*conductor, "--recover-interval", "5"]) == 2
    assert capsys.readouterr().err == "flowkit: --recover-interval needs --recover\n"
    assert main([*conductor, "--recover", "--recover-interval", "0"]) == 2
    assert capsys.readouterr().err == "flowkit: --recover-interval must be positive, got 0.0\n"


@pytest.mark.slow
def test_sigterm_while_recovering_suspends_the_flow_it_runs(url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    uuid = killed_run(url, gate)
    child = subprocess.Popen(
        [sys.executable, "-m", "flowkit", "--backend", url, "recover", "--import", "tests.cli_recover_child"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    try:
        assert child.stdout.readline().startswith("recover: looking for interrupted flows")
        assert child.stdout.readline() == "recovering flow 'gated' (%s) from RUNNING\n" % (uuid,)
        assert child.stdout.readline() == "blocked\n"  # inside the gate task again
        child.send_signal(signal.SIGTERM)
        assert child.stdout.readline() == "received SIGTERM: suspending flow %s and stopping\n" % (uuid,)
    finally:
        gate.touch()  # the task ends; the engine stops at the next atom boundary
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.splitlines() == ["  flow 'gated' (%s): SUSPENDED" % (uuid,)]
    with fetch(url) as backend, backend.get_connection() as conn:
        fd = conn.get_flow_details(uuid)
        assert fd.state == states.SUSPENDED
        assert {ad.name: ad.state for ad in fd} == {"first": "SUCCESS", "gate": "SUCCESS", "last": "PENDING"}


class Verbose(Task):
    """Fail with a long message, as a driver error does."""

    def execute(self) -> None:
        raise RuntimeError("the payment gateway said: " + "x" * 200 + " (end of the message)")


def test_a_cut_failure_says_how_to_see_it_whole(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with fetch(url) as backend:
        engine = load(linear_flow.Flow("verbose").add(Verbose(name="pay")), backend=backend)
        with pytest.raises(RuntimeError):
            engine.run()
        uuid = engine.storage.flow_detail.uuid
    assert main(["show", uuid[:8], "--backend", url]) == 0
    out = capsys.readouterr().out
    assert "(end of the message)" not in out
    assert out.endswith("(failures are cut: 'flowkit show %s --traceback' prints them whole)\n" % (uuid,))
    assert main(["show", uuid[:8], "--backend", url, "--traceback"]) == 0
    assert "x" * 200 + " (end of the message)\n" in capsys.readouterr().out
