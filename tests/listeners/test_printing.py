"""PrintingListener: one line per event on a stream."""

from __future__ import annotations

import io
from typing import Any

import pytest

from flowkit.listeners import PrintingListener
from flowkit.patterns import linear_flow
from tests.support import BoomError, Const, Fail


def test_prints_each_event(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", inject={"value": {"pin": 1234, "ok": True}})))
    out = io.StringIO()
    with PrintingListener(engine, stream=out, show_uuids=False, mask_keys={"pin"}):
        engine.run()
    assert out.getvalue().splitlines() == [
        "flow 'f': PENDING -> RUNNING",
        "task 'a': PENDING -> RUNNING",
        "task 'a': RUNNING -> SUCCESS, result: {'pin': '***', 'ok': True}",
        "flow 'f': RUNNING -> SUCCESS",
    ]


def test_default_stream_is_stdout_at_event_time(load: Any, capsys: pytest.CaptureFixture[str]) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", inject={"value": 1})))
    with PrintingListener(engine):
        engine.run()
    captured = capsys.readouterr()
    assert "task 'a' (" in captured.out and "RUNNING -> SUCCESS, result: 1" in captured.out
    assert captured.err == ""


def test_tracebacks_on_request(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Fail(name="b")))
    out = io.StringIO()
    with pytest.raises(BoomError), PrintingListener(engine, stream=out, show_tracebacks=True, show_uuids=False):
        engine.run()
    text = out.getvalue()
    assert "task 'b': RUNNING -> FAILURE, failure: BoomError: b\nTraceback (most recent call last):" in text
