"""Engine notifier, atom notifier and task progress events."""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit import states
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.task import EVENT_UPDATE_PROGRESS, Task, current_context
from flowkit.types.failure import Failure
from tests.support import BoomError, Capture, Const, Fail, FlowCapture, Name, Progress, Undoable


def test_flow_notifier_details(load: Any) -> None:
    flow = linear_flow.Flow("observed").add(Name(name="a"))
    engine = load(flow)
    flow_capture = FlowCapture(engine)
    engine.run()
    assert flow_capture.states[-1] == states.SUCCESS
    assert states.RUNNING in flow_capture.states
    for details in flow_capture.details:
        assert details["flow_name"] == "observed"
        assert details["flow_uuid"]
    assert len({details["flow_uuid"] for details in flow_capture.details}) == 1
    # each event's old_state is the state reported before it
    previous = [details["old_state"] for details in flow_capture.details[1:]]
    assert previous == flow_capture.states[:-1]


def test_flow_notifier_for_a_specific_state(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="a")))
    seen: list[Any] = []
    engine.notifier.register(states.SUCCESS, lambda state, details: seen.append(state))
    engine.run()
    assert seen == [states.SUCCESS]


def test_atom_notifier_star_sees_every_transition(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="a"), Name(name="b")))
    capture = Capture(engine)
    engine.run()
    assert capture.events == [
        ("a", states.RUNNING),
        ("a", states.SUCCESS),
        ("b", states.RUNNING),
        ("b", states.SUCCESS),
    ]


def test_atom_event_details(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", provides="x", inject={"value": 7})))
    capture = Capture(engine)
    engine.run()
    (running_state, running), (success_state, success) = capture.details
    assert running_state == states.RUNNING
    assert running["atom_name"] == "a"
    assert running["old_state"] == states.PENDING
    assert success_state == states.SUCCESS
    assert success["atom_name"] == "a"
    assert success["old_state"] == states.RUNNING
    assert success["result"] == 7


def test_failure_and_revert_event_details(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Undoable(name="a"), Fail(name="bad")))
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    by_event = {(d["atom_name"], s): d for s, d in capture.details}
    failure = by_event[("bad", states.FAILURE)]["result"]
    assert isinstance(failure, Failure)
    assert failure.check(BoomError) is BoomError
    assert by_event[("bad", states.FAILURE)]["old_state"] == states.RUNNING
    assert by_event[("a", states.REVERTING)]["old_state"] == states.SUCCESS
    assert by_event[("a", states.REVERTED)]["old_state"] == states.REVERTING
    # revert's return value is reported as the REVERTED result
    assert by_event[("a", states.REVERTED)]["result"]["result"] == "a"


def test_atom_notifier_for_a_specific_state(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="a"), Name(name="b")))
    seen: list[str] = []
    engine.atom_notifier.register(states.SUCCESS, lambda state, details: seen.append(details["atom_name"]))
    engine.run()
    assert seen == ["a", "b"]


def test_deregistered_callback_is_not_called(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="a")))
    seen: list[Any] = []

    def callback(state: Any, details: dict[str, Any]) -> None:
        seen.append(state)

    engine.atom_notifier.register("*", callback)
    engine.atom_notifier.deregister("*", callback)
    engine.run()
    assert seen == []


def test_a_failing_callback_does_not_break_the_flow(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", provides="x", inject={"value": 1})))

    def broken(state: Any, details: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    engine.atom_notifier.register("*", broken)
    engine.notifier.register("*", broken)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("x") == 1


# --- progress -----------------------------------------------------------------------------


def progress_task(steps: list[float]) -> Progress:
    return Progress(name="worker", inject={"steps": steps})


def test_task_progress_events_are_clamped(load: Any) -> None:
    task = progress_task([0.5, 1.7, -3, 0.25])
    seen: list[float] = []
    task.notifier.register(EVENT_UPDATE_PROGRESS, lambda event_type, details: seen.append(details["progress"]))
    engine = load(linear_flow.Flow("f").add(task))
    engine.run()
    reported = list(seen)
    # the engine may add its own 0.0 at start and 1.0 at the end (TaskFlow does)
    while reported and reported[0] == 0.0:
        reported.pop(0)
    assert reported[:4] == [0.5, 1.0, 0.0, 0.25]
    assert all(0.0 <= p <= 1.0 for p in seen)


def test_storage_keeps_task_progress(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(progress_task([0.3])))
    engine.compile()
    engine.prepare()
    assert engine.storage.get_task_progress("worker") == 0.0
    engine.run()
    # a task that succeeded is done
    assert engine.storage.get_task_progress("worker") == 1.0


def test_progress_events_are_delivered_to_the_engine_side_listener(load: Any) -> None:
    task = progress_task([0.1, 0.2, 0.3])
    seen: list[float] = []
    task.notifier.register(EVENT_UPDATE_PROGRESS, lambda event_type, details: seen.append(details["progress"]))
    engine = load(linear_flow.Flow("f").add(task))
    engine.run()
    assert [p for p in seen if p not in (0.0, 1.0)] == [0.1, 0.2, 0.3]


class WhereAmI(Task):
    """Return, from execute and from revert, what ``self.context`` says about the run."""

    def execute(self) -> dict[str, Any]:
        return self.where()

    def revert(self, **kwargs: Any) -> dict[str, Any]:
        return self.where()

    def where(self) -> dict[str, Any]:
        context = self.context
        assert context is not None, "no context inside a call"
        return {"atom_name": context.atom_name, "flow_uuid": context.flow_uuid}


class KeepsItsOwnContext(Task):
    """A task class that uses the name ``context`` for its own attribute."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.context = {"mine": True}

    def execute(self) -> Any:
        self.update_progress(0.5)
        return self.context


def test_execute_and_revert_read_the_task_context(load: Any) -> None:
    task = WhereAmI(name="where")
    engine = load(linear_flow.Flow("f").add(task, Fail(name="bad")))
    with pytest.raises(BoomError):
        engine.run()
    expected = {"atom_name": "where", "flow_uuid": engine.storage.flow_detail.uuid}
    assert engine.storage.get_revert_result("where") == expected
    assert task.context is None  # only while a call runs


class Introspective(Task):
    """Return what its context says, read three ways; keep a copy of the running context for later."""

    def __init__(self, name: str, kept: list[contextvars.Context] | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.kept = kept

    def execute(self, **kwargs: Any) -> dict[str, Any]:
        context = self.context
        assert context is not None
        assert current_context() is context, "self.context and current_context() are one context"
        if self.kept is not None:
            self.kept.append(contextvars.copy_context())
        return {"atom": context.atom_name, "flow": context.flow_uuid, "key": context.idempotency_key}


def test_every_atom_reads_its_own_context_and_one_that_never_asks_runs_the_same(load: Any) -> None:
    flow = linear_flow.Flow("f").add(
        Introspective("first", provides="one"),
        Name(name="silent"),
        Introspective("second", requires=["one"], provides="two"),
    )
    engine = load(flow)
    engine.run()
    fd = engine.storage.flow_detail
    for name in ("first", "second"):
        detail = fd.find_by_name(name)
        assert detail is not None
        assert engine.storage.get(name) == {"atom": name, "flow": fd.uuid, "key": detail.uuid + "-0"}
    assert current_context() is None  # the engine's thread, after the run


def test_a_context_copied_during_a_serial_call_still_names_its_atom_afterwards() -> None:
    kept: list[contextvars.Context] = []
    flow = linear_flow.Flow("f").add(Introspective("first", kept, provides="one"), Introspective("second", kept))
    engine = flowkit.engines.load(flow)
    engine.run()
    assert [copied.run(current_context).atom_name for copied in kept] == ["first", "second"]  # type: ignore[union-attr]
    assert kept[0].run(current_context) is kept[0].run(current_context), "made once"


def test_a_task_may_use_the_name_context_for_its_own_attribute(load: Any) -> None:
    task = KeepsItsOwnContext(name="own")
    seen: list[float] = []
    task.notifier.register(EVENT_UPDATE_PROGRESS, lambda event_type, details: seen.append(details["progress"]))
    engine = load(linear_flow.Flow("f").add(task))
    engine.run()
    assert engine.storage.get("own") == {"mine": True}
    assert 0.5 in seen


def test_progress_of_a_silent_task_is_complete_after_success(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Name(name="quiet")))
    engine.run()
    assert engine.storage.get_task_progress("quiet") == 1.0


def _child_options(engine_options: dict[str, Any]) -> dict[str, Any]:
    """The engine options as JSON data: a Dask client is passed by its scheduler's address."""
    options = {k: v for k, v in engine_options.items() if k != "client"}
    if "client" in engine_options:
        options["address"] = engine_options["client"].scheduler.address
    return options


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [0, 7, 19])
def test_a_process_killed_from_a_success_listener_has_that_success_in_its_logbook(
    tmp_path: Path, engine_options: dict[str, Any], kill_at: int
) -> None:
    from tests.engines import success_listener_child as child

    url = "sqlite:///%s" % (tmp_path / "logbook.db")
    env = dict(os.environ)
    roots = [str(Path(__file__).resolve().parents[2]), str(Path(flowkit.__file__).resolve().parents[1])]
    env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.engines.success_listener_child",
            url,
            json.dumps(_child_options(engine_options)),
            "20",
            "t%d" % kill_at,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    assert proc.returncode == child.KILL_EXIT, proc.stdout + proc.stderr
    fd_uuid = proc.stdout.split()[0]
    with fetch({"connection": url}).get_connection() as connection:
        found = connection.get_atom_states(fd_uuid)
    done = sorted(
        (name for name, (_uuid, state, _intention) in found.items() if state == states.SUCCESS),
        key=lambda n: int(n[1:]),
    )
    # Every atom up to the one whose listener ended the process is durable;
    # the next one may have been announced RUNNING, never more.
    assert done == ["t%d" % i for i in range(kill_at + 1)]
