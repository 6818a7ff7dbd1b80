"""``flowkit.start`` and ``flowkit.result``: one flow per key, its outcome from any handle or process.

What ran is read from the lines the tasks append to a file (``tests/starts_flows.py``), never
from the tasks themselves; waits are on the handle (with a virtual clock for timeouts) or
with deadlines.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit import exceptions as exc
from flowkit import states
from flowkit.persistence.backends import MemoryBackend, fetch
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.starts import NAMESPACE, FlowHandle, flow_uuid
from flowkit.testing.clock import VirtualClock
from tests import starts_flows as flows
from tests.persistence.conftest import POSTGRES_URL, drop_tables, server_url, unique_prefix
from tests.support import WAIT_TIMEOUT, wait_until

EXPECTED = {"first": "a:p", "last": "b:p", "x": "c", "y": "p", "prefix": "p"}


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh backend: in memory, or an SQLite file."""
    made = MemoryBackend() if request.param == "memory" else fetch("sqlite:///%s" % (tmp_path / "flows.db"))
    yield made
    made.close()


def _flow_details(backend: Backend) -> list[Any]:
    with backend.get_connection() as conn:
        return [fd for book in conn.get_logbooks() for fd in book]


def _key() -> str:
    return "order-%s" % (uuid.uuid4().hex[:8],)


# -- runs, in every engine mode ---------------------------------------------------------------


def test_same_key_twice_is_one_flow_and_one_run(
    backend: Backend, engine_options: dict[str, Any], tmp_path: Path
) -> None:
    log = str(tmp_path / "ran.txt")
    key = _key()
    store = {"log": log, "prefix": "p"}
    first = flowkit.start(flows.noted, key=key, backend=backend, factory_args=["one"], store=store, **engine_options)
    second = flowkit.start(flows.noted, key=key, backend=backend, factory_args=["one"], store=store, **engine_options)

    assert first.created and not second.created
    assert first.uuid == second.uuid == flow_uuid(key) == str(uuid.uuid5(NAMESPACE, key))
    assert first.key == second.key == key
    assert second.result(timeout=WAIT_TIMEOUT) == {**EXPECTED, "log": log}
    assert first.result(timeout=WAIT_TIMEOUT) == {**EXPECTED, "log": log}
    assert Counter(name for name, _pid in flows.executions(log)) == {"a": 1, "b": 1, "c": 1}
    # Starting it again once it has ended runs nothing either.
    third = flowkit.start(flows.noted, key=key, backend=backend, factory_args=["one"], store=store, **engine_options)
    assert not third.created and third.result(timeout=WAIT_TIMEOUT) == {**EXPECTED, "log": log}
    assert len(flows.executions(log)) == 3
    details = _flow_details(backend)
    assert [(fd.uuid, fd.name, fd.state) for fd in details] == [(first.uuid, "noted-one", states.SUCCESS)]


def test_result_from_a_new_handle_by_uuid_or_key(
    backend: Backend, engine_options: dict[str, Any], tmp_path: Path
) -> None:
    log = str(tmp_path / "ran.txt")
    key = _key()
    started = flowkit.start(
        flows.noted, key=key, backend=backend, factory_args=["two"], store={"log": log, "prefix": "p"}, **engine_options
    )
    expected = {**EXPECTED, "log": log}
    assert flowkit.result(backend, key, timeout=WAIT_TIMEOUT) == expected

    handle = FlowHandle(backend, started.uuid)
    assert handle.state() == states.SUCCESS and handle.done()
    assert handle.result() == expected and handle.key is None and not handle.created
    assert flowkit.result(backend, started.uuid) == expected
    # What the engine itself returns for the flow detail.
    eng = flowkit.engines.load_from_detail(_flow_details(backend)[0], backend=backend)
    assert eng.storage.fetch_all() == expected
    eng.close()


def test_a_builtin_failure_is_reraised_as_itself(
    backend: Backend, engine_options: dict[str, Any], tmp_path: Path
) -> None:
    log = str(tmp_path / "ran.txt")
    key = _key()
    handle = flowkit.start(
        flows.failing_builtin, key=key, backend=backend, store={"log": log, "prefix": "p"}, **engine_options
    )
    for outcome in (handle.result, lambda: flowkit.result(backend, key), FlowHandle(backend, handle.uuid).result):
        with pytest.raises(ValueError) as caught:
            outcome()
        assert type(caught.value) is ValueError and str(caught.value) == "bad value in bad"
        if not isinstance(backend, MemoryBackend):  # rebuilt from the file, with a note saying so
            note = caught.value.__notes__[0]
            assert "atom 'bad' of flow 'failing-builtin'" in note and 'raise ValueError("bad value in' in note
    assert handle.state() == states.REVERTED
    assert [name for name, _pid in flows.executions(log)] == ["a", "bad"]


def test_a_user_failure_is_reraised_wrapped_with_its_type_name(
    backend: Backend, engine_options: dict[str, Any], tmp_path: Path
) -> None:
    log = str(tmp_path / "ran.txt")
    key = _key()
    handle = flowkit.start(
        flows.failing_user, key=key, backend=backend, store={"log": log, "prefix": "p"}, **engine_options
    )
    if isinstance(backend, MemoryBackend):
        # It keeps the exception object, in this process: raised as itself, as engine.run() does.
        with pytest.raises(flows.Boom, match="the boom task fails"):
            handle.result(timeout=WAIT_TIMEOUT)
        return
    with pytest.raises(exc.WrappedFailure) as caught:
        handle.result(timeout=WAIT_TIMEOUT)
    [(atom, failure)] = caught.value.atom_failures()
    assert atom == "boom" and failure.exception is None
    assert failure.exception_type_name == "tests.starts_flows.Boom"
    assert failure.exception_str == "the boom task fails"
    assert caught.value.check(flows.Boom) and caught.value.flow_name == "failing"
    assert "raise Boom(" in failure.traceback_str
    assert handle.state() == states.REVERTED


def test_result_times_out_on_the_clock_and_then_returns(
    backend: Backend, engine_options: dict[str, Any], tmp_path: Path
) -> None:
    log = str(tmp_path / "ran.txt")
    release = tmp_path / "release"
    key = _key()
    store = {"log": log, "release": str(release), "prefix": "g"}
    handle = flowkit.start(flows.gated, key=key, backend=backend, store=store, **engine_options)
    wait_until(lambda: flows.executions(log), "the gate task to start")
    assert not handle.done() and handle.state() == states.RUNNING
    expected = r"flow 'gated' \(key '%s'\), flow detail %s, did not end within 0 seconds: it is RUNNING"
    with pytest.raises(TimeoutError, match=expected % (key, handle.uuid)):
        handle.result(timeout=0)

    clock = VirtualClock()
    outcome: queue.Queue[BaseException | dict[str, Any]] = queue.Queue()

    def wait_for_it() -> None:
        try:
            outcome.put(flowkit.result(backend, key, timeout=3600, clock=clock))
        except BaseException as error:  # handed to the test thread
            outcome.put(error)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    wait_until(lambda: clock.waiters == 1, "the result() call to wait on the clock")
    assert outcome.empty()
    clock.advance(3599)
    clock.advance(1)
    timed_out = outcome.get(timeout=WAIT_TIMEOUT)
    waiter.join(WAIT_TIMEOUT)
    assert isinstance(timed_out, TimeoutError) and "within 3600 seconds" in str(timed_out)
    assert clock.waiters == 0

    release.touch()
    assert handle.result(timeout=WAIT_TIMEOUT, clock=clock) == {**store, "after": "after:g"}
    assert handle.state() == states.SUCCESS


# -- starting: what is refused, checked once ------------------------------------------------


def test_a_key_started_with_another_factory_is_refused(backend: Backend, tmp_path: Path) -> None:
    log = str(tmp_path / "ran.txt")
    key = _key()
    first = flowkit.start(
        flows.noted, key=key, backend=backend, factory_args=["one"], store={"log": log, "prefix": "p"}
    )
    first.result(timeout=WAIT_TIMEOUT)
    with pytest.raises(exc.InvalidState) as caught:
        flowkit.start(flows.noted_other, key=key, backend=backend, factory_args=["one"], store={"log": log})
    message = str(caught.value)
    assert key in message and "tests.starts_flows:noted'" in message and "tests.starts_flows:noted_other" in message
    assert len(_flow_details(backend)) == 1 and len(flows.executions(log)) == 3


@pytest.mark.parametrize(
    ("key", "error", "match"),
    [
        ("", TypeError, "start key must be a non-empty str"),
        (42, TypeError, "start key must be a non-empty str"),
        ("k" * 256, exc.InvalidName, "too long: at most 255"),
        ("a\x00b", exc.InvalidName, "NUL"),
        ("\ud800", exc.InvalidName, "surrogate"),
    ],
)
def test_a_bad_key_is_refused_before_anything_is_written(
    backend: Backend, tmp_path: Path, key: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        flowkit.start(flows.noted, key=key, backend=backend, factory_args=["x"], store={"log": "x", "prefix": "p"})
    assert _flow_details(backend) == []


def test_a_255_character_key_is_fine(backend: Backend, tmp_path: Path) -> None:
    key = "k" * 255
    log = str(tmp_path / "ran.txt")
    handle = flowkit.start(flows.noted, key=key, backend=backend, factory_args=["x"], store={"log": log, "prefix": "p"})
    assert handle.result(timeout=WAIT_TIMEOUT)["first"] == "a:p"
    assert flowkit.result(backend, key) == handle.result()


def test_a_flow_that_cannot_run_records_nothing(backend: Backend, tmp_path: Path) -> None:
    key = _key()
    with pytest.raises(exc.MissingDependencies, match="prefix"):
        flowkit.start(flows.noted, key=key, backend=backend, factory_args=["x"], store={"log": "unused"})
    with pytest.raises(ValueError, match="store of start key .* must be JSON data"):
        flowkit.start(flows.noted, key=key, backend=backend, factory_args=["x"], store={"log": object()})
    with pytest.raises(ValueError, match="factory_args of 'tests.starts_flows:noted' must be JSON data"):
        flowkit.start(flows.noted, key=key, backend=backend, factory_args=[object()])
    with pytest.raises(ValueError, match="unknown engine"):
        flowkit.start(flows.noted, key=key, backend=backend, factory_args=["x"], engine="turbo")
    assert _flow_details(backend) == []
    with pytest.raises(exc.NotStarted):
        flowkit.result(backend, key)
    # The key is still free.
    log = str(tmp_path / "ran.txt")
    handle = flowkit.start(flows.noted, key=key, backend=backend, factory_args=["x"], store={"log": log, "prefix": "p"})
    assert handle.created and handle.result(timeout=WAIT_TIMEOUT)["last"] == "b:p"


def test_an_unknown_key_or_uuid_is_not_started(backend: Backend) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(exc.NotStarted, match="no flow started under key 'order-404'"):
        flowkit.result(backend, "order-404")
    with pytest.raises(exc.NotStarted, match="no flow detail with uuid '%s'" % missing):
        flowkit.result(backend, missing, timeout=0)
    with pytest.raises(exc.NotStarted, match=missing):
        FlowHandle(backend, missing).state()
    with pytest.raises(exc.NotStarted, match="key 'k'"):
        FlowHandle(backend, flow_uuid("k"), key="k").result(timeout=0)
    with pytest.raises(TypeError, match="non-empty str"):
        flowkit.result(backend, "")


def test_a_bad_timeout_is_refused(backend: Backend) -> None:
    handle = FlowHandle(backend, flow_uuid("k"), key="k")
    for bad in (-1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="timeout must be None or a finite number"):
            handle.result(timeout=bad)


# -- 8 processes start one key at the same moment ----------------------------------------------

RACERS = 8


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_conf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A backend conf every racing process opens for itself: an SQLite file, or PostgreSQL tables of its own."""
    if request.param == "sqlite":
        yield {"connection": "sqlite:///%s" % (tmp_path / "race.db")}
        return
    url = server_url(POSTGRES_URL, "PostgreSQL", "FLOWKIT_TEST_POSTGRES_URL")
    prefix = unique_prefix()
    yield {"connection": url, "table_prefix": prefix}
    drop_tables(url, prefix)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_racing_processes_start_one_flow_and_run_it_once(shared_conf: dict[str, Any], tmp_path: Path) -> None:
    # Spawned, not forked: each racer is a fresh interpreter with its own connections.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RACERS)
    out = ctx.Queue()
    log = str(tmp_path / "ran.txt")
    key = "race-%s" % (uuid.uuid4().hex[:8],)
    racers = [ctx.Process(target=flows.race_child, args=(shared_conf, key, log, barrier, out)) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    try:
        reports = [json.loads(out.get(timeout=120)) for _ in racers]
    finally:
        for racer in racers:
            racer.join(60)
            if racer.is_alive():
                racer.kill()
    assert [r for r in reports if "error" in r] == []
    assert all(racer.exitcode == 0 for racer in racers)

    creators = [r["pid"] for r in reports if r["created"]]
    assert len(creators) == 1, reports
    assert {r["uuid"] for r in reports} == {flow_uuid(key)}
    assert all(r["result"] == {**EXPECTED, "log": log} for r in reports)
    ran = flows.executions(log)
    assert sorted(name for name, _pid in ran) == ["a", "b", "c"]
    assert {pid for _name, pid in ran} == set(creators)
    with fetch(shared_conf) as backend:
        details = _flow_details(backend)
        assert [(fd.uuid, fd.state) for fd in details] == [(flow_uuid(key), states.SUCCESS)]
        assert flowkit.result(backend, key) == {**EXPECTED, "log": log}
    assert os.path.exists(log)


# -- flows the handle waits for, and flows it cannot finish ---------------------------------------


def test_a_waiting_flow_has_not_ended(backend: Backend) -> None:
    # Written as another process would leave it: parked on a timer, then finished.
    key = _key()
    fd = FlowDetail(name="parked", uuid=flow_uuid(key), state=states.WAITING)
    fd.meta["start"] = {"key": key, "provides": []}
    fd.meta["store"] = {"order": 42}
    book = LogBook(name=key)
    book.add(fd)
    with backend.get_connection() as conn:
        assert conn.create_logbook(book)
    handle = FlowHandle(backend, fd.uuid, key=key)
    with pytest.raises(TimeoutError, match="it is WAITING"):
        handle.result(timeout=0)
    assert not handle.done()

    outcome: queue.Queue[BaseException | dict[str, Any]] = queue.Queue()
    clock = VirtualClock()

    def wait_for_it() -> None:
        try:
            outcome.put(flowkit.result(backend, key, clock=clock))
        except BaseException as error:  # handed to the test thread
            outcome.put(error)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    wait_until(lambda: clock.waiters == 1, "the result() call to wait")
    clock.advance(86400)  # a day later, still WAITING: still waiting
    assert outcome.empty()
    fd.state = states.SUCCESS
    with backend.get_connection() as conn:
        conn.update_flow_state(fd)
        conn.flush()
    assert outcome.get(timeout=WAIT_TIMEOUT) == {"order": 42}
    waiter.join(WAIT_TIMEOUT)


def test_a_run_that_stops_before_the_flow_ends_is_reported(tmp_path: Path) -> None:
    backend = MemoryBackend()
    key = _key()
    # Another engine of this process holds the flow's lock, so the run cannot start.
    lock = backend.get_connection().lock_flow(FlowDetail(name="noted-x", uuid=flow_uuid(key)))
    try:
        handle = flowkit.start(
            flows.noted, key=key, backend=backend, factory_args=["x"], store={"log": str(tmp_path / "l"), "prefix": "p"}
        )
        with pytest.raises(exc.ExecutionFailure, match="stopped before the flow ended") as caught:
            handle.result(timeout=WAIT_TIMEOUT)
    finally:
        lock.release()
    assert isinstance(caught.value.__cause__, exc.FlowDetailLocked)
    assert "flowkit resume %s" % handle.uuid in str(caught.value) and "PENDING" in str(caught.value)
    assert flows.executions(str(tmp_path / "l")) == []


def test_result_of_a_flow_not_started_by_key(backend: Backend, engine_options: dict[str, Any], tmp_path: Path) -> None:
    log = str(tmp_path / "ran.txt")
    eng = flowkit.engines.load_from_factory(
        flows.noted, ["f"], store={"log": log, "prefix": "p"}, backend=backend, **engine_options
    )
    eng.run()
    # Who provides what is worked out from the flow, rebuilt from its factory record.
    assert flowkit.result(backend, eng.flow_detail.uuid) == eng.storage.fetch_all() == {**EXPECTED, "log": log}
    assert FlowHandle(backend, eng.flow_detail.uuid).key is None
    eng.close()
