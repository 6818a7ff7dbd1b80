"""A thread pool is handed more atoms than it has workers: those beyond its free workers wait in
its queue, announced RUNNING only once a worker starts them; one the run no longer wants by then
is not started, and is as it was."""

from __future__ import annotations

import threading
from typing import Any

import flowkit.engines
from flowkit import states
from flowkit.engines.executors import ThreadExecutor
from flowkit.patterns import unordered_flow
from flowkit.task import Task

ENGINE: list[Any] = []
RAN: list[str] = []
_lock = threading.Lock()


class SuspendTheFirstRun(Task):
    """Record that it ran; the first of them to run suspends the engine running it."""

    def execute(self) -> str:
        with _lock:
            RAN.append(self.name)
            first = len(RAN) == 1
        if first:
            ENGINE[0].suspend()
        return self.name


def test_a_thread_pool_is_handed_more_atoms_than_it_has_workers() -> None:
    executor = ThreadExecutor(max_workers=2)
    assert executor.workers == 2 and executor.max_in_flight == 32
    assert ThreadExecutor(max_workers=16).max_in_flight == 64


def test_atoms_queued_behind_a_suspend_do_not_start_are_never_announced_and_run_on_resume() -> None:
    RAN.clear()
    names = ["a%d" % i for i in range(10)]
    flow = unordered_flow.Flow("queued").add(*[SuspendTheFirstRun(name) for name in names])
    # One worker: every atom but the first submitted waits in the pool's queue, RUNNING in the logbook.
    engine = flowkit.engines.load(flow, engine="parallel", executor=ThreadExecutor(max_workers=1))
    ENGINE[:] = [engine]
    try:
        seen: list[tuple[str, str]] = []
        engine.atom_notifier.register("*", lambda state, details: seen.append((details["atom_name"], state)))
        engine.run()
        assert engine.storage.get_flow_state() == states.SUSPENDED
        (first,) = RAN  # the suspend came before the worker took up any other
        detail = engine.storage.flow_detail
        assert {ad.name: ad.state for ad in detail} == {
            name: states.SUCCESS if name == first else states.PENDING for name in names
        }
        # Listeners heard of the one that ran, and of nothing else: the others never started.
        assert seen == [(first, states.RUNNING), (first, states.SUCCESS)]

        engine.run()
        assert engine.storage.get_flow_state() == states.SUCCESS
        assert sorted(RAN) == sorted(names)  # each once
        # Each was heard RUNNING, then SUCCESS, once.
        for name in names:
            assert [s for atom, s in seen if atom == name] == [states.RUNNING, states.SUCCESS]
    finally:
        ENGINE.clear()
