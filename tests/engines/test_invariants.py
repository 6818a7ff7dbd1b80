"""Invariants over many generated graph flows, in every engine mode.

Each case is a random DAG (seeded, so every run checks the same flows) of tasks joined by
graph links, added in shuffled order. What must hold whatever the mode or timing: an atom
starts only after its predecessors succeeded; after a failure, everything that ran is
reverted, successors are reverted before their predecessors, and nothing downstream of the
failure ever starts.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from flowkit import retry, states
from flowkit.patterns import graph_flow, linear_flow
from tests.support import BoomError, Capture, Fail, FailUntil, Undoable

SEEDS = list(range(24))


def random_dag(seed: int) -> tuple[list[str], list[tuple[str, str]]]:
    rng = random.Random(seed)
    count = rng.randint(4, 14)
    names = ["n%02d" % i for i in range(count)]
    edges = [(names[i], names[j]) for i in range(count) for j in range(i + 1, count) if rng.random() < 0.25]
    return names, edges


def build(seed: int, failing: str | None) -> Any:
    names, edges = random_dag(seed)
    atoms = {name: (Fail(name=name) if name == failing else Undoable(name=name)) for name in names}
    order = list(names)
    random.Random(seed + 1000).shuffle(order)
    flow = graph_flow.Flow("dag%d" % seed).add(*[atoms[name] for name in order])
    for u, v in edges:
        flow.link(atoms[u], atoms[v])
    return flow


def assert_old_states_chain(capture: Capture) -> None:
    """Each atom event's ``old_state`` is the state that atom was last reported in."""
    last: dict[str, Any] = {}
    for state, details in capture.details:
        name = details["atom_name"]
        assert details["old_state"] == last.get(name, states.PENDING), (name, state, details["old_state"])
        last[name] = state


def relatives(edges: list[tuple[str, str]], start: str, forward: bool) -> set[str]:
    found: set[str] = set()
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for u, v in edges:
            a, b = (u, v) if forward else (v, u)
            if a == node and b not in found:
                found.add(b)
                frontier.append(b)
    return found


@pytest.mark.parametrize("seed", SEEDS)
def test_successful_dag_respects_every_link(load: Any, seed: int) -> None:
    names, edges = random_dag(seed)
    engine = load(build(seed, failing=None))
    capture = Capture(engine)
    engine.run()
    events = capture.events
    for name in names:
        assert engine.storage.get_atom_state(name) == states.SUCCESS
        assert capture.executed(name) == 1
    for u, v in edges:
        assert events.index((u, states.SUCCESS)) < events.index((v, states.RUNNING)), (u, v)
    assert_old_states_chain(capture)


@pytest.mark.parametrize("seed", SEEDS)
def test_failing_dag_reverts_what_ran_in_reverse_order(load: Any, seed: int) -> None:
    names, edges = random_dag(seed)
    failing = names[random.Random(seed + 2000).randrange(len(names))]
    engine = load(build(seed, failing=failing))
    capture = Capture(engine)
    with pytest.raises(BoomError, match=failing):
        engine.run()
    events = capture.events
    assert engine.storage.get_flow_state() == states.REVERTED
    ran = set(capture.names_in(states.RUNNING))
    for name in names:
        assert capture.executed(name) <= 1
        state = engine.storage.get_atom_state(name)
        if name in ran:
            assert state == states.REVERTED, name
        else:
            assert state == states.PENDING, name
    # the failing atom ran only after all its ancestors, which are therefore reverted
    assert failing in ran
    assert relatives(edges, failing, forward=False) <= ran
    # nothing downstream of the failure ever started
    assert not (relatives(edges, failing, forward=True) & ran)
    # nothing starts once one of its predecessors is being reverted
    for u, v in edges:
        if v in ran and (u, states.REVERTING) in events:
            assert events.index((v, states.RUNNING)) < events.index((u, states.REVERTING)), (u, v)
    # a predecessor's revert starts only after its successors' reverts finished
    for u, v in edges:
        if u in ran and v in ran:
            assert events.index((v, states.REVERTED)) < events.index((u, states.REVERTING)), (u, v)
    assert_old_states_chain(capture)


def build_with_retry(seed: int) -> tuple[Any, list[str], list[str]]:
    """A random DAG where one node is a subflow under Times(3) holding a task that fails
    twice. Returns the flow, the names outside the retried subflow, and those inside."""
    names, edges = random_dag(seed)
    retried = names[random.Random(seed + 3000).randrange(len(names))]
    nodes: dict[str, Any] = {}
    inside: list[str] = []
    for name in names:
        if name == retried:
            inside = [name + "_first", name + "_flaky"]
            nodes[name] = linear_flow.Flow(name, retry=retry.Times(3, name=name + "_retry", provides=name + "_n")).add(
                Undoable(name=inside[0]),
                FailUntil(name=inside[1], rebind={"attempt": name + "_n"}, inject={"good": 3}),
            )
        else:
            nodes[name] = Undoable(name=name)
    order = list(names)
    random.Random(seed + 4000).shuffle(order)
    flow = graph_flow.Flow("dag%d" % seed).add(*[nodes[name] for name in order])
    for u, v in edges:
        flow.link(nodes[u], nodes[v])
    return flow, [n for n in names if n != retried], inside


@pytest.mark.parametrize("seed", SEEDS)
def test_a_retried_subflow_in_a_dag_touches_nothing_else(load: Any, seed: int) -> None:
    flow, outside, inside = build_with_retry(seed)
    engine = load(flow)
    capture = Capture(engine)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    for name in outside:
        assert engine.storage.get_atom_state(name) == states.SUCCESS
        assert capture.executed(name) == 1, name
        assert capture.count(name, states.REVERTING) == 0, name
    assert capture.executed(inside[0]) == 3
    assert capture.executed(inside[1]) == 3
    assert engine.storage.get_atom_state(inside[1]) == states.SUCCESS
    assert_old_states_chain(capture)


@pytest.mark.parametrize("seed", SEEDS)
def test_suspending_a_dag_anywhere_then_resuming_runs_each_atom_once(load: Any, seed: int) -> None:
    names, edges = random_dag(seed)
    stop_after = random.Random(seed + 5000).randrange(1, len(names))
    engine = load(build(seed, failing=None))
    successes: list[str] = []

    def suspend_after_some(state: Any, details: dict[str, Any]) -> None:
        if state == states.SUCCESS:
            successes.append(details["atom_name"])
            if len(successes) == stop_after:
                engine.suspend()

    engine.atom_notifier.register("*", suspend_after_some)
    capture = Capture(engine)
    engine.run()
    after_first = {name: engine.storage.get_atom_state(name) for name in names}
    for name in names:
        # in-flight atoms finished; nothing is left half-done
        assert after_first[name] in (states.SUCCESS, states.PENDING), name
    if all(state == states.SUCCESS for state in after_first.values()):
        # the atoms in flight when suspension was asked for were the last ones
        assert engine.storage.get_flow_state() == states.SUCCESS
    else:
        assert engine.storage.get_flow_state() == states.SUSPENDED
    engine.atom_notifier.deregister("*", suspend_after_some)
    engine.run()
    assert engine.storage.get_flow_state() == states.SUCCESS
    events = capture.events
    for name in names:
        assert capture.executed(name) == 1, name
    for u, v in edges:
        assert events.index((u, states.SUCCESS)) < events.index((v, states.RUNNING)), (u, v)
    assert_old_states_chain(capture)
