"""PrintingListener and PrintingDurationListener print TaskFlow's lines."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest

ENGINE = r"<[\w.]+ object at 0x[0-9a-f]+>"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _flow(package: str, *, fail: bool = False) -> Any:
    task = importlib.import_module(package + ".task")
    linear_flow = importlib.import_module(package + ".patterns.linear_flow")

    class Hello(task.Task):
        def execute(self) -> str:
            return "hi"

        def revert(self, **kwargs: Any) -> str:
            return "undone"

    class Boom(task.Task):
        def execute(self) -> None:
            raise RuntimeError("boom")

    flow = linear_flow.Flow("greet").add(Hello("a"))
    return flow.add(Boom("b")) if fail else flow


def test_printing_listener_prints_taskflows_lines(package: str, capsys: pytest.CaptureFixture[str]) -> None:
    engines = importlib.import_module(package + ".engines")
    printing = importlib.import_module(package + ".listeners.printing")
    engine = engines.load(_flow(package))
    with printing.PrintingListener(engine):
        engine.run()
    lines = capsys.readouterr().out.splitlines()
    expected = [
        rf"{ENGINE} has moved flow 'greet' \({UUID}\) into state 'RUNNING' from state 'PENDING'",
        rf"{ENGINE} has moved task 'a' \({UUID}\) into state 'RUNNING' from state 'PENDING'",
        rf"{ENGINE} has moved task 'a' \({UUID}\) into state 'SUCCESS' from state 'RUNNING'"
        r" with result 'hi' \(failure=False\)",
        rf"{ENGINE} has moved flow 'greet' \({UUID}\) into state 'SUCCESS' from state 'RUNNING'",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), line
    # the same engine on every line
    assert len({line.split(" has moved ")[0] for line in lines}) == 1


def test_printing_listener_prints_a_failure_and_its_traceback(
    package: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engines = importlib.import_module(package + ".engines")
    printing = importlib.import_module(package + ".listeners.printing")
    engine = engines.load(_flow(package, fail=True))
    with pytest.raises(RuntimeError, match="boom"), printing.PrintingListener(engine):
        engine.run()
    out = capsys.readouterr().out
    assert re.search(
        rf"{ENGINE} has moved task 'b' \({UUID}\) into state 'FAILURE' from state 'RUNNING'"
        r" with result 'Failure: RuntimeError: boom' \(failure=True\)\n"
        r"Traceback \(most recent call last\):\n(  .*\n)+RuntimeError: boom\n",
        out,
    ), out
    assert re.search(
        rf"has moved task 'a' \({UUID}\) into state 'REVERTED' from state 'REVERTING'"
        r" with result 'undone' \(failure=False\)\n",
        out,
    ), out


def test_printing_duration_listener_prints_taskflows_lines(
    package: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engines = importlib.import_module(package + ".engines")
    timing = importlib.import_module(package + ".listeners.timing")
    engine = engines.load(_flow(package, fail=True))
    with pytest.raises(RuntimeError), timing.PrintingDurationListener(engine):
        engine.run()
    lines = capsys.readouterr().out.splitlines()
    took = r"It took %s '%s' \d+\.\d\d seconds to finish\."
    expected = [
        "'greet' flow started.",
        "'a' task started.",
        took % ("task", "a"),
        "'b' task started.",
        took % ("task", "b"),
        "'b' task started.",  # its revert
        took % ("task", "b"),
        "'a' task started.",
        took % ("task", "a"),
        took % ("flow", "greet"),
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), line


def test_printing_duration_listener_takes_a_printer(package: str) -> None:
    engines = importlib.import_module(package + ".engines")
    timing = importlib.import_module(package + ".listeners.timing")
    engine = engines.load(_flow(package))
    printed: list[str] = []
    with timing.PrintingDurationListener(engine, printer=printed.append):
        engine.run()
    assert printed[:2] == ["'greet' flow started.", "'a' task started."]
    assert re.fullmatch(r"It took flow 'greet' \d+\.\d\d seconds to finish\.", printed[-1])
