"""ProgressListener: a bar on a terminal, silence elsewhere."""

from __future__ import annotations

import io
from typing import Any

import pytest

from flowkit import states
from flowkit.listeners import ProgressListener
from flowkit.patterns import linear_flow
from tests.support import BoomError, Const, Fail, Name


class FakeTerminal(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def three_tasks() -> Any:
    return linear_flow.Flow("order").add(Name(name="reserve"), Name(name="charge"), Name(name="ship"))


def final_line(text: str) -> str:
    return text.rstrip("\n").split("\r\x1b[2K")[-1]


def test_quiet_when_not_a_terminal(load: Any) -> None:
    engine = load(three_tasks())
    out = io.StringIO()
    with ProgressListener(engine, stream=out) as progress:
        assert not progress.enabled
        assert len(engine.atom_notifier) == 0  # not even registered
        engine.run()
    assert out.getvalue() == ""


def test_draws_on_a_terminal(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    engine = load(three_tasks())
    out = FakeTerminal()
    with ProgressListener(engine, stream=out, refresh_seconds=0, width=6) as progress:
        assert progress.enabled and progress.color
        engine.run()
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert "\x1b[32m" in text  # coloured bar
    assert "running: reserve" in text
    assert progress.done == 3 and progress.total == 3 and progress.failed == []


def test_line_content_without_colour(load: Any) -> None:
    engine = load(three_tasks())
    out = io.StringIO()
    with ProgressListener(engine, stream=out, enabled=True, color=False, refresh_seconds=0, width=6):
        engine.run()
    lines = out.getvalue().rstrip("\n").split("\r\x1b[2K")[1:]
    assert lines[0] == "order [------] 0/3  running: reserve  failed: 0"
    assert lines[1] == "order [##----] 1/3  failed: 0"
    assert final_line(out.getvalue()) == "order [######] 3/3  failed: 0  SUCCESS"


def test_failures_and_reverts_are_shown(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Const(name="a", inject={"value": 1}), Fail(name="b")))
    out = io.StringIO()
    with pytest.raises(BoomError), ProgressListener(engine, stream=out, enabled=True, color=False) as progress:
        engine.run()
    assert progress.failed == ["b"]
    assert final_line(out.getvalue()) == "f [------------------------] 0/2  failed: 1  reverted: 2  REVERTED"


def test_a_resumed_flow_starts_with_what_is_done(load: Any) -> None:
    engine = load(three_tasks())

    def suspend_after_first(state: Any, details: dict[str, Any]) -> None:
        if state == states.SUCCESS and details["atom_name"] == "reserve":
            engine.suspend()

    engine.atom_notifier.register(states.SUCCESS, suspend_after_first)
    engine.run()
    engine.atom_notifier.deregister(states.SUCCESS, suspend_after_first)
    assert engine.storage.get_flow_state() == states.SUSPENDED
    out = io.StringIO()
    with ProgressListener(engine, stream=out, enabled=True, color=False, refresh_seconds=0, width=3):
        engine.run()
    first = out.getvalue().split("\r\x1b[2K")[1]
    assert first == "order [#--] 1/3  running: charge  failed: 0"
    assert final_line(out.getvalue()) == "order [###] 3/3  failed: 0  SUCCESS"


def test_refresh_interval_limits_redraws(load: Any) -> None:
    engine = load(three_tasks())
    out = io.StringIO()
    with ProgressListener(engine, stream=out, enabled=True, color=False, refresh_seconds=3600):
        engine.run()
    # the first event draws, the rest fall inside the interval, the end always draws
    assert out.getvalue().count("\r\x1b[2K") == 2


def test_stays_on_one_line_in_a_narrow_terminal(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    monkeypatch.setenv("COLUMNS", "20")
    monkeypatch.delenv("NO_COLOR", raising=False)
    engine = load(three_tasks())
    out = FakeTerminal()
    with ProgressListener(engine, stream=out, refresh_seconds=0, width=6) as progress:
        engine.run()
    assert progress.line() == "order [######] 3/3  failed: 0  SUCCESS"  # longer than the terminal
    drawn = out.getvalue().rstrip("\n").split("\r\x1b[2K")[1:]
    assert len(drawn) >= 4
    for line in drawn:
        visible = re.sub("\x1b\\[[0-9;]*m", "", line)
        # Shorter than the terminal, so it never wraps and every redraw clears all of it.
        assert len(visible) <= 19 and "\n" not in visible and visible.endswith("…")
