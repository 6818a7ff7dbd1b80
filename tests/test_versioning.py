"""Factory versions and their migrations, and what a migration that does not fit says.

A flow run to a suspend (in this process: what the check compares does not depend on how
the run stopped; ``test_versioned_resume.py`` kills real processes) is resumed by a factory
registered with a later version, whose declared migrations apply in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowkit import states
from flowkit.engines import load_from_detail, load_from_factory
from flowkit.exceptions import FlowChanged
from flowkit.factories import FactoryRegistry
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.task import Task
from flowkit.versioning import CHANGES_KEY, Migration

RUNS: list[str] = []
NAMES = {"second": "second"}


class Step(Task):
    def execute(self, **inputs: Any) -> str:
        RUNS.append(self.name)
        return self.name


def make(tag: str) -> linear_flow.Flow:
    return linear_flow.Flow("versioned").add(
        Step("first", provides="a"), Step(NAMES["second"], requires=["a"], provides="b"), Step("third", requires=["b"])
    )


def _suspended(tmp_path: Path, registry: FactoryRegistry) -> tuple[Any, str]:
    backend = fetch("sqlite:///%s" % (tmp_path / "logbook.db",))
    engine = load_from_factory(make, ["x"], backend=backend, factories=registry)

    def suspend(state: Any, details: dict[str, Any]) -> None:
        if state == states.SUCCESS and details["atom_name"] == "second":
            engine.suspend()

    engine.atom_notifier.register("*", suspend)
    engine.run()
    return backend, engine.flow_detail.uuid


@pytest.fixture(autouse=True)
def _reset() -> Any:
    RUNS.clear()
    NAMES["second"] = "second"
    yield
    NAMES["second"] = "second"


def _load(backend: Any, uuid: str, registry: FactoryRegistry, **options: Any) -> Any:
    with backend.get_connection() as conn:
        fd = conn.get_flow_details(uuid)
    return load_from_detail(fd, backend=backend, factories=registry, **options)


def test_a_factorys_declared_migrations_apply_from_the_recorded_version(tmp_path: Path) -> None:
    old = FactoryRegistry(entry_points=False)
    old.register(make, "versioned", version=1)
    backend, uuid = _suspended(tmp_path, old)
    with backend.get_connection() as conn:
        assert conn.get_flow_details(uuid).meta["factory"]["version"] == 1
    NAMES["second"] = "second_v3"
    new = FactoryRegistry(entry_points=False)
    with pytest.raises(FlowChanged, match="'second'"):  # version 3 without its migrations
        new.register(make, "versioned", version=3)
        _load(backend, uuid, new)
    new = FactoryRegistry(entry_points=False)
    new.register(
        make,
        "versioned",
        version=3,
        migrations={1: Migration(rename={"second": "second_v2"}), 2: Migration(rename={"second_v2": "second_v3"})},
    )
    RUNS.clear()
    engine = _load(backend, uuid, new)
    engine.run()
    assert RUNS == ["third"]  # first and second (now second_v3) are not run again
    with backend.get_connection() as conn:
        fd = conn.get_flow_details(uuid)
    assert fd.meta["factory"]["version"] == 3
    assert fd.meta[CHANGES_KEY][-1]["migration"]["rename"] == {"second": "second_v3"}
    assert fd.find_by_name("second_v3") is not None and fd.find_by_name("second_v3").results == "second"


def test_a_flow_detail_from_newer_code_is_refused(tmp_path: Path) -> None:
    newer = FactoryRegistry(entry_points=False)
    newer.register(make, "versioned", version=4)
    backend, uuid = _suspended(tmp_path, newer)
    older = FactoryRegistry(entry_points=False)
    older.register(make, "versioned", version=2)
    with pytest.raises(ValueError, match="version 2 here, but the flow detail was built by its version 4"):
        _load(backend, uuid, older)


def test_a_migration_that_does_not_fit_is_refused_naming_the_atom(tmp_path: Path) -> None:
    registry = FactoryRegistry(entry_points=False)
    registry.register(make, "versioned")
    backend, uuid = _suspended(tmp_path, registry)
    with pytest.raises(ValueError, match="cannot rename atom 'nope': the logbook has no atom of that name"):
        _load(backend, uuid, registry, migrate=Migration(rename={"nope": "second"}))
    with pytest.raises(ValueError, match="cannot drop atom 'first': the flow still has it"):
        _load(backend, uuid, registry, migrate=Migration(drop=["first"]))
    with pytest.raises(ValueError, match="cannot re-run atom 'nope': the flow has no atom of that name"):
        _load(backend, uuid, registry, migrate=Migration(rerun=["nope"]))
    # Nothing was changed by the refusals: the resume goes on as stored.
    RUNS.clear()
    _load(backend, uuid, registry).run()
    assert RUNS == ["third"]


def test_declaring_versions_is_checked() -> None:
    registry = FactoryRegistry(entry_points=False)
    with pytest.raises(ValueError, match="positive int"):
        registry.register(make, "a", version=0)
    with pytest.raises(ValueError, match="keyed by an older version"):
        registry.register(make, "b", version=2, migrations={2: Migration(drop=["x"])})
    with pytest.raises(TypeError, match="must be a flowkit.versioning.Migration"):
        registry.register(make, "c", version=2, migrations={1: {"drop": ["x"]}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="declares migrations but no version"):
        registry.register(make, "d", migrations={1: Migration()})
    with pytest.raises(TypeError, match="not the string"):
        Migration(drop="first")  # type: ignore[arg-type]
