"""unordered_flow.Flow: items with no order between them; all must finish."""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import states
from flowkit.patterns import linear_flow, unordered_flow
from tests.support import Add, BoomError, Capture, Const, Fail, Name, Undoable


def test_container_basics() -> None:
    a, b = Name(name="a"), Name(name="b")
    flow = unordered_flow.Flow("u").add(a, b)
    assert flow.name == "u"
    assert len(flow) == 2
    assert set(flow) == {a, b}


def test_all_members_run(load: Any) -> None:
    names = ["m%d" % i for i in range(6)]
    engine = load(unordered_flow.Flow("u").add(*[Name(name=n) for n in names]))
    capture = Capture(engine)
    engine.run()
    assert sorted(capture.names_in(states.SUCCESS)) == names
    assert engine.storage.get_flow_state() == states.SUCCESS


def test_members_share_outer_inputs_and_all_results_are_stored(run: Any) -> None:
    flow = linear_flow.Flow("outer").add(
        Const(name="x", provides="x", inject={"value": 2}),
        unordered_flow.Flow("u").add(
            Add(name="a", provides="a", inject={"y": 1}),
            Add(name="b", provides="b", inject={"y": 10}),
        ),
        Add(name="total", provides="total", rebind=["a", "b"]),
    )
    assert run(flow) == {"x": 2, "a": 3, "b": 12, "total": 15}


def test_a_failing_member_reverts_the_others(load: Any) -> None:
    flow = linear_flow.Flow("outer").add(
        unordered_flow.Flow("u").add(Undoable(name="ok1"), Undoable(name="ok2"), Fail(name="bad"))
    )
    engine = load(flow)
    with pytest.raises(BoomError):
        engine.run()
    for name in ("bad", "ok1", "ok2"):
        # an atom that never started stays PENDING; one that ran is reverted
        assert engine.storage.get_atom_state(name) in (states.REVERTED, states.PENDING)
    assert engine.storage.get_atom_state("bad") == states.REVERTED
    assert engine.storage.get_flow_state() == states.REVERTED


def test_followers_wait_for_every_member(load: Any) -> None:
    flow = linear_flow.Flow("outer").add(
        unordered_flow.Flow("u").add(*[Name(name="m%d" % i) for i in range(4)]),
        Name(name="after"),
    )
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    done = capture.names_in(states.SUCCESS)
    assert done[-1] == "after"
    assert capture.names_in(states.RUNNING)[-1] == "after"
