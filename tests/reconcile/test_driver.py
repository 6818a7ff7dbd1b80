"""The engine side: a conductor with a driver attached moves resources to their targets and records why not."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.reconcile.flows  # noqa: F401  (registers the operations' factories)
from flowkit import exceptions as exc
from flowkit.conductors import fetch as fetch_conductor
from flowkit.jobs.backends.impl_sql import SQLJobBoard
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.reconcile import Driver, Reconciler, ReconcilerRegistry, Resource, Resources, ResourceStatus, Rule
from tests.persistence.conftest import mysql_url, postgres_url  # noqa: F401  (fixtures)
from tests.reconcile.flows import JOURNAL_ENV, journal_lines
from tests.support import wait_until


@dataclasses.dataclass
class Reconciling:
    resources: Resources
    driver: Driver
    board: SQLJobBoard
    journal: Path

    def settled(self, kind: str, resource_id: str) -> Resource:
        """The resource once it is CONVERGED, BROKEN or UNREACHABLE with nothing in flight."""

        def done() -> Resource | None:
            found = self.resources.get(kind, resource_id)
            return found if found.status is not ResourceStatus.CONVERGING and found.job is None else None

        return wait_until(done, "resource %s/%s to settle" % (kind, resource_id), timeout=30)


def _run(
    backend: SQLAlchemyBackend, registry: ReconcilerRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Reconciling]:
    journal = tmp_path / "journal"
    monkeypatch.setenv(JOURNAL_ENV, str(journal))
    board = SQLJobBoard("rec-%s" % uuid.uuid4().hex[:8], persistence=backend, poll_interval=0.05).connect()
    conductor = fetch_conductor("blocking", "c1", board, persistence=backend, wait_timeout=0.05)
    driver = Driver(board, ["public_ip"], reconcilers=registry, poll=0.05)
    runner = threading.Thread(target=driver.run, args=(conductor,), daemon=True)
    runner.start()
    try:
        yield Reconciling(Resources(backend, reconcilers=registry), driver, board, journal)
    finally:
        conductor.stop()
        runner.join(30)
        board.close()


@pytest.fixture
def reconciling(
    backend: SQLAlchemyBackend, registry: ReconcilerRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Reconciling]:
    yield from _run(backend, registry, tmp_path, monkeypatch)


def test_a_resource_is_driven_through_intermediate_states(reconciling: Reconciling) -> None:
    reconciling.resources.create("public_ip", "ip-1", target="attached")
    done = reconciling.settled("public_ip", "ip-1")
    assert (done.current, done.status, done.generation, done.observed_generation) == (
        "attached", ResourceStatus.CONVERGED, 1, 1,
    )  # fmt: skip
    history = reconciling.resources.operations("public_ip", "ip-1")
    assert [(op.rule, op.current, op.leads_to, op.outcome) for op in history] == [
        ("allocate_for_attach", "absent", "detached", "SUCCESS"),
        ("attach", "detached", "attached", "SUCCESS"),
    ]
    # Every operation's flow is in the logbook.
    with reconciling.board.db.get_connection() as conn:
        assert [conn.get_flow_details(op.flow).name for op in history] == [  # type: ignore[arg-type]
            "public_ip/ip-1: allocate_for_attach",
            "public_ip/ip-1: attach",
        ]


def test_failures_are_counted_and_reset_on_success(reconciling: Reconciling) -> None:
    reconciling.resources.create(
        "public_ip", "ip-1", current="detached", target="attached", facts={"fail": {"attach": 2}}
    )
    done = reconciling.settled("public_ip", "ip-1")
    assert (done.current, done.status, dict(done.errors), done.last_error) == (
        "attached", ResourceStatus.CONVERGED, {}, None,
    )  # fmt: skip
    outcomes = [op.outcome for op in reconciling.resources.operations("public_ip", "ip-1")]
    assert outcomes == ["REVERTED", "REVERTED", "SUCCESS"]
    errors = [op.error for op in reconciling.resources.operations("public_ip", "ip-1")]
    assert errors[0] == "attach: tests.reconcile.flows.OperationFailed: attach of public_ip/ip-1 failed (injected)"


def test_past_max_errors_the_resource_is_broken_until_retried(reconciling: Reconciling) -> None:
    resources = reconciling.resources
    resources.create("public_ip", "ip-1", current="detached", target="attached", facts={"fail": {"attach": -1}})
    done = reconciling.settled("public_ip", "ip-1")
    assert (done.current, done.status, dict(done.errors)) == ("detached", ResourceStatus.BROKEN, {"attach": 3})
    assert done.reason == (
        "attach failed 3 time(s) in a row (max_errors 3): attach: tests.reconcile.flows.OperationFailed: "
        "attach of public_ip/ip-1 failed (injected)"
    )
    assert len(resources.operations("public_ip", "ip-1")) == 3  # nothing more ran
    # A new target leaves it BROKEN; retry (with the fault fixed) goes on.
    assert resources.set_target("public_ip", "ip-1", "absent").status is ResourceStatus.BROKEN
    resources.set_target("public_ip", "ip-1", "attached")
    resources.set_facts("public_ip", "ip-1", {})
    assert resources.retry("public_ip", "ip-1").status is ResourceStatus.CONVERGING
    done = reconciling.settled("public_ip", "ip-1")
    assert (done.current, done.status, dict(done.errors), done.observed_generation) == (
        "attached", ResourceStatus.CONVERGED, {}, done.generation,
    )  # fmt: skip


def test_past_max_errors_a_rollback_state_becomes_the_target(reconciling: Reconciling) -> None:
    resources = reconciling.resources
    resources.create(
        "public_ip", "ip-1", current="detached", target="attached", rollback="absent", facts={"fail": {"attach": -1}}
    )
    done = reconciling.settled("public_ip", "ip-1")
    assert (done.current, done.target, done.status, done.generation) == (
        "absent",
        "absent",
        ResourceStatus.CONVERGED,
        2,
    )
    assert [op.rule for op in resources.operations("public_ip", "ip-1")] == ["attach"] * 3 + ["release"]


def test_cancel_by_target_lets_the_operation_finish_then_goes_back(reconciling: Reconciling, tmp_path: Path) -> None:
    resources = reconciling.resources
    gate = tmp_path / "gate"
    resources.create("public_ip", "ip-1", current="detached", target="attached", facts={"gate": str(gate)})
    wait_until(
        lambda: any(w[:2] == ["start", "public_ip/ip-1"] for w in journal_lines(str(reconciling.journal))),
        "attach to start",
    )
    moved = resources.set_target("public_ip", "ip-1", "detached")
    assert (moved.status, moved.operation, moved.generation) == (ResourceStatus.CONVERGING, "attach", 2)
    gate.touch()
    done = reconciling.settled("public_ip", "ip-1")
    assert (done.current, done.status, done.observed_generation) == ("detached", ResourceStatus.CONVERGED, 2)
    history = resources.operations("public_ip", "ip-1")
    assert [(op.rule, op.generation, op.outcome) for op in history] == [
        ("attach", 1, "SUCCESS"),
        ("detach", 2, "SUCCESS"),
    ]


def test_an_unreachable_target_is_not_looped_on(
    backend: SQLAlchemyBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ReconcilerRegistry()
    registry.add(
        Reconciler(
            "public_ip",
            states=["absent", "detached", "attached"],
            rules=[Rule("allocate", "absent", "detached", "tests.reconcile.allocate")],
        )
    )
    for running in _run(backend, registry, tmp_path, monkeypatch):
        made = running.resources.create("public_ip", "ip-1", target="attached")
        assert (made.status, made.reason) == (
            ResourceStatus.UNREACHABLE,
            "no rule of kind 'public_ip' goes from 'absent' toward 'attached'",
        )
        assert running.driver.step() == 0 and running.resources.operations("public_ip", "ip-1") == []


def test_a_driver_refuses_a_rule_whose_factory_is_unknown(backend: SQLAlchemyBackend) -> None:
    registry = ReconcilerRegistry()
    registry.add(Reconciler("disk", states=["a", "b"], rules=[Rule("go", "a", "b", "nowhere.to.be.found")]))
    board = SQLJobBoard("rec", persistence=backend).connect()
    try:
        with pytest.raises(exc.UnknownFactory, match="kind 'disk': rule 'go' names flow factory 'nowhere.to.be.found'"):
            Driver(board, ["disk"], reconcilers=registry)
        with pytest.raises(exc.UnknownKind, match="kind 'volume'"):
            Driver(board, ["volume"], reconcilers=registry)
    finally:
        board.close()
