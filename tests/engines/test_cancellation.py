"""A running task sees its flow being cancelled or suspended (``self.context.cancelled``).

A long task polls the token and stops within a second of ``engine.cancel()``, of
``engine.suspend()`` or of ``flowkit cancel UUID`` run by another process; a task that
then raises ``Cancelled`` is PENDING again (re-run on resume), not failed and reverted.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import flowkit.engines
from flowkit import cancellation, exceptions, states
from flowkit.patterns import linear_flow
from flowkit.task import Task
from tests.support import BoomError, Capture, Undoable, run_flowkit, wait_until

#: How soon a stopped task must have stopped, in seconds.
PROMPT = 1.0


class Long(Task):
    """Works in slices of 50 ms, ``rounds`` of them, unless its run is being stopped."""

    def __init__(self, name: str, rounds: int = 1200) -> None:
        super().__init__(name=name)
        self.rounds = rounds

    def execute(self) -> str:
        for _ in range(self.rounds):
            if self.context.cancelled.wait(0.05):  # type: ignore[union-attr]
                raise exceptions.Cancelled("%s stopped early" % (self.name,))
        return "done"

    def revert(self, **kwargs: Any) -> None:
        raise BoomError("an interrupted attempt must not be reverted")


class RaisesCancelled(Task):
    """Raises Cancelled although nothing was cancelled: an ordinary failure."""

    def execute(self) -> None:
        raise exceptions.Cancelled("not really")


def long_flow(long: Long | None = None) -> Any:
    return linear_flow.Flow("long").add(Undoable(name="first"), long or Long("long"), Undoable(name="last"))


class Driver:
    """Runs an engine in a thread; ``join()`` is how long after ``mark()`` the long task stopped.

    The task stopped when the engine heard back that it did (the atom went back to PENDING):
    the time a remote task's outcome takes to travel is counted, the reverts that follow are not.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.raised: BaseException | None = None
        self.ended = False
        self.marked_at: float | None = None
        self.stopped_at: float | None = None
        engine.atom_notifier.register(states.PENDING, self._on_pending)
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        wait_until(self._long_runs, "the long task to run", timeout=60)

    def _on_pending(self, state: Any, details: dict[str, Any]) -> None:
        if details["atom_name"] == "long" and details.get("old_state") == states.RUNNING:
            self.stopped_at = time.monotonic()

    def _long_runs(self) -> bool:
        if self.ended:
            raise AssertionError("the run ended before the long task ran: %r" % (self.raised,))
        return any(d.name == "long" and d.state == states.RUNNING for d in self.engine.flow_detail)

    def _run(self) -> None:
        try:
            self.engine.run()
        except BaseException as error:
            self.raised = error
        finally:
            self.ended = True

    def mark(self) -> None:
        self.marked_at = time.monotonic()

    def join(self) -> float:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the run did not stop"
        self.engine.atom_notifier.deregister(states.PENDING, self._on_pending)
        assert self.stopped_at is not None and self.marked_at is not None, "the long task did not stop early"
        return self.stopped_at - self.marked_at


def test_a_long_task_stops_within_a_second_of_cancel(load: Any) -> None:
    engine = load(long_flow())
    capture = Capture(engine)
    driver = Driver(engine)
    driver.mark()
    engine.cancel("stop the order")
    assert driver.join() < PROMPT
    assert isinstance(driver.raised, exceptions.Cancelled) and "stop the order" in str(driver.raised)
    assert engine.storage.get_flow_state() == states.REVERTED
    # The interrupted attempt is not a failure and is not reverted; what finished is.
    assert engine.storage.get_atom_state("long") == states.PENDING
    assert states.FAILURE not in capture.states_of("long") and states.REVERTING not in capture.states_of("long")
    assert engine.storage.get_atom_state("first") == states.REVERTED
    assert capture.executed("last") == 0


def test_suspend_sets_the_token_and_the_interrupted_task_runs_again_on_resume(load: Any) -> None:
    long = Long("long")
    engine = load(long_flow(long))
    capture = Capture(engine)
    driver = Driver(engine)
    driver.mark()
    engine.suspend()
    assert driver.join() < PROMPT
    assert driver.raised is None
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("long") == states.PENDING
    assert engine.storage.get_atom_state("first") == states.SUCCESS

    long.rounds = 1  # this time it finishes
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert capture.executed("first") == 1 and capture.executed("long") == 2
    assert engine.storage.get_atom_state("long") == states.SUCCESS


def test_flowkit_cancel_from_another_process_stops_a_running_flow(load: Any, tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "flows.db")
    engine = load(long_flow(), backend=url)
    uuid = engine.flow_detail.uuid
    driver = Driver(engine)
    sent = run_flowkit("cancel", uuid, "--reason", "customer withdrew", "--backend", url, cwd=tmp_path)
    driver.mark()
    assert sent.returncode == 0, sent.stderr
    assert "stop and revert" in sent.stdout
    # Nothing in this process was told: the engine found the request in the logbook.
    assert driver.join() < PROMPT
    assert isinstance(driver.raised, exceptions.Cancelled) and "customer withdrew" in str(driver.raised)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("long") == states.PENDING
    assert engine.storage.get_atom_state("first") == states.REVERTED
    assert engine.flow_detail.meta[cancellation.CANCEL_KEY]["seq"] == 1

    again = run_flowkit("cancel", uuid, "--backend", url, cwd=tmp_path)
    assert again.returncode == 1 and "has ended REVERTED" in again.stderr


def test_flowkit_cancel_no_revert_suspends_and_a_later_request_still_counts(load: Any, tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "flows.db")
    engine = load(long_flow(), backend=url)
    uuid = engine.flow_detail.uuid
    driver = Driver(engine)
    sent = run_flowkit("cancel", uuid, "--no-revert", "--backend", url, cwd=tmp_path)
    driver.mark()
    assert sent.returncode == 0, sent.stderr
    assert driver.join() < PROMPT
    assert driver.raised is None
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("long") == states.PENDING

    # The request was acted on once: resuming runs the flow on, and a second request stops it again.
    driver = Driver(engine)
    assert cancellation.request(engine.backend, uuid, reason="second thoughts") is True
    driver.mark()
    assert driver.join() < PROMPT
    assert isinstance(driver.raised, exceptions.Cancelled) and "second thoughts" in str(driver.raised)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.flow_detail.meta[cancellation.CANCEL_KEY]["seq"] == 2


def test_a_flow_not_running_is_cancelled_when_next_run(load: Any, tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "flows.db")
    flow = linear_flow.Flow("f").add(Undoable(name="a"), Undoable(name="b"), Undoable(name="c"))
    engine = load(flow, backend=url)

    def on_state(state: Any, details: dict[str, Any]) -> None:
        if state == states.RUNNING and details["atom_name"] == "b":
            engine.suspend()

    engine.atom_notifier.register("*", on_state)
    engine.run()
    engine.atom_notifier.deregister("*", on_state)
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert cancellation.request(engine.backend, engine.flow_detail.uuid, reason="too late") is True
    # A second request while the first waits changes nothing.
    assert cancellation.request(engine.backend, engine.flow_detail.uuid) is False

    capture = Capture(engine)
    with pytest.raises(exceptions.Cancelled, match="too late"):
        engine.run()
    assert capture.executed("c") == 0  # refused to start atoms
    assert [engine.storage.get_atom_state(n) for n in "abc"] == [states.REVERTED, states.REVERTED, states.PENDING]


def test_a_task_raising_cancelled_unasked_is_an_ordinary_failure(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Undoable(name="a"), RaisesCancelled(name="liar")))
    with pytest.raises(exceptions.Cancelled, match="not really"):
        engine.run()
    assert engine.storage.get_atom_state("liar") == states.REVERTED
    assert engine.storage.get_atom_state("a") == states.REVERTED


def test_a_task_in_a_process_pool_sees_the_cancel() -> None:
    engine = flowkit.engines.load(long_flow(), engine="parallel", executor="processes", max_workers=1)
    driver = Driver(engine)
    driver.mark()
    engine.cancel("stop")
    assert driver.join() < PROMPT
    assert isinstance(driver.raised, exceptions.Cancelled)
    assert engine.storage.get_atom_state("long") == states.PENDING
