"""Timer atoms in every engine mode: parked in the logbook, never in a pool worker.

Time is a :class:`VirtualClock`: an hour passes when a test says so.
"""

from __future__ import annotations

import datetime
import math
import threading
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit import exceptions as exc
from flowkit import signals, states
from flowkit.patterns import linear_flow, unordered_flow
from flowkit.persistence.backends.impl_memory import MemoryBackend
from flowkit.retry import Times
from flowkit.testing.clock import VirtualClock
from flowkit.waits import Sleep, WaitFor
from tests.support import Capture, Const, Double, FailUntil, Name, Undoable, run_flowkit, wait_until


def nap_between(seconds: float = 3600) -> Any:
    return linear_flow.Flow("nap").add(
        Const(name="a", provides="x", inject={"value": 2}),
        Sleep("nap", seconds=seconds),
        Double(name="b", provides="y", rebind=["x"]),
    )


def stored(backend: MemoryBackend, engine: Any) -> Any:
    with backend.get_connection() as conn:
        return conn.get_flow_details(engine.flow_detail.uuid)


def test_a_timer_parks_the_flow_until_its_deadline(load: Any) -> None:
    clock = VirtualClock()
    backend = MemoryBackend()
    engine = load(nap_between(), backend=backend, clock=clock)
    started = clock.now()
    engine.run(park=True)
    fd = stored(backend, engine)
    assert fd.state == states.WAITING
    assert fd.meta["wake"] == {"due": started + 3600, "signals": []}
    assert {ad.name: ad.state for ad in fd} == {"a": "SUCCESS", "nap": "WAITING", "b": "PENDING"}
    assert fd.find_by_name("nap").meta["wait"]["until"] == started + 3600

    clock.advance(3599)
    engine.run(park=True)  # not due yet: nothing more runs
    assert engine.storage.get_atom_state("b") == states.PENDING
    assert stored(backend, engine).state == states.WAITING

    clock.advance(1)
    engine.run(park=True)
    assert stored(backend, engine).state == states.SUCCESS
    assert engine.storage.fetch_all() == {"x": 2, "y": 4}
    assert "wake" not in stored(backend, engine).meta


def test_a_resumed_timer_waits_only_for_what_is_left(load: Any) -> None:
    clock = VirtualClock()
    backend = MemoryBackend()
    first = load(nap_between(), backend=backend, clock=clock)
    first.run(park=True)
    clock.advance(1000)  # the process "died"; another resumes the flow later
    again = load(nap_between(), backend=backend, clock=clock, flow_detail=stored(backend, first))
    again.run(park=True)
    assert again.storage.get_atom_state("nap") == states.WAITING
    clock.advance(2599)
    again.run(park=True)
    assert again.storage.get_atom_state("b") == states.PENDING
    clock.advance(1)
    again.run(park=True)
    assert again.storage.get_flow_state() == states.SUCCESS


def test_run_blocks_only_the_callers_thread_and_wakes_when_the_clock_passes_the_deadline(load: Any) -> None:
    clock = VirtualClock()
    engine = load(nap_between(60), clock=clock)
    capture = Capture(engine)
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            engine.run()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    runner = threading.Thread(target=drive)
    runner.start()
    wait_until(lambda: engine.storage.get_flow_state() == states.WAITING, "the flow to wait", timeout=30)
    assert capture.executed("b") == 0
    clock.advance(59)
    assert runner.is_alive()
    clock.advance(1)
    runner.join(30)
    assert not runner.is_alive() and not errors
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert capture.states_of("nap") == [states.WAITING, states.SUCCESS]


def test_other_branches_run_while_a_timer_waits(load: Any) -> None:
    clock = VirtualClock()
    flow = unordered_flow.Flow("side").add(
        Sleep("nap", seconds=10),
        linear_flow.Flow("work").add(
            Const(name="c", provides="x", inject={"value": 3}), Double(name="d", rebind=["x"])
        ),
    )
    engine = load(flow, clock=clock)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.WAITING
    assert engine.storage.get_atom_state("d") == states.SUCCESS
    clock.advance(10)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.SUCCESS


def test_a_deadline_already_past_ends_the_timer_at_once(load: Any) -> None:
    clock = VirtualClock()
    past = datetime.datetime.fromtimestamp(clock.now() - 5, tz=datetime.timezone.utc)
    flow = linear_flow.Flow("late").add(Sleep("late", until=past), Name(name="after"))
    engine = load(flow, clock=clock)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.SUCCESS


def test_suspending_a_blocked_run_keeps_the_deadline(load: Any) -> None:
    clock = VirtualClock()
    backend = MemoryBackend()
    engine = load(nap_between(60), backend=backend, clock=clock)
    runner = threading.Thread(target=engine.run)
    runner.start()
    wait_until(lambda: engine.storage.get_flow_state() == states.WAITING, "the flow to wait", timeout=30)
    until = stored(backend, engine).find_by_name("nap").meta["wait"]["until"]
    engine.suspend()
    runner.join(30)
    assert not runner.is_alive()
    fd = stored(backend, engine)
    assert fd.state == states.SUSPENDED
    assert fd.find_by_name("nap").state == states.WAITING
    clock.advance(60)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert stored(backend, engine).find_by_name("nap").meta["wait"]["until"] == until


def test_cancelling_a_blocked_run_stops_the_wait_and_reverts(load: Any) -> None:
    clock = VirtualClock()
    engine = load(nap_between(60), clock=clock)
    outcome: list[BaseException] = []

    def drive() -> None:
        try:
            engine.run()
        except BaseException as error:
            outcome.append(error)

    runner = threading.Thread(target=drive)
    runner.start()
    wait_until(lambda: engine.storage.get_flow_state() == states.WAITING, "the flow to wait", timeout=30)
    engine.cancel("no longer needed")
    runner.join(30)
    assert not runner.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], exc.Cancelled)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("nap") in (states.PENDING, states.REVERTED)
    assert engine.storage.get_atom_state("b") == states.PENDING


def test_a_retried_scope_starts_its_timer_over(load: Any) -> None:
    clock = VirtualClock()
    flow = linear_flow.Flow("again", retry=Times(3, name="times", provides="attempt")).add(
        Sleep("pause", seconds=30), FailUntil(name="try", inject={"good": 2})
    )
    engine = load(flow, clock=clock)
    engine.run(park=True)
    first = engine.storage.flow_detail.find_by_name("pause").meta["wait"]["until"]
    clock.advance(30)
    engine.run(park=True)  # attempt 1 fails; the scope retries and its timer starts again
    assert engine.storage.get_flow_state() == states.WAITING
    second = engine.storage.flow_detail.find_by_name("pause").meta["wait"]["until"]
    assert second == first + 30
    clock.advance(30)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("attempt") == 2


class Key(flowkit.Task):
    """Return the task's idempotency key."""

    def execute(self) -> str:
        assert self.context is not None
        return self.context.idempotency_key


def test_the_idempotency_key_is_stable_per_attempt_and_changes_with_a_retry(load: Any) -> None:
    flow = linear_flow.Flow("keys", retry=Times(3, name="times", provides="attempt")).add(
        Key(name="key", provides="k"), FailUntil(name="try", inject={"good": 2})
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    keys = [result for (name, state), result in capture.results.items() if name == "key"]
    seen = [d["result"] for state, d in capture.details if d["atom_name"] == "key" and state == states.SUCCESS]
    uuid = engine.storage.flow_detail.find_by_name("key").uuid
    assert seen == ["%s-0" % uuid, "%s-1" % uuid]
    assert keys and len(seen[0]) <= 48
    # A run that finds the atom done does not change its key.
    assert engine.storage.fetch("k") == "%s-1" % uuid


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Sleep("s", seconds=-1), "finite number of seconds >= 0"),
        (lambda: Sleep("s", seconds=math.nan), "finite number of seconds >= 0"),
        (lambda: Sleep("s", seconds=math.inf), "finite number of seconds >= 0"),
        (lambda: Sleep("s"), "neither"),
        (lambda: Sleep("s", seconds=1, until=datetime.datetime.now(datetime.timezone.utc)), "both"),
        (lambda: Sleep("s", until=datetime.datetime(2030, 1, 1)), "naive datetime"),
        (lambda: Sleep("s", seconds="10"), "must be a number of seconds"),
        (lambda: WaitFor("w", timeout=-3), "finite number of seconds >= 0"),
        (lambda: WaitFor("w", signal=""), "signal name"),
    ],
)
def test_bad_waits_are_refused_where_they_are_written(build: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError)) as raised:
        build()
    assert message in str(raised.value)
    assert "'s'" in str(raised.value) or "'w'" in str(raised.value)


# -- signals ----------------------------------------------------------------------------


def approval(timeout: float | None = 60) -> Any:
    return linear_flow.Flow("approval").add(
        Undoable(name="order"),
        WaitFor("approve", signal="approved", timeout=timeout, provides="amount"),
        Double(name="charge", provides="charged", rebind=["amount"]),
    )


def test_a_signal_ends_the_wait_with_its_value(load: Any) -> None:
    clock = VirtualClock()
    backend = MemoryBackend()
    engine = load(approval(), backend=backend, clock=clock)
    engine.run(park=True)
    fd = stored(backend, engine)
    assert fd.state == states.WAITING
    assert fd.meta["wake"] == {"due": clock.now() + 60, "signals": ["approved"]}
    assert signals.send(backend, engine.flow_detail.uuid, "approved", 21) is True
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch_all() == {"amount": 21, "charged": 42}


def test_a_signal_sent_before_the_flow_waits_is_kept_for_it(load: Any) -> None:
    engine = load(approval(timeout=None), clock=VirtualClock())
    engine.prepare()
    engine.signal("approved", 5)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("charged") == 10


def test_a_blocked_run_wakes_at_once_for_a_signal_sent_in_this_process(load: Any) -> None:
    clock = VirtualClock()
    engine = load(approval(timeout=None), clock=clock)
    runner = threading.Thread(target=engine.run)
    runner.start()
    wait_until(lambda: engine.storage.get_flow_state() == states.WAITING, "the flow to wait", timeout=30)
    engine.signal("approved", 3)
    runner.join(30)  # no clock advance: the send itself woke the engine
    assert not runner.is_alive()
    assert engine.storage.fetch("charged") == 6


def test_a_signal_that_does_not_come_in_time_fails_the_atom_and_reverts(load: Any) -> None:
    clock = VirtualClock()
    engine = load(approval(timeout=60), clock=clock)
    capture = Capture(engine)
    engine.run(park=True)
    clock.advance(60)
    with pytest.raises(exc.WaitTimeout) as raised:
        engine.run(park=True)
    assert "'approve'" in str(raised.value) and "'approved'" in str(raised.value)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert capture.count("order", states.REVERTED) == 1
    assert engine.storage.get_atom_state("charge") == states.PENDING


def test_a_retry_controller_gives_a_timed_out_wait_another_chance(load: Any) -> None:
    clock = VirtualClock()
    flow = linear_flow.Flow("patient", retry=Times(2, name="times")).add(
        WaitFor("approve", signal="approved", timeout=10, provides="amount")
    )
    engine = load(flow, clock=clock)
    engine.run(park=True)
    clock.advance(10)
    engine.run(park=True)  # timed out once: the scope retries, the wait starts again
    assert engine.storage.get_flow_state() == states.WAITING
    engine.signal("approved", 1)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.SUCCESS


def test_a_blocked_run_sees_a_signal_sent_by_another_process(load: Any, tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "flows.db")
    engine = load(approval(timeout=None), backend=url)
    outcome: list[BaseException] = []

    def drive() -> None:
        try:
            engine.run()
        except BaseException as error:  # pragma: no cover - reported below
            outcome.append(error)

    runner = threading.Thread(target=drive)
    runner.start()
    wait_until(lambda: engine.storage.get_flow_state() == states.WAITING, "the flow to wait", timeout=30)
    sent = run_flowkit("signal", engine.flow_detail.uuid, "approved", "--value", "4", "--backend", url, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    # Nothing in this process was told: the waiting engine finds the signal by looking for it.
    runner.join(30)
    assert not runner.is_alive() and not outcome
    assert engine.storage.fetch("charged") == 8
    again = run_flowkit("signal", engine.flow_detail.uuid, "approved", "--value", "5", "--backend", url, cwd=tmp_path)
    assert again.returncode == 1 and "already" in again.stderr
