"""The Listener base: registration as a context manager, filtering, and a broken listener being disabled."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from flowkit import states
from flowkit.listeners import CaptureListener, Listener
from flowkit.patterns import linear_flow
from tests.support import Fail, Name


class Recorder(Listener):
    """Records (kind, state) of every event it is given."""

    def __init__(self, engine: Any, **kw: Any) -> None:
        super().__init__(engine, **kw)
        self.seen: list[tuple[str, str]] = []

    def on_flow_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self.seen.append(("flow", str(state)))

    def on_task_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self.seen.append(("task", str(state)))


class Broken(Listener):
    """Raises on the first task event it sees."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.calls = 0

    def on_task_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self.calls += 1
        raise RuntimeError("listener bug")


def two_tasks() -> Any:
    return linear_flow.Flow("f").add(Name(name="a"), Name(name="b"))


def test_context_manager_registers_and_deregisters(load: Any) -> None:
    engine = load(two_tasks())
    listener = Recorder(engine)
    with listener as entered:
        assert entered is listener
        assert listener.registered
        assert len(engine.notifier) == 1 and len(engine.atom_notifier) == 1
        engine.run()
    assert not listener.registered
    assert len(engine.notifier) == 0 and len(engine.atom_notifier) == 0
    assert ("task", "SUCCESS") in listener.seen and listener.seen[-1] == ("flow", "SUCCESS")


def test_deregistered_when_run_raises(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Fail(name="boom")))
    with pytest.raises(Exception, match="boom"), Recorder(engine):
        engine.run()
    assert len(engine.notifier) == 0 and len(engine.atom_notifier) == 0


def test_register_twice_and_deregister_twice_do_nothing(load: Any) -> None:
    engine = load(two_tasks())
    listener = Recorder(engine)
    listener.register()
    listener.register()
    assert len(engine.atom_notifier) == 1
    listener.deregister()
    listener.deregister()
    assert len(engine.atom_notifier) == 0
    engine.run()
    assert listener.seen == []


def test_listen_for_limits_the_states(load: Any) -> None:
    engine = load(two_tasks())
    with Recorder(engine, task_listen_for=[states.SUCCESS], flow_listen_for=[states.SUCCESS]) as listener:
        engine.run()
    assert listener.seen == [("task", "SUCCESS"), ("task", "SUCCESS"), ("flow", "SUCCESS")]


def test_a_raising_listener_is_logged_once_disabled_and_the_flow_succeeds(
    load: Any, caplog: pytest.LogCaptureFixture
) -> None:
    engine = load(two_tasks())
    caplog.set_level(logging.WARNING, logger="flowkit.listeners.base")
    with Broken(engine) as broken, CaptureListener(engine) as capture:
        engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert broken.disabled
    assert broken.calls == 1  # never called again after it raised
    # the other listener saw everything
    assert capture.values[-1] == "f.f SUCCESS"
    assert "b.t SUCCESS(b)" in capture.values
    records = [r for r in caplog.records if r.name == "flowkit.listeners.base"]
    assert len(records) == 1
    assert "disabled" in records[0].getMessage()
    assert records[0].exc_info is not None and "listener bug" in str(records[0].exc_info[1])


def test_a_disabled_listener_stays_disabled_on_the_next_run(load: Any) -> None:
    engine = load(two_tasks())
    broken = Broken(engine)
    with broken:
        engine.run()
    engine.reset()
    with broken:
        engine.run()
    assert broken.calls == 1
