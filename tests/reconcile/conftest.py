"""Databases and reconcilers for the reconciliation tests.

``db_url`` is an SQLite file, or (marked ``postgres``/``mysql``) a server
database with a table prefix of the test's own, dropped afterwards.  The
``public_ip`` reconciler is the issue's example: attach and detach an address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.reconcile import Reconciler, ReconcilerRegistry, Resources, Rule
from tests.persistence.conftest import drop_tables, unique_prefix

SERVERS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


def public_ip(**options: object) -> Reconciler:
    """absent -> detached (allocate) -> attached (attach), and back (detach, release)."""
    return Reconciler(
        "public_ip",
        states=["absent", "detached", "attached"],
        rules=[
            Rule("allocate", "absent", "detached", flow="tests.reconcile.allocate"),
            Rule("allocate_for_attach", "absent", "attached", flow="tests.reconcile.allocate", leads_to="detached"),
            Rule("attach", "detached", "attached", flow="tests.reconcile.attach", **options),  # type: ignore[arg-type]
            Rule("detach", "attached", "detached", flow="tests.reconcile.detach"),
            Rule("detach_for_release", "attached", "absent", flow="tests.reconcile.detach", leads_to="detached"),
            Rule("release", "detached", "absent", flow="tests.reconcile.release"),
        ],
    )


@pytest.fixture
def registry() -> ReconcilerRegistry:
    registry = ReconcilerRegistry()
    registry.add(public_ip())
    return registry


@pytest.fixture(params=SERVERS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(url, table_prefix)`` of a database of the test's own."""
    if request.param == "sqlite":
        yield "sqlite:///%s" % (tmp_path / "flowkit.db"), "flowkit_"
        return
    url = request.getfixturevalue(request.param + "_url")
    prefix = unique_prefix()
    yield url, prefix
    drop_tables(url, prefix)


@pytest.fixture
def backend(db_url: tuple[str, str]) -> Iterator[SQLAlchemyBackend]:
    backend = SQLAlchemyBackend(db_url[0], table_prefix=db_url[1])
    yield backend
    backend.close()


@pytest.fixture
def resources(backend: SQLAlchemyBackend, registry: ReconcilerRegistry) -> Resources:
    return Resources(backend, reconcilers=registry)
