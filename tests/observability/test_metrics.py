"""Prometheus metrics of engines and conductors, read from their registry and scraped over HTTP."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from flowkit import retry
from flowkit.conductors import JOB_LOST, fetch, post_flow
from flowkit.jobs.backends.impl_memory import MemoryJobBoard
from flowkit.metrics import FlowkitMetrics, disable_metrics, enable_metrics, serve_metrics
from flowkit.patterns import linear_flow
from flowkit.persistence.backends.impl_memory import MemoryBackend
from flowkit.testing.clock import VirtualClock
from flowkit.waits import Sleep, WaitFor
from tests.conductors import flows
from tests.conductors.conftest import ConductorProcess, Setup
from tests.conductors.test_conductor import DEADLINE, Events, FakeClock, lines
from tests.support import BoomError, Const, Fail, FailUntil, Undoable, wait_until


@pytest.fixture
def metrics() -> Iterator[FlowkitMetrics]:
    recorded = enable_metrics(CollectorRegistry())
    try:
        yield recorded
    finally:
        disable_metrics()


def value(metrics: FlowkitMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_atoms_and_runs_are_counted_by_state(load: Any, metrics: FlowkitMetrics) -> None:
    load(linear_flow.Flow("fine").add(Const(name="a", inject={"value": 1}), Const(name="b", inject={"value": 2}))).run()
    with pytest.raises(BoomError):
        load(linear_flow.Flow("doomed").add(Undoable(name="undo"), Fail(name="boom"))).run()

    assert value(metrics, "flowkit_atoms_started_total", kind="task") == 4
    assert value(metrics, "flowkit_atoms_finished_total", kind="task", state="SUCCESS") == 3
    assert value(metrics, "flowkit_atoms_finished_total", kind="task", state="FAILURE") == 1
    assert value(metrics, "flowkit_atoms_finished_total", kind="task", state="REVERTED") == 2
    assert value(metrics, "flowkit_flows_total", state="SUCCESS") == 1
    assert value(metrics, "flowkit_flows_total", state="REVERTED") == 1
    # One timed attempt per execution, none for the reverts.
    assert value(metrics, "flowkit_atom_attempt_seconds_count", kind="task", state="SUCCESS") == 3
    assert value(metrics, "flowkit_atom_attempt_seconds_count", kind="task", state="FAILURE") == 1
    assert value(metrics, "flowkit_atom_attempt_seconds_sum", kind="task", state="SUCCESS") >= 0.0


def test_each_retried_attempt_is_timed(load: Any, metrics: FlowkitMetrics) -> None:
    flow = linear_flow.Flow("retried", retry=retry.Times(3, name="times", provides="attempt")).add(
        FailUntil(name="flaky", inject={"good": 3})
    )
    load(flow).run()
    assert value(metrics, "flowkit_atom_attempt_seconds_count", kind="task", state="FAILURE") == 2
    assert value(metrics, "flowkit_atom_attempt_seconds_count", kind="task", state="SUCCESS") == 1
    assert value(metrics, "flowkit_atoms_started_total", kind="retry") == 3


def test_a_parked_flow_resumed_late_records_its_lag(load: Any, metrics: FlowkitMetrics) -> None:
    clock = VirtualClock(1_000.0)
    engine = load(linear_flow.Flow("nap").add(Sleep("nap", seconds=60)), clock=clock)
    engine.run(park=True)
    assert value(metrics, "flowkit_flows_total", state="WAITING") == 1
    clock.advance(60 + 7.5)
    engine.run(park=True)
    assert value(metrics, "flowkit_flows_total", state="SUCCESS") == 1
    assert value(metrics, "flowkit_wakeup_lag_seconds_count") == 1
    assert value(metrics, "flowkit_wakeup_lag_seconds_sum") == pytest.approx(7.5)
    assert value(metrics, "flowkit_wakeup_lag_seconds_bucket", le="5.0") == 0
    assert value(metrics, "flowkit_wakeup_lag_seconds_bucket", le="10.0") == 1


def test_a_parked_flow_woken_early_by_a_signal_records_no_lag(load: Any, metrics: FlowkitMetrics) -> None:
    clock = VirtualClock(1_000.0)
    engine = load(linear_flow.Flow("nap").add(WaitFor("approval", timeout=60)), clock=clock)
    engine.run(park=True)
    clock.advance(10)
    engine.signal("approval", "yes")
    engine.run(park=True)
    assert value(metrics, "flowkit_flows_total", state="SUCCESS") == 1
    assert value(metrics, "flowkit_wakeup_lag_seconds_count") == 0


def test_nothing_is_recorded_once_metrics_are_off(load: Any, metrics: FlowkitMetrics) -> None:
    disable_metrics()
    engine = load(linear_flow.Flow("quiet").add(Const(name="a", inject={"value": 1})))
    assert not engine.notifier.has_listeners and not engine.atom_notifier.has_listeners
    engine.run()
    assert value(metrics, "flowkit_atoms_started_total", kind="task") == 0


def test_the_metrics_endpoint_serves_them_over_http(run: Any, metrics: FlowkitMetrics) -> None:
    run(linear_flow.Flow("fine").add(Const(name="a", inject={"value": 1})))
    with serve_metrics(0, registry=metrics.registry) as server:
        assert server.host == "127.0.0.1"
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.status == 200
            text = response.read().decode("utf-8")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    (started,) = [s for s in families["flowkit_atoms_started"].samples if s.name == "flowkit_atoms_started_total"]
    assert started.labels == {"kind": "task"} and started.value == 1.0
    flows_ended = {s.labels["state"]: s.value for s in families["flowkit_flows"].samples if s.name.endswith("_total")}
    assert flows_ended == {"SUCCESS": 1.0}
    assert "flowkit_atom_attempt_seconds" in families and families["flowkit_atom_attempt_seconds"].type == "histogram"


def test_conductors_count_claims_parked_jobs_and_lost_leases(
    tmp_path: Path, metrics: FlowkitMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log.txt"
    # A parked job: claimed, run until its timer, given back to the board.
    clock = VirtualClock(1_700_000_000.0)
    board = MemoryJobBoard("parking", persistence=MemoryBackend(), clock=clock)
    post_flow(board, flows.napping, [clock.now() + 3600], store={"log": str(log), "job": "n"})
    fetch("blocking", "napper", board, engine_options={"clock": clock}).run(max_dispatches=1)
    assert value(metrics, "flowkit_job_claims_total", conductor="napper") == 1
    assert value(metrics, "flowkit_jobs_parked_total", conductor="napper") == 1
    assert value(metrics, "flowkit_parked_jobs", board="parking") == 1  # a gauge: read from the board
    clock.advance(3600)
    fetch("blocking", "napper", board, engine_options={"clock": clock}).run(max_dispatches=1)
    assert value(metrics, "flowkit_parked_jobs", board="parking") == 0
    assert value(metrics, "flowkit_jobs_parked_total", conductor="napper") == 1

    # A lost lease: the board's clock passes the claim's expiry while a task holds, another owner claims it.
    fake = FakeClock()
    held = MemoryJobBoard("leases", persistence=MemoryBackend(), clock=fake)
    monkeypatch.setenv(flows.HOLD_ENV, "1")
    release = tmp_path / "release"
    held_log = tmp_path / "held.txt"
    job = post_flow(held, flows.two_steps, store={"log": str(held_log), "job": "a", "release": str(release)})
    conductor = fetch("blocking", "holder", held, ttl=0.3)
    events = Events(conductor)
    thread = threading.Thread(target=conductor.run, kwargs={"max_dispatches": 1}, daemon=True)
    thread.start()
    wait_until(lambda: len(lines(held_log)) == 2, "the hold task to start")
    fake.now += 10.0
    thief = held.claim(job, "thief")
    release.touch()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    events.wait_for(JOB_LOST)
    assert value(metrics, "flowkit_job_claims_total", conductor="holder") == 1
    assert value(metrics, "flowkit_lease_losses_total", conductor="holder") == 1
    assert value(metrics, "flowkit_lease_losses_total", conductor="napper") == 0
    held.abandon(job, "thief", token=thief.token)


@pytest.mark.slow
def test_a_conductor_serves_its_metrics_on_the_port_it_is_given(
    tmp_path: Path, conductors: list[ConductorProcess]
) -> None:
    url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    setup = Setup("sqlite", url, url, "metrics", tmp_path)
    log = tmp_path / "log.txt"
    with setup.persistence() as persistence, setup.board(persistence) as board:
        job = post_flow(board, flows.one_line, store={"log": str(log), "job": "m"})
        # A job that waits a day: the conductor parks it, and the gauge reads it off the board.
        napping = post_flow(board, flows.napping, [time.time() + 86400], store={"log": str(log), "job": "n"})
    conductor = ConductorProcess(setup, "c1", ttl=30.0, extra=("--metrics-port", "0"))
    conductors.append(conductor)
    deadline = time.monotonic() + 60
    conductor.wait_for_line("metrics at http://127.0.0.1:", deadline)
    conductor.wait_for_line("job_consumed %s" % (job.uuid,), deadline)
    conductor.wait_for_line("job_parked %s" % (napping.uuid,), deadline)
    (served,) = [line.split()[-1] for line in conductor.lines() if line.startswith("metrics at ")]
    with urllib.request.urlopen(served, timeout=10) as response:
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.read().decode("utf-8"))
            for sample in family.samples
        }
    assert samples[("flowkit_job_claims_total", (("conductor", "c1"),))] == 2.0
    assert samples[("flowkit_jobs_parked_total", (("conductor", "c1"),))] == 1.0
    assert samples[("flowkit_parked_jobs", (("board", "metrics"),))] == 1.0
    assert samples[("flowkit_flows_total", (("state", "SUCCESS"),))] == 1.0
    assert samples[("flowkit_atoms_finished_total", (("kind", "task"), ("state", "SUCCESS")))] == 2.0  # and "before"
    assert conductor.terminate(DEADLINE) == 0
    # The port is released with the process: nothing answers there any more.
    with pytest.raises(OSError):
        urllib.request.urlopen(served, timeout=5)
