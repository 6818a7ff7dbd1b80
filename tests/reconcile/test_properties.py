"""Error counts, rollbacks and generations follow a model through seeded random histories.

Operations' jobs are ended here by hand (claimed and consumed with SUCCESS or
REVERTED) so a history is a plain sequence: target changes, rollback changes,
operation ends and retries, in a random order from a fixed seed, each
followed by one driver step.  After every step each resource must be what the
model says: its states, generation, observed generation, error counts, status
and the operation in flight.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from typing import Any

import pytest

import tests.reconcile.flows  # noqa: F401  (the operations' factories)
from flowkit.jobs.backends.impl_sql import SQLJobBoard
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.reconcile import Driver, Reconciler, ReconcilerRegistry, Resources, ResourceStatus
from tests.persistence.conftest import mysql_url, postgres_url  # noqa: F401  (fixtures)
from tests.reconcile.conftest import public_ip

STATES = ("absent", "detached", "attached")


@dataclasses.dataclass
class Model:
    """What one resource should be."""

    current: str = "absent"
    target: str = "absent"
    rollback: str | None = None
    generation: int = 1
    observed: int = 1
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    status: ResourceStatus = ResourceStatus.CONVERGED
    running: Any = None  # the rule in flight

    def plan(self, rec: Reconciler) -> None:
        status, _, rule = rec.plan(self.current, self.target, None)
        self.status = status
        if status is ResourceStatus.CONVERGING:
            self.running = rule
        else:
            self.observed = self.generation

    def set_target(self, rec: Reconciler, target: str) -> None:
        if target == self.target:
            return
        self.target, self.generation = target, self.generation + 1
        if self.running is None and self.status is not ResourceStatus.BROKEN:
            self.plan(rec)

    def finish(self, rec: Reconciler, ok: bool) -> None:
        rule, self.running = self.running, None
        if ok:
            self.current = rule.leads_to
            self.errors.pop(rule.name, None)
        else:
            self.errors[rule.name] = self.errors.get(rule.name, 0) + 1
            if self.errors[rule.name] >= rule.max_errors:
                if self.rollback is not None and self.rollback != self.target:
                    self.target, self.generation, self.errors = self.rollback, self.generation + 1, {}
                else:
                    self.status, self.observed = ResourceStatus.BROKEN, self.generation
                    return
        self.plan(rec)

    def retry(self, rec: Reconciler) -> None:
        self.errors = {}
        if self.running is None:
            self.plan(rec)
        else:
            self.status = ResourceStatus.CONVERGING


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_histories_follow_the_model(seed: int, tmp_path: Any) -> None:
    rng = random.Random(seed)
    rec = Reconciler(
        "public_ip",
        states=STATES,
        rules=[dataclasses.replace(rule, max_errors=rng.randint(2, 3)) for rule in public_ip().rules],
    )
    registry = ReconcilerRegistry()
    registry.add(rec)
    backend = SQLAlchemyBackend("sqlite:///%s" % (tmp_path / "flowkit.db"))
    board = SQLJobBoard("p-%s" % uuid.uuid4().hex[:8], persistence=backend).connect()
    try:
        driver = Driver(board, ["public_ip"], reconcilers=registry)
        store = Resources(backend, reconcilers=registry)
        ids = ["ip-%d" % i for i in range(4)]
        models = {i: Model() for i in ids}
        for resource_id in ids:
            store.create("public_ip", resource_id)
        changes = dict.fromkeys(ids, 0)
        seen: set[str] = set()  # which paths the history took, so a history that misses them fails
        for step in range(250):
            resource_id = rng.choice(ids)
            m = models[resource_id]
            action = rng.random()
            if action < 0.35:
                target = rng.choice(STATES)
                changes[resource_id] += target != m.target
                store.set_target("public_ip", resource_id, target)
                m.set_target(rec, target)
            elif action < 0.45:
                m.rollback = rng.choice((None, *STATES))
                store.set_target("public_ip", resource_id, m.target, rollback=m.rollback)
            elif action < 0.9:
                found = store.get("public_ip", resource_id)
                if found.job is None:
                    continue
                ok = rng.random() < 0.5
                claim = board.claim(found.job, "tester")
                board.consume(found.job, "tester", token=claim.token, outcome="SUCCESS" if ok else "REVERTED")
                rolled_back = m.rollback is not None and m.rollback != m.target
                had_errors = bool(m.errors.get(m.running.name))
                m.finish(rec, ok)
                if not ok and rolled_back and m.errors == {} and m.target == m.rollback:
                    changes[resource_id] += 1
                    seen.add("rolled back")
                seen.add("reset" if ok and had_errors else "failed" if not ok else "succeeded")
                if m.status is ResourceStatus.BROKEN:
                    seen.add("broken")
            elif m.status in (ResourceStatus.BROKEN, ResourceStatus.UNREACHABLE):
                store.retry("public_ip", resource_id)
                m.retry(rec)
            driver.step()
            for rid, model in models.items():
                got = store.get("public_ip", rid)
                want = (
                    model.current,
                    model.target,
                    model.generation,
                    model.observed,
                    model.errors,
                    model.status,
                    model.running.name if model.running is not None else None,
                )
                have = (
                    got.current,
                    got.target,
                    got.generation,
                    got.observed_generation,
                    dict(got.errors),
                    got.status,
                    got.operation,
                )
                assert have == want, "seed %d, step %d, %s" % (seed, step, rid)
                # The generation counts the target changes (rollbacks included), nothing else.
                assert got.generation == 1 + changes[rid], "seed %d, step %d, %s" % (seed, step, rid)
                if got.status is ResourceStatus.CONVERGED:
                    assert got.observed_generation == got.generation and got.current == got.target
        assert {"rolled back", "reset", "failed", "succeeded", "broken"} <= seen, seen
    finally:
        board.close()
        backend.close()
