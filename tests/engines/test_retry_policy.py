"""Retry policies on atoms, in every engine mode: durable backoffs, attempt history, BROKEN.

Time is a :class:`VirtualClock`.  A task's attempt is read from its idempotency key
(``<atom uuid>-<attempt>``), which each policy attempt changes, so the tasks behave the same
in this process, in a thread pool and on Dask workers.
"""

from __future__ import annotations

from typing import Any

import pytest

import flowkit
from flowkit import RetryPolicy, states
from flowkit import exceptions as exc
from flowkit.patterns import linear_flow, unordered_flow
from flowkit.persistence.backends.impl_memory import MemoryBackend
from flowkit.retry import Times
from flowkit.task import Task
from flowkit.testing.clock import VirtualClock
from flowkit.types.failure import Failure
from tests.support import BoomError, OtherBoomError, Undoable


def attempt_of(task: Task) -> int:
    return int(task.context.idempotency_key.rsplit("-", 1)[1])


class Flaky(Task):
    """Fail with BoomError while its attempt (0-based) is below the injected ``fails``; then return it."""

    def execute(self, fails: int) -> int:
        attempt = attempt_of(self)
        if attempt < fails:
            raise BoomError("%s attempt %d" % (self.name, attempt))
        return attempt

    def revert(self, **kwargs: Any) -> None:
        pass


class Other(Task):
    """Always fail with OtherBoomError."""

    def execute(self) -> None:
        raise OtherBoomError(self.name)


def stored(backend: MemoryBackend, engine: Any) -> Any:
    with backend.get_connection() as conn:
        return conn.get_flow_details(engine.flow_detail.uuid)


def flaky(fails: int, policy: RetryPolicy | None = None, name: str = "flaky") -> Flaky:
    return Flaky(name=name, provides=name, inject={"fails": fails}, retry_policy=policy)


def test_the_backoff_deadlines_are_exact_and_each_attempt_is_recorded(load: Any) -> None:
    clock = VirtualClock()
    backend = MemoryBackend()
    policy = RetryPolicy(max_attempts=5, initial_delay=10, backoff=3, max_delay=50)
    engine = load(linear_flow.Flow("f").add(flaky(3, policy)), backend=backend, clock=clock)
    start = clock.now()
    deadlines = []
    for expected_delay in (10, 30, 50):  # 10 * 3**n, capped at 50
        engine.run(park=True)
        fd = stored(backend, engine)
        assert fd.state == states.WAITING
        ad = fd.find_by_name("flaky")
        assert ad.state == states.WAITING
        until = ad.meta["wait"]["until"]
        assert until == clock.now() + expected_delay
        assert fd.meta["wake"]["due"] == until
        deadlines.append(until - start)
        clock.set(until)
    engine.run(park=True)
    assert deadlines == [10, 40, 90]
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("flaky") == 3
    ad = stored(backend, engine).find_by_name("flaky")
    assert [a["attempt"] for a in ad.meta["attempts"]] == [1, 2, 3]
    assert [Failure.from_dict(a["failure"]).exception_str for a in ad.meta["attempts"]] == [
        "flaky attempt %d" % n for n in range(3)
    ]
    assert [a["ended"] - start for a in ad.meta["attempts"]] == [0, 10, 40]
    assert all(a["started"] == a["ended"] for a in ad.meta["attempts"])  # the virtual clock stood still
    assert ad.meta["errors"] == 0  # reset by the success
    assert ad.meta["attempt"] == 3


def test_a_short_backoff_blocks_run_until_the_clock_passes_it(load: Any) -> None:
    clock = VirtualClock()
    engine = load(flaky(2, RetryPolicy(initial_delay=5)), clock=clock)
    import threading

    done = threading.Event()
    thread = threading.Thread(target=lambda: (engine.run(), done.set()))
    thread.start()
    from tests.support import wait_until

    wait_until(lambda: engine.storage.get_flow_state() == states.WAITING, "the first backoff")
    clock.advance(5)
    wait_until(lambda: engine.flow_detail.find_by_name("flaky").meta.get("errors") == 2, "the second failure")
    clock.advance(10)
    thread.join(timeout=30)
    assert done.is_set()
    assert engine.storage.fetch("flaky") == 2


def test_jitter_stays_within_its_bounds(load: Any) -> None:
    clock = VirtualClock()
    policy = RetryPolicy(max_attempts=30, initial_delay=100, backoff=1, jitter=0.25)
    engine = load(flaky(12, policy), clock=clock)
    delays = []
    for _ in range(12):
        engine.run(park=True)
        until = engine.flow_detail.find_by_name("flaky").meta["wait"]["until"]
        delays.append(until - clock.now())
        clock.set(until)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert all(75 <= d <= 125 for d in delays), delays
    assert len(set(delays)) > 1  # jittered, not constant
    for u, expected in ((-1, 75), (0, 100), (1, 125)):
        assert policy.delay(1, u) == expected


def test_a_non_retryable_error_fails_at_once_and_reverts(load: Any) -> None:
    clock = VirtualClock()
    policy = RetryPolicy(max_attempts=5, non_retryable=(OtherBoomError,))
    flow = linear_flow.Flow("f").add(Undoable(name="u"), Other(name="o", retry_policy=policy))
    engine = load(flow, clock=clock)
    with pytest.raises(OtherBoomError):
        engine.run(park=True)
    assert engine.storage.get_flow_state() == states.REVERTED
    ad = engine.flow_detail.find_by_name("o")
    assert len(ad.meta["attempts"]) == 1
    assert engine.storage.get_atom_state("u") == states.REVERTED


def test_retry_on_by_name_and_retry_if_are_honoured(load: Any) -> None:
    clock = VirtualClock()
    seen: list[str] = []

    def only_first(failure: Failure) -> bool:
        seen.append(failure.exception_str)
        return failure.exception_str.endswith("attempt 0")

    policy = RetryPolicy(max_attempts=5, initial_delay=1, retry_on=("BoomError",), retry_if=only_first)
    engine = load(flaky(3, policy), clock=clock)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.WAITING
    clock.advance(1)
    with pytest.raises(BoomError, match="attempt 1"):
        engine.run(park=True)
    assert seen == ["flaky attempt 0", "flaky attempt 1"]
    # retry_on that does not match: not retried
    engine = load(Other(name="o", retry_policy=RetryPolicy(retry_on=(BoomError,))), clock=clock)
    with pytest.raises(OtherBoomError):
        engine.run(park=True)
    assert len(engine.flow_detail.find_by_name("o").meta["attempts"]) == 1


def test_a_retry_if_that_raises_means_no_retry_and_the_failure_says_so(load: Any) -> None:
    def broken_predicate(failure: Failure) -> bool:
        raise KeyError("oops")

    engine = load(flaky(3, RetryPolicy(retry_if=broken_predicate)), clock=VirtualClock())
    with pytest.raises(
        exc.ExecutionFailure, match=r"'flaky' of flow .*BoomError: flaky attempt 0.*retry_if raised KeyError"
    ):
        engine.run(park=True)
    assert engine.storage.get_flow_state() == states.REVERTED


def test_exhausted_with_revert_hands_the_last_failure_on(load: Any) -> None:
    clock = VirtualClock()
    flow = linear_flow.Flow("f").add(Undoable(name="u"), flaky(9, RetryPolicy(max_attempts=2, initial_delay=1)))
    engine = load(flow, clock=clock)
    engine.run(park=True)
    clock.advance(1)
    with pytest.raises(BoomError, match="attempt 1"):
        engine.run(park=True)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("u") == states.REVERTED
    assert engine.flow_detail.find_by_name("flaky").meta["errors"] == 2


def test_broken_ends_the_flow_without_reverting_and_retry_runs_it_again(load: Any) -> None:
    clock = VirtualClock()
    backend = MemoryBackend()
    policy = RetryPolicy(max_attempts=2, initial_delay=1, on_exhausted="broken")
    flow = linear_flow.Flow("f").add(Undoable(name="u"), flaky(2, policy), Undoable(name="after"))
    engine = load(flow, backend=backend, clock=clock)
    engine.run(park=True)
    clock.advance(1)
    with pytest.raises(exc.Broken, match=r"flow 'f' is BROKEN: atom 'flaky' failed 2 times") as caught:
        engine.run(park=True)
    assert caught.value.flow_name == "f" and caught.value.atom_names == ["flaky"]
    fd = stored(backend, engine)
    assert fd.state == states.BROKEN
    assert {ad.name: ad.state for ad in fd} == {"u": "SUCCESS", "flaky": "BROKEN", "after": "PENDING"}
    # running it again changes nothing until an operator decides
    with pytest.raises(exc.Broken):
        engine.run(park=True)
    assert stored(backend, engine).find_by_name("after").state == states.PENDING
    with pytest.raises(exc.InvalidState, match="no BROKEN atom 'nope'"):
        engine.retry("nope")
    engine.retry()
    assert stored(backend, engine).find_by_name("flaky").state == states.PENDING
    engine.run(park=True)  # attempt 2 succeeds (the key changed again)
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("flaky") == 2
    assert engine.storage.get_atom_state("after") == states.SUCCESS


def test_revert_undoes_a_broken_flow(load: Any) -> None:
    policy = RetryPolicy(max_attempts=1, on_exhausted="broken")
    flow = linear_flow.Flow("f").add(Undoable(name="u"), flaky(3, policy))
    engine = load(flow, clock=VirtualClock())
    with pytest.raises(exc.Broken):
        engine.run(park=True)
    engine.revert()
    with pytest.raises(BoomError):
        engine.run(park=True)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("u") == states.REVERTED


def test_broken_lets_in_flight_atoms_finish_and_starts_nothing_else(load: Any) -> None:
    policy = RetryPolicy(max_attempts=1, on_exhausted="broken")
    flow = linear_flow.Flow("f").add(
        unordered_flow.Flow("both").add(flaky(3, policy), Undoable(name="side")),
        Undoable(name="after"),
    )
    engine = load(flow, clock=VirtualClock())
    with pytest.raises(exc.Broken):
        engine.run(park=True)
    assert engine.storage.get_atom_state("side") == states.SUCCESS
    assert engine.storage.get_atom_state("after") == states.PENDING


def test_the_policy_retries_first_then_the_controller_is_asked(load: Any) -> None:
    clock = VirtualClock()
    policy = RetryPolicy(max_attempts=2, initial_delay=1)
    # 4 failures: the policy's 2 attempts, then Times retries the scope: 2 more attempts.
    inner = linear_flow.Flow("scope", retry=Times(2, name="times")).add(flaky(3, policy))
    engine = load(inner, clock=clock)
    engine.run(park=True)  # attempt 0 fails, backoff
    assert engine.storage.get_atom_state("flaky") == states.WAITING
    clock.advance(1)
    engine.run(park=True)  # attempt 1 fails: exhausted, Times retries; attempt 2 fails, backoff
    ad = engine.flow_detail.find_by_name("flaky")
    assert ad.state == states.WAITING
    assert len(engine.flow_detail.find_by_name("times").results) == 2
    clock.advance(1)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.SUCCESS
    assert engine.storage.fetch("flaky") == 3


def test_a_flow_default_applies_to_nested_atoms_unless_they_set_their_own(load: Any) -> None:
    clock = VirtualClock()
    flow_policy = RetryPolicy(max_attempts=3, initial_delay=100)
    own = RetryPolicy(max_attempts=3, initial_delay=7)
    flow = linear_flow.Flow("outer", retry_policy=flow_policy).add(
        unordered_flow.Flow("inner").add(flaky(1, name="inherits"), flaky(1, own, name="own")),
    )
    engine = load(flow, clock=clock)
    engine.run(park=True)
    now = clock.now()
    assert engine.flow_detail.find_by_name("inherits").meta["wait"]["until"] == now + 100
    assert engine.flow_detail.find_by_name("own").meta["wait"]["until"] == now + 7
    # the engine default fills in where no flow sets one; the flow's wins over it
    engine2 = load(
        linear_flow.Flow("g").add(flaky(1, name="a"), linear_flow.Flow("h", retry_policy=own).add(flaky(1, name="b"))),
        clock=clock,
        retry_policy=RetryPolicy(initial_delay=3),
    )
    engine2.run(park=True)
    assert engine2.flow_detail.find_by_name("a").meta["wait"]["until"] == clock.now() + 3
    clock.advance(3)
    engine2.run(park=True)
    assert engine2.flow_detail.find_by_name("b").meta["wait"]["until"] == clock.now() + 7


def test_a_parked_backoff_resumes_at_its_original_due_time_in_a_new_engine(load: Any) -> None:
    clock = VirtualClock()
    backend = MemoryBackend()
    policy = RetryPolicy(initial_delay=3600)

    def build() -> Any:
        return linear_flow.Flow("f").add(flaky(1, policy), Undoable(name="after"))

    first = load(build(), backend=backend, clock=clock)
    first.run(park=True)
    due = stored(backend, first).find_by_name("flaky").meta["wait"]["until"]
    clock.advance(1800)  # the process "died" half-way through the backoff
    again = load(build(), backend=backend, clock=clock, flow_detail=stored(backend, first))
    again.run(park=True)
    fd = stored(backend, again)
    assert fd.state == states.WAITING
    assert fd.find_by_name("flaky").meta["wait"]["until"] == due
    assert fd.meta["wake"]["due"] == due
    clock.set(due)
    again.run(park=True)
    assert again.storage.get_flow_state() == states.SUCCESS
    assert again.storage.fetch("flaky") == 1


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_attempts": 0}, ValueError, "max_attempts must be at least 1"),
        ({"max_attempts": 1.5}, TypeError, "max_attempts must be an int"),
        ({"initial_delay": -1}, ValueError, "initial_delay must be a finite number >= 0"),
        ({"max_delay": -1}, ValueError, "max_delay must be a finite number >= 0"),
        ({"backoff": 0.5}, ValueError, "backoff must be a finite number >= 1"),
        ({"jitter": 1.5}, ValueError, r"jitter must be in \[0, 1\]"),
        ({"jitter": -0.1}, ValueError, "jitter must be a finite number >= 0"),
        ({"retry_if": "yes"}, TypeError, "retry_if must be callable"),
        ({"retry_on": (42,)}, TypeError, "retry_on must hold exception classes"),
        ({"on_exhausted": "explode"}, ValueError, "on_exhausted must be 'revert' or 'broken'"),
    ],
)
def test_bad_policies_are_refused_at_construction(options: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        RetryPolicy(**options)


def test_a_task_or_flow_given_something_else_names_itself() -> None:
    with pytest.raises(TypeError, match=r"atom 'charge': retry_policy must be a flowkit.RetryPolicy"):
        flaky(1, {"max_attempts": 3}, name="charge")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"flow 'f': retry_policy must be a flowkit.RetryPolicy"):
        linear_flow.Flow("f", retry_policy=3)  # type: ignore[arg-type]

    @flowkit.as_task(retry_policy=RetryPolicy(max_attempts=2))
    def charge() -> int:
        return 1

    assert charge().retry_policy == RetryPolicy(max_attempts=2)
    with pytest.raises(TypeError, match=r"atom 'c2': retry_policy"):
        charge("c2", retry_policy="x")  # type: ignore[arg-type]


def test_a_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]


def test_a_process_pool_runs_a_task_whose_policy_has_an_unpicklable_retry_if() -> None:
    # The engine applies the policy; the copy of the task shipped to a worker carries none.
    clock = VirtualClock()
    policy = RetryPolicy(initial_delay=1, retry_if=lambda failure: True)
    engine = flowkit.load(flaky(1, policy), engine="parallel", executor="processes", clock=clock)
    engine.run(park=True)
    assert engine.storage.get_flow_state() == states.WAITING
    clock.advance(1)
    engine.run(park=True)
    assert engine.storage.fetch("flaky") == 1


def test_a_failure_elsewhere_reverts_the_flow_even_while_an_atom_backs_off_or_fails_in_flight(load: Any) -> None:
    flow = linear_flow.Flow("f").add(
        unordered_flow.Flow("both").add(Other(name="o"), flaky(5, RetryPolicy(initial_delay=1))),
        Undoable(name="after"),
    )
    engine = load(flow, clock=VirtualClock())
    with pytest.raises((OtherBoomError, exc.WrappedFailure)):
        engine.run(park=True)
    assert engine.storage.get_flow_state() == states.REVERTED
    assert engine.storage.get_atom_state("after") == states.PENDING
    assert engine.storage.get_atom_state("flaky") in (states.PENDING, states.REVERTED)
