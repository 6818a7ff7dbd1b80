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
    engine = object.__repr__(engine)  # "<flowkit.engines.engine.Engine object at 0x...>", as TaskFlow prints it
    assert out.getvalue().splitlines() == [
        "%s has moved flow 'f' into state 'RUNNING' from state 'PENDING'" % (engine,),
        "%s has moved task 'a' into state 'RUNNING' from state 'PENDING'" % (engine,),
        "%s has moved task 'a' into state 'SUCCESS' from state 'RUNNING'"
        " with result '{'pin': '***', 'ok': True}' (failure=False)" % (engine,),
        "%s has moved flow 'f' into state 'SUCCESS' from state 'RUNNING'" % (engine,),
    ]


def test_default_stream_is_stdout_at_event_time(load: Any, capsys: pytest.CaptureFixture[str]) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", inject={"value": 1})))
    with PrintingListener(engine):
        engine.run()
    captured = capsys.readouterr()
    uuid = engine.storage.flow_detail.find_by_name("a").uuid
    assert "has moved task 'a' (%s) into state 'SUCCESS' from state 'RUNNING' with result '1' (failure=False)" % (
        uuid,
    ) in captured.out
    assert captured.err == ""


def test_tracebacks_on_request(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Fail(name="b")))
    out = io.StringIO()
    with pytest.raises(BoomError), PrintingListener(engine, stream=out, show_uuids=False):
        engine.run()
    text = out.getvalue()
    assert (
        "has moved task 'b' into state 'FAILURE' from state 'RUNNING'"
        " with result 'Failure: tests.support.BoomError: b' (failure=True)\nTraceback (most recent call last):\n"
    ) in text
    assert "\ntests.support.BoomError: b\n" in text


def test_tracebacks_can_be_left_out(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Fail(name="b")))
    out = io.StringIO()
    with pytest.raises(BoomError), PrintingListener(engine, stream=out, show_tracebacks=False):
        engine.run()
    assert "(failure=True)\n" in out.getvalue()
    assert "Traceback" not in out.getvalue()
