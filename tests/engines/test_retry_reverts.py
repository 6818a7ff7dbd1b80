"""A revert that raised: what ``run()`` raises, and trying the reverts again.

TaskFlow's rules, checked against TaskFlow 6.5: a flow whose ``revert()`` raised ends
FAILURE, the atoms before the one whose revert failed stay SUCCESS, and ``run()`` raises
what the revert raised (the execute failure being undone is not re-raised); several failed
reverts come as a WrappedFailure, which names the atom of each failure.

``engine.retry_reverts()`` (flowkit's own) lets an operator try again once the cause is
fixed: the next ``run()`` reverts the failed atoms again, then the earlier ones, and the flow
ends REVERTED, raising the failure that made it revert.  The revert that fails counts its
attempts in a file, so a worker process or a new process sees the same count.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import flowkit.engines
from flowkit import exceptions, retry, states
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from flowkit.persistence.backends import fetch
from flowkit.task import Task
from flowkit.types.failure import Failure
from tests.support import BoomError, Capture, Fail, FailUntil, OtherBoomError, Undoable

ROOT = Path(__file__).resolve().parent.parent.parent


def attempts_so_far(tally: str) -> int:
    """Count a revert attempt in the file ``tally``; return how many came before it."""
    with open(tally, "a+", encoding="utf-8") as handle:
        handle.seek(0)
        before = len(handle.read().splitlines())
        handle.write("attempt\n")
        handle.flush()
        os.fsync(handle.fileno())
    return before


class RevertFailsAtFirst(Task):
    """Succeed; fail the first ``failures`` reverts (counted in the file ``tally``)."""

    def execute(self, tally: str, failures: int) -> str:
        return self.name

    def revert(self, tally: str, failures: int, **kwargs: Any) -> str:
        before = attempts_so_far(tally)
        if before < failures:
            raise OtherBoomError("revert of %s failed (attempt %d)" % (self.name, before + 1))
        return "undone after %d failed attempts" % before


class FailWithBadRevert(Task):
    """Fail; fail the first ``failures`` reverts too (counted in the file ``tally``)."""

    def execute(self, tally: str, failures: int) -> None:
        raise BoomError(self.name)

    def revert(self, tally: str, failures: int, **kwargs: Any) -> None:
        if attempts_so_far(tally) < failures:
            raise OtherBoomError("revert of " + self.name)


class TimesRevertFailsAtFirst(retry.Times):
    """``Times`` whose own revert fails the first ``failures`` times (counted in ``tally``)."""

    def __init__(self, attempts: int, tally: str, failures: int, **kwargs: Any) -> None:
        super().__init__(attempts, **kwargs)
        self.tally = tally
        self.failures = failures

    def revert(self, history: retry.History, *args: Any, **kwargs: Any) -> None:
        if attempts_so_far(self.tally) < self.failures:
            raise OtherBoomError("revert of " + self.name)


def stubborn(tmp_path: Path, name: str = "stubborn", failures: int = 1) -> RevertFailsAtFirst:
    return RevertFailsAtFirst(
        name=name, inject={"tally": str(tmp_path / (name + ".tally")), "failures": failures}
    )


def order_flow(tmp_path: Path, failures: int = 1) -> Any:
    """first -> stubborn (revert fails ``failures`` times) -> a -> bad (fails)."""
    return linear_flow.Flow("order").add(
        Undoable(name="first"), stubborn(tmp_path, failures=failures), Undoable(name="a"), Fail(name="bad")
    )


# --- what a failed revert raises -------------------------------------------------------


def test_one_failed_revert_raises_that_reverts_exception(load: Any, tmp_path: Path) -> None:
    # TaskFlow 6.5 raises the revert's own exception, not the execute failure it was undoing
    engine = load(order_flow(tmp_path))
    with pytest.raises(OtherBoomError, match="revert of stubborn failed") as info:
        engine.run()
    assert not isinstance(info.value, exceptions.WrappedFailure)
    assert engine.storage.get_flow_state() == states.FAILURE
    assert engine.storage.get_atom_state("stubborn") == states.REVERT_FAILURE
    assert engine.storage.get_atom_state("bad") == states.REVERTED
    assert engine.storage.get_atom_state("first") == states.SUCCESS


def test_the_failed_atoms_own_revert_failing_raises_that_revert(load: Any, tmp_path: Path) -> None:
    flow = linear_flow.Flow("f").add(
        Undoable(name="first"),
        FailWithBadRevert(name="bad", inject={"tally": str(tmp_path / "bad.tally"), "failures": 1}),
    )
    engine = load(flow)
    with pytest.raises(OtherBoomError, match="revert of bad") as info:
        engine.run()
    assert not isinstance(info.value, exceptions.WrappedFailure)
    assert engine.storage.get_atom_state("bad") == states.REVERT_FAILURE
    assert engine.storage.get_atom_state("first") == states.SUCCESS


def test_several_failed_reverts_come_wrapped_naming_their_atoms(load: Any, tmp_path: Path) -> None:
    flow = linear_flow.Flow("order").add(
        unordered_flow.Flow("both").add(stubborn(tmp_path, "s1"), stubborn(tmp_path, "s2")), Fail(name="bad")
    )
    engine = load(flow)
    with pytest.raises(exceptions.WrappedFailure) as info:
        engine.run()
    wrapped = info.value
    # only the reverts that failed, as in TaskFlow: not the execute failure of "bad"
    assert len(wrapped) == 2
    pairs = wrapped.atom_failures()
    assert [name for name, _failure in pairs] == ["s1", "s2"]
    for name, failure in pairs:
        assert isinstance(failure, Failure)
        assert failure.check(OtherBoomError) is OtherBoomError
        assert failure.exception_str == "revert of %s failed (attempt 1)" % name
    assert list(wrapped) == [failure for _name, failure in pairs]  # still iterable of Failure
    text = str(wrapped)
    assert "atom 's1': " in text and "atom 's2': " in text and "flow 'order'" in text
    assert wrapped.flow_name == "order"
    assert engine.storage.get_flow_state() == states.FAILURE

    # both are reverted again, then the flow ends REVERTED with the failure that caused it
    engine.retry_reverts()
    with pytest.raises(BoomError, match="bad"):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("s1") == states.REVERTED
    assert engine.storage.get_atom_state("s2") == states.REVERTED


def test_several_execute_failures_come_wrapped_naming_their_atoms(load: Any) -> None:
    flow = unordered_flow.Flow("u").add(Fail(name="f1"), Fail(name="f2"))
    engine = load(flow)
    with pytest.raises(exceptions.WrappedFailure) as info:
        engine.run()
    pairs = info.value.atom_failures()
    assert sorted((name, failure.exception_str) for name, failure in pairs) == [("f1", "f1"), ("f2", "f2")]
    assert "atom 'f1': Failure: tests.support.BoomError: f1" in str(info.value)


def test_wrapped_failure_keeps_names_through_pickle_and_nesting() -> None:
    def caught(error: Exception) -> Failure:
        try:
            raise error
        except Exception:
            return Failure()

    inner = exceptions.WrappedFailure([caught(BoomError("x")), caught(KeyError("y"))], atom_names=["a", None])
    outer = exceptions.WrappedFailure([caught(inner), caught(OtherBoomError("z"))], atom_names=["ignored", "c"])
    assert [(n, f.exception_str) for n, f in outer.atom_failures()] == [("a", "x"), ("ignored", "'y'"), ("c", "z")]
    copy = pickle.loads(pickle.dumps(outer))
    assert [(n, f.exception_str) for n, f in copy.atom_failures()] == [("a", "x"), ("ignored", "'y'"), ("c", "z")]
    assert str(copy) == str(outer)
    # TaskFlow's spelling still works: positional failures, no names
    plain = exceptions.WrappedFailure([caught(BoomError("x"))])
    assert plain.atom_failures()[0][0] is None
    assert str(plain) == "WrappedFailure(1 failure: Failure: tests.support.BoomError: x)"
    with pytest.raises(ValueError, match="2 atom names for 1 failures"):
        exceptions.WrappedFailure([caught(BoomError("x"))], atom_names=["a", "b"])


# --- retry_reverts ---------------------------------------------------------------------


def test_retry_reverts_reverts_the_failed_atom_then_the_earlier_ones(load: Any, tmp_path: Path) -> None:
    engine = load(order_flow(tmp_path))
    with pytest.raises(OtherBoomError):
        engine.run()
    capture = Capture(engine)
    engine.retry_reverts()
    assert engine.storage.get_flow_state() == states.REVERTING
    assert engine.storage.get_atom_state("stubborn") == states.REVERTING
    with pytest.raises(BoomError, match="bad"):  # the failure that made the flow revert
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert capture.names_in(states.REVERTED) == ["stubborn", "first"]
    assert capture.reverted_result("stubborn") == "undone after 1 failed attempts"
    # what was reverted before is not reverted again, and nothing runs again
    assert capture.count("a", states.REVERTING) == 0
    assert capture.count("bad", states.REVERTING) == 0
    assert not capture.names_in(states.RUNNING)
    for name in ("first", "stubborn", "a", "bad"):
        assert engine.storage.get_atom_state(name) == states.REVERTED


def test_a_revert_that_fails_again_ends_failure_again(load: Any, tmp_path: Path) -> None:
    engine = load(order_flow(tmp_path, failures=2))
    with pytest.raises(OtherBoomError, match="attempt 1"):
        engine.run()
    engine.retry_reverts()
    with pytest.raises(OtherBoomError, match="attempt 2"):
        engine.run()
    assert engine.storage.get_flow_state() == states.FAILURE
    assert engine.storage.get_atom_state("first") == states.SUCCESS
    engine.retry_reverts()
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_atom_state("first") == states.REVERTED
    assert engine.storage.get_flow_state() == states.REVERTED


def test_retry_reverts_inside_a_retrying_scope_runs_the_scope_again(load: Any, tmp_path: Path) -> None:
    flaky = FailUntil(name="flaky", provides="flaky_ok", inject={"good": 2})
    inner = linear_flow.Flow("inner", retry=retry.Times(3, name="times", provides="attempt")).add(
        stubborn(tmp_path), flaky
    )
    flow = linear_flow.Flow("outer").add(Undoable(name="outer_first"), inner)
    engine = load(flow)
    with pytest.raises(OtherBoomError):
        engine.run()
    assert engine.storage.get_atom_state("times") == states.SUCCESS
    engine.retry_reverts()
    assert engine.storage.get_flow_state() == states.RUNNING  # only the scope was reverting
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("flaky_ok") == 2
    assert capture.count("times", states.RETRYING) == 1
    assert capture.executed("stubborn") == 1 and capture.executed("flaky") == 1
    assert capture.count("outer_first", states.REVERTING) == 0


def test_retry_reverts_of_a_retry_controller(load: Any, tmp_path: Path) -> None:
    controller = TimesRevertFailsAtFirst(1, str(tmp_path / "times.tally"), 1, name="times")
    inner = linear_flow.Flow("inner", retry=controller).add(Fail(name="bad"))
    flow = linear_flow.Flow("outer").add(Undoable(name="outer_first"), inner)
    engine = load(flow, defer_reverts=True)
    with pytest.raises(OtherBoomError, match="revert of times"):
        engine.run()
    assert engine.storage.get_atom_state("times") == states.REVERT_FAILURE
    assert engine.storage.get_atom_state("outer_first") == states.SUCCESS
    engine.retry_reverts()
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_atom_state("times") == states.REVERTED
    assert engine.storage.get_atom_state("outer_first") == states.REVERTED  # deferred: the whole flow
    assert engine.storage.get_flow_state() == states.REVERTED


def test_retry_reverts_refuses_a_flow_without_a_failed_revert(load: Any, tmp_path: Path) -> None:
    fresh = load(order_flow(tmp_path))
    with pytest.raises(exceptions.InvalidState, match="flow 'order' .* has no failed revert to retry: it is PENDING"):
        fresh.retry_reverts()
    reverted = load(linear_flow.Flow("order").add(Undoable(name="first"), Fail(name="bad")))
    with pytest.raises(BoomError):
        reverted.run()
    with pytest.raises(exceptions.InvalidState, match="it is REVERTED"):
        reverted.retry_reverts()
    done = load(linear_flow.Flow("order").add(Undoable(name="first")))
    done.run()
    with pytest.raises(exceptions.InvalidState, match="it is SUCCESS"):
        done.retry_reverts()
    assert done.storage.get_flow_state() == states.SUCCESS


# --- in a new process, from the logbook ----------------------------------------------------


def run_order_in_child(url: str, tmp_path: Path) -> str:
    """Run the order flow to FAILURE in a child process that then exits; return the flow detail's uuid."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    code = "from tests.engines.test_retry_reverts import child_main; child_main(%r, %r)" % (url, str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["raised"] == "OtherBoomError" and report["state"] == "FAILURE", report
    return str(report["uuid"])


def child_main(url: str, tmp: str) -> None:
    """The child: run ``order_flow`` serially against ``url`` and report how it ended."""
    with fetch(url) as backend:
        engine = flowkit.engines.load(order_flow(Path(tmp)), backend=backend)
        raised = None
        try:
            engine.run()
        except Exception as error:
            raised = type(error).__name__
        report = {"uuid": engine.flow_detail.uuid, "raised": raised, "state": str(engine.storage.get_flow_state())}
        print(json.dumps(report), flush=True)


def test_retry_reverts_in_a_new_process_from_the_logbook(load: Any, tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "order.db",)
    uuid = run_order_in_child(url, tmp_path)
    with fetch(url) as backend:
        with backend.get_connection() as conn:
            detail = conn.get_flow_details(uuid)
        engine = load(order_flow(tmp_path), flow_detail=detail, backend=backend)
        engine.retry_reverts()
        # durable before anything runs: a fresh read of the logbook sees it
        with backend.get_connection() as conn:
            seen = conn.get_flow_details(uuid)
        assert seen.state == states.REVERTING
        assert {ad.name: ad.state for ad in seen}["stubborn"] == states.REVERTING
        capture = Capture(engine)
        # failures read back from a logbook are data (no exception object): the one that
        # reverted the flow comes back wrapped, named
        with pytest.raises(exceptions.WrappedFailure) as info:
            engine.run()
        [(name, failure)] = info.value.atom_failures()
        assert name == "bad" and failure.check(BoomError) and failure.exception_str == "bad"
        assert "atom 'bad': " in str(info.value)
        assert capture.names_in(states.REVERTED) == ["stubborn", "first"]
        with backend.get_connection() as conn:
            final = conn.get_flow_details(uuid)
        assert final.state == states.REVERTED
        everything = ("first", "stubborn", "a", "bad")
        assert {ad.name: ad.state for ad in final} == dict.fromkeys(everything, states.REVERTED)


def test_retry_reverts_of_a_cancelled_flow_raises_cancelled(load: Any, tmp_path: Path) -> None:
    flow = linear_flow.Flow("order").add(
        Undoable(name="first"), stubborn(tmp_path), Undoable(name="a"), Undoable(name="never")
    )
    engine = load(flow)

    def cancel(state: Any, details: dict[str, Any]) -> None:
        if details["atom_name"] == "a" and state == states.SUCCESS:
            engine.cancel("operator said stop")

    engine.atom_notifier.register(states.SUCCESS, cancel)
    with pytest.raises(OtherBoomError):
        engine.run()
    engine.atom_notifier.deregister(states.SUCCESS, cancel)
    engine.retry_reverts()
    with pytest.raises(exceptions.Cancelled, match="operator said stop"):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("first") == states.REVERTED
    assert engine.storage.get_atom_state("never") == states.PENDING


def test_reset_after_a_failed_revert_runs_the_flow_from_the_start(load: Any, tmp_path: Path) -> None:
    engine = load(order_flow(tmp_path))
    with pytest.raises(OtherBoomError):
        engine.run()
    engine.reset()
    capture = Capture(engine)
    with pytest.raises(BoomError):  # the revert of stubborn succeeds this time
        engine.run()
    assert capture.executed("first") == 1 and capture.executed("bad") == 1
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("first") == states.REVERTED


def test_retry_reverts_of_a_scope_beside_a_branch_that_carries_on(load: Any, tmp_path: Path) -> None:
    # default options: the scope that gave up is reverted, the branch beside it finishes,
    # and the flow ends REVERTED once both are done
    scope = linear_flow.Flow("scope", retry=retry.AlwaysRevert(name="give_up")).add(
        stubborn(tmp_path), Fail(name="bad")
    )
    chain = linear_flow.Flow("chain").add(Undoable(name="c1"), Undoable(name="c2"), Undoable(name="c3"))
    engine = load(graph_flow.Flow("g").add(scope, chain))
    with pytest.raises(OtherBoomError):
        engine.run()
    engine.retry_reverts()
    assert engine.storage.get_flow_state() == states.RUNNING
    with pytest.raises(BoomError):
        engine.run()
    assert engine.storage.get_flow_state() == states.REVERTED
    for name in ("give_up", "stubborn", "bad"):
        assert engine.storage.get_atom_state(name) == states.REVERTED
    for name in ("c1", "c2", "c3"):
        assert engine.storage.get_atom_state(name) == states.SUCCESS
