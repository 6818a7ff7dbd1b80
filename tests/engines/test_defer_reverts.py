"""``load(..., defer_reverts=True)``: TaskFlow's option, with TaskFlow 6.5's results.

By default a retry controller that says REVERT (``Times`` out of attempts, ``AlwaysRevert``)
reverts its own scope only, unless an enclosing controller says RETRY or REVERT_ALL: the atoms
outside stay SUCCESS and the flow ends REVERTED.  With ``defer_reverts`` a REVERT always
defers to the enclosing controller, and with none left the whole flow is reverted.

The expected states and revert orders below are what TaskFlow 6.5 produces for the same
flows (run side by side when this was written).  The option is recorded in the flow detail,
so a run resumed after a crash, loaded without the option, reverts the same atoms.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flowkit.engines
from flowkit import exceptions, retry, states
from flowkit.patterns import graph_flow, linear_flow
from flowkit.persistence.backends import fetch
from tests.support import BoomError, Capture, Fail, Name, Undoable

ROOT = Path(__file__).resolve().parent.parent.parent
CRASH_EXIT = 17

S, R, P = states.SUCCESS, states.REVERTED, states.PENDING


def exhausted_inner() -> Any:
    """outer_first -> [inner_retry: Times(2)] inner_first -> flaky (always fails) -> outer_last."""
    inner = linear_flow.Flow("inner", retry=retry.Times(2, name="inner_retry")).add(
        Undoable(name="inner_first"), Fail(name="flaky")
    )
    return linear_flow.Flow("outer").add(Undoable(name="outer_first"), inner, Name(name="outer_last"))


def nested_reverts() -> Any:
    """Two AlwaysRevert scopes, one in the other, in a flow without a controller."""
    innermost = linear_flow.Flow("innermost", retry=retry.AlwaysRevert(name="inner_retry")).add(
        Undoable(name="inner_task"), Fail(name="boom")
    )
    middle = linear_flow.Flow("middle", retry=retry.AlwaysRevert(name="middle_retry")).add(
        Undoable(name="middle_task"), innermost
    )
    return linear_flow.Flow("outer").add(Undoable(name="outer_task"), middle, Name(name="never"))


def revert_under_times() -> Any:
    """An AlwaysRevert scope inside a Times(2) scope inside a flow without a controller."""
    inner = linear_flow.Flow("inner", retry=retry.AlwaysRevert(name="inner_retry")).add(
        Undoable(name="inner_task"), Fail(name="boom")
    )
    middle = linear_flow.Flow("middle", retry=retry.Times(2, name="middle_retry")).add(
        Undoable(name="middle_task"), inner
    )
    return linear_flow.Flow("top").add(Undoable(name="top_task"), middle, Name(name="never"))


def revert_all_inner() -> Any:
    """Like ``exhausted_inner`` but Times(revert_all=True): REVERT_ALL, whatever the option."""
    inner = linear_flow.Flow("inner", retry=retry.Times(2, name="inner_retry", revert_all=True)).add(
        Undoable(name="inner_first"), Fail(name="flaky")
    )
    return linear_flow.Flow("outer").add(Undoable(name="outer_first"), inner, Name(name="outer_last"))


def flow_level_times() -> Any:
    """The flow's own controller is exhausted: its scope is the whole flow either way."""
    return linear_flow.Flow("outer", retry=retry.Times(2, name="top_retry")).add(
        Undoable(name="a"), Fail(name="b"), Name(name="c")
    )


# (flow, defer_reverts) -> (final atom states, every REVERTED event in order), from TaskFlow 6.5
CASES: dict[str, tuple[Callable[[], Any], bool, dict[str, str], list[str]]] = {
    "exhausted-default": (
        exhausted_inner,
        False,
        {"outer_first": S, "inner_retry": R, "inner_first": R, "flaky": R, "outer_last": P},
        ["flaky", "inner_first", "flaky", "inner_first", "inner_retry"],
    ),
    "exhausted-deferred": (
        exhausted_inner,
        True,
        {"outer_first": R, "inner_retry": R, "inner_first": R, "flaky": R, "outer_last": P},
        ["flaky", "inner_first", "flaky", "inner_first", "inner_retry", "outer_first"],
    ),
    "nested-default": (
        nested_reverts,
        False,
        {
            "outer_task": S, "middle_retry": S, "middle_task": S,
            "inner_retry": R, "inner_task": R, "boom": R, "never": P,
        },
        ["boom", "inner_task", "inner_retry"],
    ),
    "nested-deferred": (
        nested_reverts,
        True,
        {
            "outer_task": R, "middle_retry": R, "middle_task": R,
            "inner_retry": R, "inner_task": R, "boom": R, "never": P,
        },
        ["boom", "inner_task", "inner_retry", "middle_task", "middle_retry", "outer_task"],
    ),
    "times-outside-default": (
        revert_under_times,
        False,
        {
            "top_task": S, "middle_retry": S, "middle_task": S,
            "inner_retry": R, "inner_task": R, "boom": R, "never": P,
        },
        ["boom", "inner_task", "inner_retry", "middle_task", "boom", "inner_task", "inner_retry"],
    ),
    "times-outside-deferred": (
        revert_under_times,
        True,
        {
            "top_task": R, "middle_retry": R, "middle_task": R,
            "inner_retry": R, "inner_task": R, "boom": R, "never": P,
        },
        [
            "boom", "inner_task", "inner_retry", "middle_task",  # middle_retry said RETRY
            "boom", "inner_task", "inner_retry", "middle_task", "middle_retry", "top_task",
        ],
    ),
    "revert-all-default": (
        revert_all_inner,
        False,
        {"outer_first": R, "inner_retry": R, "inner_first": R, "flaky": R, "outer_last": P},
        ["flaky", "inner_first", "flaky", "inner_first", "inner_retry", "outer_first"],
    ),
    "revert-all-deferred": (
        revert_all_inner,
        True,
        {"outer_first": R, "inner_retry": R, "inner_first": R, "flaky": R, "outer_last": P},
        ["flaky", "inner_first", "flaky", "inner_first", "inner_retry", "outer_first"],
    ),
    "flow-level-default": (
        flow_level_times, False, {"top_retry": R, "a": R, "b": R, "c": P}, ["b", "a", "b", "a", "top_retry"]
    ),
    "flow-level-deferred": (
        flow_level_times, True, {"top_retry": R, "a": R, "b": R, "c": P}, ["b", "a", "b", "a", "top_retry"]
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_which_atoms_revert_and_in_what_order(load: Any, case: str) -> None:
    make, defer, expected_states, expected_order = CASES[case]
    engine = load(make(), defer_reverts=defer)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert {name: engine.storage.get_atom_state(name) for name in expected_states} == expected_states
    assert capture.names_in(states.REVERTED) == expected_order


def test_deferred_revert_of_an_independent_sibling(load: Any) -> None:
    # in a graph flow the sibling depends on nothing in the scope: only the deferred
    # revert touches it, after the scope's atoms it ran alongside
    def make() -> Any:
        inner = linear_flow.Flow("inner", retry=retry.Times(2, name="inner_retry")).add(
            Undoable(name="inner_first"), Fail(name="flaky")
        )
        return graph_flow.Flow("g").add(Undoable(name="sibling"), inner)

    engine = load(make())
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_atom_state("sibling") == states.SUCCESS
    assert engine.storage.get_atom_state("inner_retry") == states.REVERTED

    engine = load(make(), defer_reverts=True)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    for name in ("sibling", "inner_retry", "inner_first", "flaky"):
        assert engine.storage.get_atom_state(name) == states.REVERTED
    assert capture.count("sibling", states.REVERTED) == 1
    assert capture.names_in(states.REVERTED)[-1] == "inner_retry"


def test_an_outer_retry_still_retries_with_defer_reverts(load: Any) -> None:
    # deferring changes only what happens when nobody retries
    inner = linear_flow.Flow("inner", retry=retry.AlwaysRevert(name="inner_retry")).add(
        Undoable(name="inner_task"), Fail(name="boom")
    )
    flow = linear_flow.Flow("outer", retry=retry.Times(3, name="outer_retry")).add(Undoable(name="outer_task"), inner)
    engine = load(flow, defer_reverts=True)
    capture = Capture(engine)
    with pytest.raises(BoomError):
        engine.run()
    assert capture.count("outer_retry", states.RETRYING) == 2
    assert capture.executed("outer_task") == 3
    assert engine.storage.get_atom_state("outer_retry") == states.REVERTED
    assert engine.storage.get_atom_state("outer_task") == states.REVERTED


def test_defer_reverts_is_recorded_in_the_flow_detail(tmp_path: Path) -> None:
    with fetch("sqlite:///%s" % (tmp_path / "f.db",)) as backend:
        engine = flowkit.engines.load(exhausted_inner(), backend=backend, defer_reverts=True)
        assert engine.defer_reverts is True
        with backend.get_connection() as conn:
            stored = conn.get_flow_details(engine.flow_detail.uuid)
        assert stored.meta["defer_reverts"] is True
        # loaded again without the option: kept; with False: changed, durably
        assert flowkit.engines.load(exhausted_inner(), backend=backend, flow_detail=stored).defer_reverts is True
        off = flowkit.engines.load(exhausted_inner(), backend=backend, flow_detail=stored, defer_reverts=False)
        assert off.defer_reverts is False
        with backend.get_connection() as conn:
            assert "defer_reverts" not in conn.get_flow_details(engine.flow_detail.uuid).meta
    assert flowkit.engines.load(exhausted_inner()).defer_reverts is False
    with pytest.raises(TypeError, match="defer_reverts must be True, False or None, got 'yes'"):
        flowkit.engines.load(exhausted_inner(), defer_reverts="yes")


# --- reverts survive a crash -----------------------------------------------------------


def scope_beside_a_chain() -> Any:
    """A scope that gives up at once (AlwaysRevert) beside a chain of five that carries on."""
    inner = linear_flow.Flow("inner", retry=retry.AlwaysRevert(name="give_up")).add(Fail(name="x"))
    chain = linear_flow.Flow("chain").add(*(Undoable(name="t%d" % i) for i in range(1, 6)))
    return graph_flow.Flow("g").add(inner, chain)


def crash_child(url: str, point: str) -> None:
    """Run a flow serially against ``url`` and die (os._exit) at ``point``.

    ``decide``: ``exhausted_inner`` with defer_reverts, when ``flaky`` starts its last
    attempt, before the controller has decided anything; ``revert``: the same, once the scope
    is reverted and the atoms outside it are not yet; ``scope``: ``scope_beside_a_chain``
    (default options), when a chain atom succeeds after the scope was reverted.
    """
    with fetch(url) as backend:
        if point == "scope":
            engine = flowkit.engines.load(scope_beside_a_chain(), backend=backend)
        else:
            engine = flowkit.engines.load(exhausted_inner(), backend=backend, defer_reverts=True)
        print(engine.flow_detail.uuid, flush=True)
        seen: list[tuple[str, str]] = []

        def crash(state: Any, details: dict[str, Any]) -> None:
            event = (details["atom_name"], state)
            seen.append(event)
            if point == "decide" and seen.count(("flaky", states.RUNNING)) == 2:
                os._exit(CRASH_EXIT)
            if point == "revert" and event == ("inner_retry", states.REVERTED):
                os._exit(CRASH_EXIT)
            if point == "scope" and ("give_up", states.REVERTED) in seen and event[0].startswith("t"):
                if state == states.SUCCESS and event[0] != "t5":
                    os._exit(CRASH_EXIT)

        engine.atom_notifier.register("*", crash)
        try:
            engine.run()
        except BoomError:
            pass


def crash_and_reload(load: Any, tmp_path: Path, point: str, make: Callable[[], Any]) -> tuple[Any, Any, str]:
    """Run ``crash_child`` at ``point`` in a child process; return (backend, engine resuming it, uuid)."""
    url = "sqlite:///%s" % (tmp_path / "crash.db",)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    code = "from tests.engines.test_defer_reverts import crash_child; crash_child(%r, %r)" % (url, point)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False
    )
    assert proc.returncode == CRASH_EXIT, (proc.returncode, proc.stderr)
    uuid = proc.stdout.split()[0]
    backend = fetch(url)
    with backend.get_connection() as conn:
        detail = conn.get_flow_details(uuid)
    assert detail.state in (states.RUNNING, states.REVERTING)
    # resumed without any option: the flow detail says what to do
    return backend, load(make(), flow_detail=detail, backend=backend), uuid


@pytest.mark.parametrize("point", ["decide", "revert"])
def test_a_deferred_revert_survives_a_crash(load: Any, tmp_path: Path, point: str) -> None:
    backend, engine, uuid = crash_and_reload(load, tmp_path, point, exhausted_inner)
    with backend:
        assert engine.defer_reverts is True
        capture = Capture(engine)
        if point == "decide":
            # the interrupted attempt runs again here and fails with its own exception
            with pytest.raises(BoomError, match="flaky"):
                engine.run()
        else:
            # the failure is read back from the logbook, as data: it comes wrapped, named
            with pytest.raises(exceptions.WrappedFailure) as info:
                engine.run()
            pairs = info.value.atom_failures()
            assert [(name, failure.exception_str) for name, failure in pairs] == [("flaky", "flaky")]
        assert engine.storage.get_flow_state() == states.REVERTED
        for name in ("outer_first", "inner_retry", "inner_first", "flaky"):
            assert engine.storage.get_atom_state(name) == states.REVERTED
        assert engine.storage.get_atom_state("outer_last") == states.PENDING
        assert capture.count("outer_first", states.REVERTED) == 1
        if point == "decide":
            assert capture.executed("flaky") == 1  # the attempt the crash interrupted
        else:
            # the scope was reverted before the crash: only what was left is reverted now
            assert not capture.names_in(states.RUNNING)
            assert capture.count("flaky", states.REVERTING) == 0
            assert capture.count("inner_first", states.REVERTING) == 0
        with backend.get_connection() as conn:
            assert conn.get_flow_details(uuid).state == states.REVERTED


def test_a_reverted_scope_survives_a_crash_while_the_flow_runs_on(load: Any, tmp_path: Path) -> None:
    # the default: the scope was reverted and the chain beside it went on when the process
    # died; the resumed run finishes the chain and the flow still ends REVERTED
    backend, engine, uuid = crash_and_reload(load, tmp_path, "scope", scope_beside_a_chain)
    with backend:
        capture = Capture(engine)
        with pytest.raises(exceptions.WrappedFailure) as info:
            engine.run()
        assert [(name, failure.exception_str) for name, failure in info.value.atom_failures()] == [("x", "x")]
        assert engine.storage.get_flow_state() == states.REVERTED
        assert engine.storage.get_atom_state("give_up") == states.REVERTED
        assert engine.storage.get_atom_state("x") == states.REVERTED
        for i in range(1, 6):
            assert engine.storage.get_atom_state("t%d" % i) == states.SUCCESS
        assert not capture.names_in(states.REVERTING)
        assert capture.executed("t5") == 1 and capture.executed("t1") == 0
        with backend.get_connection() as conn:
            assert conn.get_flow_details(uuid).state == states.REVERTED
