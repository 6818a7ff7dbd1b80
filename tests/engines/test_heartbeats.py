"""Task heartbeats: ``self.heartbeat(details)`` and ``Task(heartbeat_timeout=...)``.

An attempt that stops heartbeating is failed with ``HeartbeatTimeout`` once its timeout
passed on the engine's clock (a virtual one here), and retried per its retry policy; the
last details it sent are stored in its atom detail and reach the next attempt and the
revert (``self.context.heartbeat_details``).  The tasks coordinate with the test through
files, so they behave the same in a worker thread, a worker process or on a Dask worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import flowkit
import flowkit.engines
from flowkit import exceptions, states
from flowkit.patterns import linear_flow
from flowkit.task import Task
from flowkit.testing.clock import VirtualClock
from flowkit.types.heartbeat import HEARTBEAT_KEY, HEARTBEAT_POLL
from tests.support import wait_until

TIMEOUT = 30.0  # seconds of virtual time


class Staged(Task):
    """Reserves, then hangs (until ``release`` exists) unless an earlier attempt got that far."""

    def __init__(self, name: str, folder: str, **options: Any) -> None:
        super().__init__(name=name, provides="outcome", **options)
        self.folder = folder

    def execute(self) -> str:
        seen = self.context.heartbeat_details  # type: ignore[union-attr]
        if seen is not None:
            return "configured after %s" % (seen["stage"],)
        self.heartbeat({"stage": "reserved"})
        release = os.path.join(self.folder, "release")
        while not os.path.exists(release):  # hung, as far as the engine can tell
            time.sleep(0.01)
        return "the abandoned attempt"

    def revert(self, **kwargs: Any) -> None:
        with open(os.path.join(self.folder, "reverted"), "w") as handle:
            handle.write(repr(self.context.heartbeat_details))  # type: ignore[union-attr]


class Steady(Task):
    """Works for ``seconds`` of real time, heartbeating every 10 ms."""

    def __init__(self, name: str, seconds: float, **options: Any) -> None:
        super().__init__(name=name, provides="outcome", **options)
        self.seconds = seconds

    def execute(self) -> int:
        beats = 0
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            beats += 1
            self.heartbeat({"beats": beats})
            time.sleep(0.01)
        return beats


class Runner:
    """Runs an engine in a thread; ``join()`` gives back what ``run()`` raised (or None)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.raised: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.engine.run()
        except BaseException as error:
            self.raised = error

    def join(self) -> BaseException | None:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the run did not end"
        return self.raised


def stored_heartbeat(engine: Any, name: str) -> Any:
    for detail in engine.flow_detail:
        if detail.name == name:
            return detail.meta.get(HEARTBEAT_KEY)
    return None  # not prepared yet


def hang_until_stored(engine: Any, clock: VirtualClock) -> None:
    """Wait until the first attempt's details are stored, then let its timeout pass."""
    wait_until(lambda: stored_heartbeat(engine, "staged") is not None, "the heartbeat details to be stored", timeout=60)
    assert stored_heartbeat(engine, "staged")["details"] == {"stage": "reserved"}
    clock.advance(TIMEOUT + 1)


@pytest.fixture
def folder(tmp_path: Path) -> Any:
    yield str(tmp_path)
    (tmp_path / "release").touch()  # frees a worker still inside an abandoned attempt


def test_a_task_that_stops_heartbeating_is_failed_and_retried_with_its_details(load: Any, folder: str) -> None:
    clock = VirtualClock()
    policy = flowkit.RetryPolicy(max_attempts=2, initial_delay=0.0)
    flow = linear_flow.Flow("staged").add(Staged("staged", folder, heartbeat_timeout=TIMEOUT, retry_policy=policy))
    engine = load(flow, clock=clock)
    runner = Runner(engine)
    hang_until_stored(engine, clock)
    assert runner.join() is None
    assert engine.storage.fetch("outcome") == "configured after reserved"
    detail = next(d for d in engine.flow_detail if d.name == "staged")
    [failed] = detail.meta["attempts"]
    assert failed["failure"]["exc_type_names"][0].endswith("HeartbeatTimeout")
    assert "sent no heartbeat for 31 seconds" in failed["failure"]["exception_str"]


def test_without_a_retry_the_flow_reverts_and_the_revert_sees_the_details(load: Any, folder: str) -> None:
    clock = VirtualClock()
    flow = linear_flow.Flow("staged").add(Staged("staged", folder, heartbeat_timeout=TIMEOUT))
    engine = load(flow, clock=clock)
    runner = Runner(engine)
    hang_until_stored(engine, clock)
    raised = runner.join()
    assert isinstance(raised, exceptions.HeartbeatTimeout)
    assert "atom 'staged' of flow 'staged'" in str(raised)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert Path(folder, "reverted").read_text() == "{'stage': 'reserved'}"


@pytest.mark.slow
def test_a_task_that_keeps_heartbeating_is_not_failed(load: Any) -> None:
    # Real time: the task runs three times as long as its timeout, beating all along.
    flow = linear_flow.Flow("steady").add(Steady("steady", 1.5, heartbeat_timeout=0.5))
    engine = load(flow)
    engine.run()
    beats = engine.storage.fetch("outcome")
    assert beats > 10
    stored = next(d for d in engine.flow_detail if d.name == "steady").meta[HEARTBEAT_KEY]
    assert stored["details"] == {"beats": beats}  # the last details, stored when the attempt ended


@pytest.mark.modes("serial", "parallel")
def test_the_late_result_of_an_abandoned_attempt_is_ignored_and_logged(
    load: Any, folder: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = VirtualClock()
    policy = flowkit.RetryPolicy(max_attempts=2, initial_delay=0.0)
    flow = linear_flow.Flow("staged").add(Staged("staged", folder, heartbeat_timeout=TIMEOUT, retry_policy=policy))
    engine = load(flow, clock=clock)
    runner = Runner(engine)
    with caplog.at_level(logging.WARNING, logger="flowkit.engines._heartbeats"):
        hang_until_stored(engine, clock)
        assert runner.join() is None
        Path(folder, "release").touch()
        wait_until(lambda: "its outcome is ignored" in caplog.text, "the late result to be logged", timeout=10)
    assert engine.storage.fetch("outcome") == "configured after reserved"
    assert engine.storage.get_atom_state("staged") == states.SUCCESS


def test_a_process_pool_attempt_that_stops_heartbeating_is_failed_and_retried(folder: str) -> None:
    clock = VirtualClock()
    policy = flowkit.RetryPolicy(max_attempts=2, initial_delay=0.0)
    flow = linear_flow.Flow("staged").add(Staged("staged", folder, heartbeat_timeout=TIMEOUT, retry_policy=policy))
    engine = flowkit.engines.load(flow, engine="parallel", executor="processes", max_workers=2, clock=clock)
    runner = Runner(engine)
    hang_until_stored(engine, clock)
    # The hung worker process is killed when the run ends (the run would otherwise wait for it).
    assert runner.join() is None
    assert engine.storage.fetch("outcome") == "configured after reserved"


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_a_heartbeat_timeout_that_is_not_positive_is_refused_naming_the_atom(bad: float) -> None:
    with pytest.raises(ValueError, match="atom 'reserve': heartbeat_timeout must be a positive"):
        Staged("reserve", "/nowhere", heartbeat_timeout=bad)
    with pytest.raises(TypeError, match="atom 'reserve': heartbeat_timeout must be seconds"):
        Staged("reserve", "/nowhere", heartbeat_timeout="10")  # type: ignore[arg-type]


def test_as_task_takes_a_heartbeat_timeout(run: Any) -> None:
    from flowkit.decorators import as_task
    from flowkit.task import current_context, heartbeat

    @as_task(provides="seen", heartbeat_timeout=60)
    def beat() -> Any:
        heartbeat({"at": "start"})
        context = current_context()
        assert context is not None
        return context.heartbeat_details

    assert beat().heartbeat_timeout == 60.0
    with pytest.raises(ValueError, match="atom 'beat2'"):
        beat("beat2", heartbeat_timeout=0)
    assert run(linear_flow.Flow("f").add(beat()))["seen"] is None  # a first attempt has no earlier details


class Counting(Task):
    """Heartbeats for ``seconds``, each beat with new details, as fast as it can; returns (beats, seconds taken)."""

    def __init__(self, name: str, seconds: float, **options: Any) -> None:
        super().__init__(name=name, provides="counted", **options)
        self.seconds = seconds

    def execute(self) -> list[float]:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < self.seconds:
            n += 1
            self.heartbeat({"n": n})
            if n % 100 == 0:
                time.sleep(0.001)
        return [n, time.monotonic() - start]


@pytest.mark.slow
def test_heartbeat_details_are_written_at_most_every_few_seconds(load: Any) -> None:
    from flowkit.persistence.backends.impl_memory import MemoryBackend, MemoryConnection
    from flowkit.types.heartbeat import SAVE_EVERY

    written: list[Any] = []

    class Recording(MemoryConnection):
        def update_atom_details(self, atom_detail: Any) -> Any:
            stored = atom_detail.meta.get(HEARTBEAT_KEY)
            if stored is not None and (not written or written[-1] != stored["details"]):
                written.append(stored["details"])
            return super().update_atom_details(atom_detail)

    class RecordingBackend(MemoryBackend):
        def get_connection(self) -> MemoryConnection:
            return Recording(self)

    # Six times the engine's look at the pulse (every HEARTBEAT_POLL seconds): a write per look would be 6.
    flow = linear_flow.Flow("counting").add(Counting("counting", 6 * HEARTBEAT_POLL, heartbeat_timeout=60))
    engine = load(flow, backend=RecordingBackend())
    engine.run()
    beats, took = engine.storage.fetch("counted")
    # The first details at once, then one write per 2 s at most (SAVE_EVERY, as documented), and
    # the last ones at the end.
    assert SAVE_EVERY == 2.0
    assert 1 <= len(written) <= 2 + int(took / 2.0), (written, took)
    assert written[-1] == {"n": beats}


@pytest.mark.modes("serial", "parallel")
def test_a_revert_that_stops_heartbeating_is_reported_not_failed(
    load: Any, folder: str, caplog: pytest.LogCaptureFixture
) -> None:
    class HungUndo(Task):
        def execute(self) -> None:
            raise RuntimeError("fails, so that it is reverted")

        def revert(self, **kwargs: Any) -> None:
            self.heartbeat({"undoing": True})
            while not os.path.exists(os.path.join(folder, "release")):
                time.sleep(0.01)

    clock = VirtualClock()
    engine = load(linear_flow.Flow("undo").add(HungUndo("undo", heartbeat_timeout=TIMEOUT)), clock=clock)
    runner = Runner(engine)
    with caplog.at_level(logging.WARNING, logger="flowkit.engines._scheduler"):
        wait_until(lambda: stored_heartbeat(engine, "undo") is not None, "the revert's details", timeout=60)
        clock.advance(TIMEOUT + 1)
        wait_until(lambda: "its revert sent no heartbeat" in caplog.text, "the hung revert to be reported", timeout=10)
    assert engine.storage.get_atom_state("undo") == states.REVERTING  # not failed: it may still finish
    Path(folder, "release").touch()
    assert isinstance(runner.join(), RuntimeError)
    assert engine.storage.get_atom_state("undo") == states.REVERTED
