"""LoggingListener and DynamicLoggingListener: levels, masking, tracebacks."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flowkit.listeners import DynamicLoggingListener, LoggingListener
from flowkit.listeners.base import mask_values
from flowkit.patterns import linear_flow
from flowkit.task import Task
from tests.support import BoomError, Const, Fail


class Login(Task):
    """Return a nested result holding secrets."""

    def execute(self, user: str, password: str) -> dict[str, Any]:
        return {"user": user, "session": {"token": "t0ken-123", "scopes": ["r"]}, "attempts": [{"password": password}]}


LOGGER = "tests.listeners.flow"


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_logging_listener_logs_every_event_at_its_level(load: Any, caplog: pytest.LogCaptureFixture) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", inject={"value": 3})))
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with LoggingListener(engine, log=logging.getLogger(LOGGER), level=logging.INFO, show_uuids=False):
        engine.run()
    assert messages(caplog) == [
        (logging.INFO, "flow 'f': PENDING -> RUNNING"),
        (logging.INFO, "task 'a': PENDING -> RUNNING"),
        (logging.INFO, "task 'a': RUNNING -> SUCCESS, result: 3"),
        (logging.INFO, "flow 'f': RUNNING -> SUCCESS"),
    ]


def test_masked_keys_never_reach_the_log(load: Any, caplog: pytest.LogCaptureFixture) -> None:
    flow = linear_flow.Flow("login").add(Login(name="login"))
    engine = load(flow, store={"user": "ada", "password": "hunter2"})
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with LoggingListener(engine, log=logging.getLogger(LOGGER), mask_keys={"password", "token"}):
        engine.run()
    text = "\n".join(message for _, message in messages(caplog))
    assert "hunter2" not in text and "t0ken-123" not in text
    assert "inputs: {'user': 'ada', 'password': '***'}" in text
    assert "'session': {'token': '***', 'scopes': ['r']}" in text
    assert "'attempts': [{'password': '***'}]" in text
    # the stored result itself is untouched
    assert engine.storage.get("login")["session"]["token"] == "t0ken-123"


def test_mask_values_is_recursive_and_copies() -> None:
    value = {"a": 1, "secret": 2, "inner": ({"secret": 3},), "list": [{"b": {"secret": 4}}]}
    assert mask_values(value, {"secret"}) == {
        "a": 1,
        "secret": "***",
        "inner": ({"secret": "***"},),
        "list": [{"b": {"secret": "***"}}],
    }
    assert value["secret"] == 2
    assert mask_values("plain", {"secret"}) == "plain"


def test_dynamic_levels_and_traceback(load: Any, caplog: pytest.LogCaptureFixture) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", inject={"value": 1}), Fail(name="b")))
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with pytest.raises(BoomError), DynamicLoggingListener(engine, log=logging.getLogger(LOGGER), show_uuids=False):
        engine.run()
    logged = messages(caplog)
    by_text = {message.split("\n")[0]: level for level, message in logged}
    assert by_text["task 'a': RUNNING -> SUCCESS, result: 1"] == logging.DEBUG
    assert by_text["task 'b': RUNNING -> FAILURE, failure: BoomError: b"] == logging.WARNING
    assert by_text["task 'a': SUCCESS -> REVERTING"] == logging.INFO
    assert by_text["flow 'f': REVERTING -> REVERTED"] == logging.INFO
    failure_message = next(message for level, message in logged if level == logging.WARNING)
    assert "Traceback (most recent call last):" in failure_message
    assert "raise BoomError" in failure_message


def test_dynamic_listener_skips_work_below_the_logger_level(load: Any, caplog: pytest.LogCaptureFixture) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", inject={"value": 1})))
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with DynamicLoggingListener(engine, log=logging.getLogger(LOGGER)):
        engine.run()
    assert messages(caplog) == []


def test_records_carry_the_flow_the_atom_and_the_state_as_fields(load: Any, caplog: pytest.LogCaptureFixture) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", inject={"value": 3}), Fail(name="boom")))
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with DynamicLoggingListener(engine, log=logging.getLogger(LOGGER)), pytest.raises(BoomError):
        engine.run()
    fields = [
        (r.flow_uuid, r.flow_name, r.atom, r.atom_uuid, r.state, r.old_state)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == LOGGER
    ]
    uuid = engine.flow_detail.uuid
    a, boom = engine.flow_detail.find_by_name("a").uuid, engine.flow_detail.find_by_name("boom").uuid
    assert fields[:4] == [
        (uuid, "f", None, None, "RUNNING", "PENDING"),
        (uuid, "f", "a", a, "RUNNING", "PENDING"),
        (uuid, "f", "a", a, "SUCCESS", "RUNNING"),
        (uuid, "f", "boom", boom, "RUNNING", "PENDING"),
    ]
    failed = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert [(r.atom, r.state) for r in failed][:1] == [("boom", "FAILURE")]  # type: ignore[attr-defined]
    assert fields[-1] == (uuid, "f", None, None, "REVERTED", "REVERTING")
