"""DurationListener: per-atom and per-flow durations, recorded in the logbook."""

from __future__ import annotations

import io
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest

from flowkit.listeners import DurationListener, PrintingDurationListener
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from tests.support import BoomError, Const, Fail, Undoable


class Ticker:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return float(next(self._counter))


def two_tasks() -> Any:
    return linear_flow.Flow("f").add(Const(name="a", inject={"value": 1}), Const(name="b", inject={"value": 2}))


def test_durations_in_memory_and_in_atom_meta(load: Any) -> None:
    engine = load(two_tasks())
    with DurationListener(engine, clock=Ticker()) as timer:
        engine.run()
    # readings: flow start 0, a 1..2, b 3..4, flow end 5
    assert timer.durations == {"a": 1.0, "b": 1.0}
    assert timer.flow_duration == 5.0
    fd = engine.storage.flow_detail
    assert fd.find_by_name("a").meta["duration"] == 1.0
    assert fd.find_by_name("b").meta["start_offset"] == 3.0
    assert fd.meta["duration"] == 5.0


def test_reverts_are_timed_separately(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Undoable(name="a"), Fail(name="b")))
    with pytest.raises(BoomError), DurationListener(engine, clock=Ticker()) as timer:
        engine.run()
    assert set(timer.durations) == {"a", "b"}
    assert set(timer.revert_durations) == {"a", "b"}
    detail = engine.storage.flow_detail.find_by_name("a")
    assert detail.meta["duration"] == 1.0
    assert detail.meta["revert_duration"] == 1.0


def test_durations_are_durable_in_sqlite(load: Any, tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "timing.db",)
    with fetch(url) as backend:
        engine = load(two_tasks(), backend=backend)
        with DurationListener(engine, clock=Ticker()):
            engine.run()
        uuid = engine.flow_detail.uuid
        engine.close()
    with fetch(url) as backend, backend.get_connection() as conn:
        stored = conn.get_flow_details(uuid)
    assert {ad.name: ad.meta.get("duration") for ad in stored} == {"a": 1.0, "b": 1.0}
    assert stored.meta["duration"] == 5.0


def test_real_clock_gives_non_negative_numbers(load: Any) -> None:
    engine = load(two_tasks())
    with DurationListener(engine) as timer:
        engine.run()
    assert all(seconds >= 0 for seconds in timer.durations.values())
    assert timer.flow_duration is not None and timer.flow_duration >= max(timer.durations.values())


def test_printing_duration_listener(load: Any) -> None:
    engine = load(two_tasks())
    out = io.StringIO()
    with PrintingDurationListener(engine, stream=out, clock=Ticker()):
        engine.run()
    assert out.getvalue().splitlines() == [
        "'f' flow started.",
        "'a' task started.",
        "It took task 'a' 1.00 seconds to finish.",
        "'b' task started.",
        "It took task 'b' 1.00 seconds to finish.",
        "It took flow 'f' 5.00 seconds to finish.",
    ]


def test_printing_duration_listener_prints_reverts_to_a_printer(load: Any) -> None:
    engine = load(linear_flow.Flow("f").add(Undoable(name="a"), Fail(name="b")))
    lines: list[str] = []
    with pytest.raises(BoomError), PrintingDurationListener(engine, lines.append, clock=Ticker()):
        engine.run()
    # a revert is a start and a finish of its own
    assert lines == [
        "'f' flow started.",
        "'a' task started.",
        "It took task 'a' 1.00 seconds to finish.",
        "'b' task started.",
        "It took task 'b' 1.00 seconds to finish.",
        "'b' task started.",
        "It took task 'b' 1.00 seconds to finish.",
        "'a' task started.",
        "It took task 'a' 1.00 seconds to finish.",
        "It took flow 'f' 9.00 seconds to finish.",
    ]
