"""The service side: resources are created and their targets set inside the caller's transaction."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flowkit import exceptions as exc
from flowkit.reconcile import Resources, ResourceStatus
from tests.persistence.conftest import mysql_url, postgres_url  # noqa: F401  (fixtures)


def test_create_and_set_target_record_states_and_generations(resources: Resources) -> None:
    made = resources.create("public_ip", "ip-1", target="attached", facts={"server": "vm-1"})
    assert (made.current, made.target, made.generation, made.observed_generation) == ("absent", "attached", 1, 0)
    assert made.status is ResourceStatus.CONVERGING and made.facts == {"server": "vm-1"}
    moved = resources.set_target("public_ip", "ip-1", "absent")
    # Back at the current state with nothing in flight: converged at the new generation.
    assert (moved.target, moved.generation, moved.observed_generation, moved.status) == (
        "absent", 2, 2, ResourceStatus.CONVERGED,
    )  # fmt: skip
    # The same target again is no change.
    assert resources.set_target("public_ip", "ip-1", "absent").generation == 2
    assert resources.get("public_ip", "ip-1") == moved
    assert [r.id for r in resources.list(status="converged")] == ["ip-1"]
    assert resources.counts("public_ip")[ResourceStatus.CONVERGED] == 1


def test_writes_join_the_callers_transaction(resources: Resources, backend: object) -> None:
    with resources.begin() as conn:
        resources.create("public_ip", "kept", connection=conn)
        resources.set_target("public_ip", "kept", "detached", connection=conn)
    with pytest.raises(RuntimeError), resources.begin() as conn:
        resources.create("public_ip", "gone", target="attached", connection=conn)
        assert resources.get("public_ip", "gone", connection=conn).target == "attached"
        raise RuntimeError("the service's own write failed")
    assert [r.id for r in resources.list()] == ["kept"]
    assert resources.get("public_ip", "kept").generation == 2


def test_bad_input_is_refused_and_nothing_is_written(resources: Resources) -> None:
    with pytest.raises(exc.UnknownKind, match="no reconciler is registered for kind 'volume'.*known: public_ip"):
        resources.create("volume", "v-1")
    with pytest.raises(ValueError, match=r"resource public_ip/ip-1: target: 'gone' is not a state of kind 'public_ip'"):
        resources.create("public_ip", "ip-1", target="gone")
    with pytest.raises(TypeError, match=r"facts of public_ip/ip-1\['when'\]: a datetime is not JSON"):
        import datetime

        resources.create("public_ip", "ip-1", facts={"when": datetime.datetime.now()})
    with pytest.raises(ValueError, match="NaN and infinities are refused"):
        resources.create("public_ip", "ip-1", facts=[float("nan")])
    with pytest.raises(ValueError, match="bytes of JSON, more than the 1048576 allowed"):
        resources.create("public_ip", "ip-1", facts="x" * (1 << 20))
    with pytest.raises(ValueError, match="id must be a non-empty string of at most 190"):
        resources.create("public_ip", "x" * 191)
    assert resources.list() == []
    resources.create("public_ip", "ip-1")
    with pytest.raises(exc.ResourceExists, match="resource public_ip/ip-1 exists already"):
        resources.create("public_ip", "ip-1", target="attached")
    with pytest.raises(exc.NotFound, match="no resource public_ip/ip-2"):
        resources.set_target("public_ip", "ip-2", "attached")
    with pytest.raises(exc.InvalidState, match="is converged, not broken or unreachable"):
        resources.retry("public_ip", "ip-1")
    assert resources.get("public_ip", "ip-1").target == "absent"


def test_a_target_with_no_path_is_unreachable_with_the_reason(resources: Resources) -> None:
    from flowkit.reconcile import Reconciler, ReconcilerRegistry, Rule

    registry = ReconcilerRegistry()
    registry.add(
        Reconciler("disk", states=["new", "formatted", "shredded"], rules=[Rule("shred", "formatted", "shredded", "f")])
    )
    disks = Resources(resources.backend, reconcilers=registry)
    disk = disks.create("disk", "d1", current="formatted", target="new")
    assert disk.status is ResourceStatus.UNREACHABLE
    assert disk.reason == "no rule of kind 'disk' goes from 'formatted' toward 'new'"
    assert disk.observed_generation == disk.generation == 1
    again = disks.set_target("disk", "d1", "shredded")
    assert (again.status, again.reason, again.observed_generation) == (ResourceStatus.CONVERGING, None, 1)


def test_the_migration_makes_the_tables_on_every_server(resources: Resources, backend: object) -> None:
    resources.create("public_ip", "ip-1")
    inspector = sa.inspect(resources.backend.engine)
    prefix = resources.backend.table_prefix
    assert {prefix + "resources", prefix + "resource_operations"} <= set(inspector.get_table_names())
    assert prefix + "resources_status_idx" in {i["name"] for i in inspector.get_indexes(prefix + "resources")}
    assert resources.backend.schema_revisions() == ({"0006"}, {"0006"})


def test_a_tampered_row_is_reported_not_used(resources: Resources) -> None:
    resources.create("public_ip", "ip-1")
    t = resources.tables.resources
    with resources.begin() as conn:
        conn.execute(sa.update(t).values(facts="{not json", status="converged"))
    with pytest.raises(exc.CorruptLogbook, match="resource public_ip/ip-1: facts is not JSON"):
        resources.get("public_ip", "ip-1")
