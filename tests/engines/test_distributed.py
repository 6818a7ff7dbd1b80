"""engine="distributed": what only a Dask cluster can show.

The behaviour suite runs whole in this mode (``FLOWKIT_ENGINE_MODE=distributed``); these
tests pick the mode themselves and cover what the matrix cannot: identical calls are never
merged, progress crosses the wire, a worker process killed mid-task, a scheduler that dies
mid-flow (the flow is SUSPENDED and resumes on another cluster from its SQLite logbook), and
the errors for a missing Dask, a task that does not pickle and conflicting options.

Tasks that must be caught mid-run block on files in a temporary directory, never on sleeps:
each writes ``started-<pid>-<uuid>`` when it begins and waits (with a deadline) for a
``release`` file the test creates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit
import flowkit.engines
from flowkit import exceptions, retry, states
from flowkit.patterns import linear_flow, unordered_flow
from flowkit.persistence.backends import fetch
from flowkit.task import EVENT_UPDATE_PROGRESS, Task
from tests.support import Capture, Name, Progress, Undoable, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0  # seconds; anything that takes this long is a hang


# -- tasks ------------------------------------------------------------------------------


class Blocker(Task):
    """Write ``started-<pid>-<uuid>`` in ``marker_dir``, wait for ``release`` there, return the pid."""

    def execute(self, marker_dir: str) -> int:
        pid = os.getpid()
        Path(marker_dir, "started-%d-%s" % (pid, uuid.uuid4().hex)).touch()
        release = Path(marker_dir, "release")
        wait_until(release.exists, "the test to release %s" % (self.name,), timeout=DEADLINE)
        return pid


class FailsOnce(Task):
    """Fail the first time (leaving a marker file), succeed on the identical second call."""

    def execute(self, marker_dir: str) -> str:
        marker = Path(marker_dir, "failed-once-" + self.name)
        if not marker.exists():
            marker.touch()
            raise RuntimeError("first call of " + self.name)
        return "second call"


class Token(Task):
    """Return a fresh random token: two runs of the same call give two tokens."""

    def execute(self) -> str:
        return uuid.uuid4().hex


class HoldsALock(Task):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lock = threading.Lock()

    def execute(self) -> None:
        return None


def token() -> str:
    return uuid.uuid4().hex


# -- helpers ----------------------------------------------------------------------------


def started(marker_dir: Path) -> list[int]:
    """The pids of the processes in which a Blocker started, one per start."""
    return [int(p.name.split("-")[1]) for p in marker_dir.glob("started-*")]


class Runner:
    """Run an engine in a thread and keep what ``run()`` raised."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.engine.run()
        except BaseException as error:
            self.error = error

    def join(self) -> BaseException | None:
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive(), "the engine hung"
        return self.error


@pytest.fixture(scope="module")
def distributed() -> Any:
    return pytest.importorskip("distributed", reason="the distributed engine mode needs Dask")


def _cluster(distributed: Any, **scheduler_kwargs: Any) -> Iterator[Any]:
    from flowkit.engines.distributed import local_cluster_options

    options = local_cluster_options(2)
    options["scheduler_kwargs"] = {**options["scheduler_kwargs"], **scheduler_kwargs}
    with distributed.LocalCluster(**options) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture
def own_client(distributed: Any) -> Iterator[Any]:
    """A cluster of its own (2 worker processes) for a test that kills one of its workers."""
    yield from _cluster(distributed)


@pytest.fixture
def fragile_client(distributed: Any) -> Iterator[Any]:
    """A cluster whose scheduler gives up on a task the first time its worker dies."""
    yield from _cluster(distributed, allowed_failures=0)


# -- no deduplication ----------------------------------------------------------------------


def test_identical_submissions_both_run(dask_client: Any) -> None:
    from flowkit.engines.distributed import DistributedExecutor

    executor = DistributedExecutor(client=dask_client)
    executor.start()
    try:
        first = executor.submit(token)
        second = executor.submit(token)
        assert first.result(DEADLINE) != second.result(DEADLINE)
    finally:
        executor.stop()
    assert dask_client.status == "running"  # a client given to flowkit is not closed by it


def test_a_retried_atom_runs_again_with_the_same_arguments(dask_client: Any, tmp_path: Path) -> None:
    flow = linear_flow.Flow("f", retry=retry.Times(2, name="again")).add(FailsOnce(name="flaky", provides="out"))
    engine = flowkit.engines.load(flow, store={"marker_dir": str(tmp_path)}, engine="distributed", client=dask_client)
    engine.run()
    assert engine.storage.fetch("out") == "second call"


def test_two_engines_on_one_cluster_never_share_a_result(dask_client: Any) -> None:
    # Same flow, same atom names, same attempt numbers: only the key's per-run token differs.
    results = [
        flowkit.engines.run(
            unordered_flow.Flow("u").add(Token(name="t", provides="tok")), client=dask_client, engine="distributed"
        )["tok"]
        for _ in range(2)
    ]
    assert results[0] != results[1]


# -- what crosses the wire ---------------------------------------------------------------


def test_progress_from_a_worker_reaches_the_task_notifier(dask_client: Any) -> None:
    task = Progress(name="p")
    seen: list[float] = []
    task.notifier.register(EVENT_UPDATE_PROGRESS, lambda event, details: seen.append(details["progress"]))
    engine = flowkit.engines.load(task, store={"steps": [0.25, 0.5]}, engine="distributed", client=dask_client)
    engine.run()
    assert seen == [0.0, 0.25, 0.5, 1.0]
    assert engine.storage.get_task_progress("p") == 1.0


def test_atoms_run_in_worker_processes(dask_client: Any) -> None:
    class Pid(Task):
        def execute(self) -> int:
            return os.getpid()

    workers = set(dask_client.run(os.getpid).values())
    results = flowkit.engines.run(
        unordered_flow.Flow("u").add(*(Pid(name="p%d" % i, provides="p%d" % i) for i in range(4))),
        engine="distributed",
        client=dask_client,
    )
    assert set(results.values()) <= workers
    assert os.getpid() not in results.values()


def test_a_local_cluster_is_started_for_the_run_when_given_nothing(distributed: Any) -> None:
    results = flowkit.engines.run(
        linear_flow.Flow("f").add(Name(name="a", provides="a"), Undoable(name="b", provides="b")),
        engine="distributed",
        max_workers=1,
    )
    assert results == {"a": "a", "b": "b"}


# -- errors ---------------------------------------------------------------------------------


def test_without_dask_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    with pytest.raises(ImportError, match=r"pip install flowkit\[distributed\]"):
        flowkit.engines.load(Name(name="a"), engine="distributed")


def test_an_atom_that_does_not_pickle_is_refused_before_anything_runs(dask_client: Any) -> None:
    flow = linear_flow.Flow("f").add(Name(name="fine"), HoldsALock(name="locked"))
    engine = flowkit.engines.load(flow, engine="distributed", client=dask_client)
    capture = Capture(engine)
    with pytest.raises(exceptions.AtomNotPicklable, match="'locked' cannot run on a Dask cluster"):
        engine.run()
    assert capture.events == []


def test_address_and_client_together_are_refused(dask_client: Any) -> None:
    with pytest.raises(ValueError, match="address= or client=, not both"):
        flowkit.engines.load(Name(name="a"), engine="distributed", client=dask_client, address="tcp://x:1")


def test_dask_options_belong_to_the_distributed_mode(dask_client: Any) -> None:
    with pytest.raises(ValueError, match="options of engine='distributed'"):
        flowkit.engines.load(Name(name="a"), engine="parallel", client=dask_client)


# -- a worker dies mid-task -------------------------------------------------------------------


def _kill_the_worker_running_it(client: Any, marker_dir: Path) -> int:
    """SIGKILL the worker process in which the (one) Blocker started; return its pid."""
    victim = wait_until(lambda: started(marker_dir), "the task to start")[0]
    assert victim in client.run(os.getpid).values()
    os.kill(victim, signal.SIGKILL)
    return victim


@pytest.mark.slow
def test_a_killed_worker_s_task_runs_again_on_another_worker(own_client: Any, tmp_path: Path) -> None:
    """Rule: Dask re-runs the task elsewhere (up to allowed-failures times); the atom succeeds."""
    flow = linear_flow.Flow("f").add(Blocker(name="victim", provides="pid"))
    engine = flowkit.engines.load(flow, store={"marker_dir": str(tmp_path)}, engine="distributed", client=own_client)
    capture = Capture(engine)
    runner = Runner(engine)
    victim = _kill_the_worker_running_it(own_client, tmp_path)
    wait_until(lambda: len(started(tmp_path)) >= 2, "the task to start again on another worker")
    (tmp_path / "release").touch()
    assert runner.join() is None
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("pid") != victim
    assert capture.executed("victim") == 1  # one atom execution; Dask ran its task twice


@pytest.mark.slow
def test_killed_worker_fails_the_atom_into_the_retry_path(fragile_client: Any, tmp_path: Path) -> None:
    """Rule: after allowed-failures (0 here) Dask raises KilledWorker: the atom fails, its retry runs it again."""
    flow = linear_flow.Flow("f", retry=retry.Times(2, name="again")).add(
        Undoable(name="before"), Blocker(name="victim", provides="pid")
    )
    engine = flowkit.engines.load(
        flow, store={"marker_dir": str(tmp_path)}, engine="distributed", client=fragile_client
    )
    capture = Capture(engine)
    runner = Runner(engine)
    victim = _kill_the_worker_running_it(fragile_client, tmp_path)
    (tmp_path / "release").touch()
    assert runner.join() is None
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("pid") != victim
    assert capture.states_of("victim") == [
        states.RUNNING, states.FAILURE, states.REVERTING, states.REVERTED, states.PENDING,
        states.RUNNING, states.SUCCESS,
    ]  # fmt: skip
    assert capture.count("before", states.REVERTED) == 1  # the retry reverted its whole subflow


@pytest.mark.slow
def test_killed_worker_without_a_retry_reverts_the_flow(fragile_client: Any, tmp_path: Path) -> None:
    flow = linear_flow.Flow("f").add(Undoable(name="before"), Blocker(name="victim"))
    engine = flowkit.engines.load(
        flow, store={"marker_dir": str(tmp_path)}, engine="distributed", client=fragile_client
    )
    runner = Runner(engine)
    _kill_the_worker_running_it(fragile_client, tmp_path)
    error = runner.join()
    assert isinstance(error, exceptions.ExecutionFailure)
    assert "'victim'" in str(error) and "KilledWorker" in str(error)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("before") == states.REVERTED


# -- the scheduler dies mid-flow ------------------------------------------------------------


class DaskProcesses:
    """A ``dask scheduler`` and a ``dask worker`` in child processes (their own sessions)."""

    def __init__(self, workdir: Path) -> None:
        self.scheduler_file = workdir / "scheduler.json"
        env = dict(os.environ)
        roots = [str(REPO_ROOT), str(Path(flowkit.__file__).resolve().parent.parent)]
        env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
        env.pop("PYTHONWARNINGS", None)
        self._log = open(workdir / "dask.log", "w")  # closed in close()
        common: dict[str, Any] = {
            "cwd": str(REPO_ROOT), "env": env, "stdout": self._log, "stderr": subprocess.STDOUT,
            "start_new_session": True,
        }  # fmt: skip
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--scheduler-file", str(self.scheduler_file),
             "--host", "127.0.0.1", "--port", "0", "--no-dashboard"],
            **common,
        )  # fmt: skip
        wait_until(self._address, "the scheduler to write its address")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", "--scheduler-file", str(self.scheduler_file),
             "--nworkers", "1", "--nthreads", "1", "--no-dashboard", "--death-timeout", "30"],
            **common,
        )  # fmt: skip

    def _address(self) -> str | None:
        try:
            return str(json.loads(self.scheduler_file.read_text())["address"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    @property
    def address(self) -> str:
        address = self._address()
        assert address is not None
        return address

    def kill_scheduler(self) -> None:
        os.killpg(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait(DEADLINE)

    def close(self) -> None:
        for proc in (self.worker, self.scheduler):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(DEADLINE)
        self._log.close()


@pytest.fixture
def dask_processes(distributed: Any, tmp_path: Path) -> Iterator[DaskProcesses]:
    processes = DaskProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


@pytest.mark.slow
def test_a_lost_scheduler_suspends_the_flow_and_another_cluster_resumes_it(
    dask_processes: DaskProcesses, dask_client: Any, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    db = "sqlite:///%s" % (tmp_path / "flows.db",)
    flow = linear_flow.Flow("f").add(
        Name(name="a", provides="a"), Blocker(name="b", provides="pid"), Name(name="c", provides="c")
    )
    engine = flowkit.engines.load(
        flow, store={"marker_dir": str(markers)}, engine="distributed", address=dask_processes.address, backend=db
    )
    capture = Capture(engine)
    runner = Runner(engine)
    wait_until(lambda: started(markers), "b to start on the worker")
    dask_processes.kill_scheduler()
    error = runner.join()
    assert isinstance(error, exceptions.ExecutorLost), error
    assert "lost the Dask scheduler" in str(error)
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("a") == states.SUCCESS
    assert engine.storage.get_atom_state("b") == states.RUNNING  # unknown whether it ran: it runs again
    assert capture.executed("c") == 0
    dask_processes.close()  # the old worker must not finish b behind the new cluster's back

    # Later, another process, another cluster: the same database and flow detail.
    (markers / "release").touch()
    with fetch(db) as backend:
        with backend.get_connection() as conn:
            detail = conn.get_flow_details(engine.flow_detail.uuid)
        resumed = flowkit.engines.load(
            flow, engine="distributed", client=dask_client, backend=backend, flow_detail=detail
        )
        capture = Capture(resumed)
        resumed.run()
        assert resumed.storage.get_flow_state() == states.SUCCESS
        assert (resumed.storage.fetch("a"), resumed.storage.fetch("c")) == ("a", "c")
    assert capture.executed("a") == 0
    assert capture.executed("b") == 1
    assert len(started(markers)) == 2
