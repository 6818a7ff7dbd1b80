"""Resources for the dashboard tests, reconciled for real: one converged, one broken, one still converging.

``reconcile(url)`` creates them in the SQLite logbook at ``url`` and runs a
conductor with the reconciler's driver attached (the ``public_ip`` kind and
operations of ``tests/reconcile``) until the first two have settled: ip-ok
is allocated then attached (two operations that succeed), ip-broken's attach
fails every time (its facts say so) until it is BROKEN after three.  ip-later
is created once the driver has stopped, so it stays converging with no
operation.  The facts of ip-ok hold a password, for the masking tests.
"""

from __future__ import annotations

import threading
import uuid

import tests.reconcile.flows  # noqa: F401  (registers the operations' factories)
from flowkit.conductors import fetch as fetch_conductor
from flowkit.jobs.backends.impl_sql import SQLJobBoard
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.reconcile import Driver, ReconcilerRegistry, Resource, Resources, ResourceStatus
from tests.reconcile.conftest import public_ip
from tests.support import wait_until

KIND = "public_ip"


def reconcile(url: str) -> dict[str, Resource]:
    """Reconcile the three resources into ``url``; return them as stored at the end, by id."""
    registry = ReconcilerRegistry()
    registry.add(public_ip())
    backend = SQLAlchemyBackend(url)
    try:
        store = Resources(backend, reconcilers=registry)
        store.create(KIND, "ip-ok", target="attached", facts={"server": "vm-1", "password": "hunter2"})
        store.create(KIND, "ip-broken", current="detached", target="attached", facts={"fail": {"attach": -1}})
        board = SQLJobBoard("web-%s" % uuid.uuid4().hex[:8], persistence=backend, poll_interval=0.05).connect()
        conductor = fetch_conductor("blocking", "reconciler-1", board, persistence=backend, wait_timeout=0.05)
        driver = Driver(board, [KIND], reconcilers=registry, poll=0.05)
        runner = threading.Thread(target=driver.run, args=(conductor,), name="reconciler", daemon=True)
        runner.start()
        try:
            for resource_id in ("ip-ok", "ip-broken"):

                def settled(resource_id: str = resource_id) -> bool:
                    found = store.get(KIND, resource_id)
                    return found.status is not ResourceStatus.CONVERGING and found.job is None

                wait_until(settled, "resource %s/%s to settle" % (KIND, resource_id), timeout=60)
        finally:
            conductor.stop()
            runner.join(30)
            board.close()
        assert not runner.is_alive(), "the reconciler did not stop"
        store.create(KIND, "ip-later", target="detached")
        return {r.id: r for r in store.list(KIND)}
    finally:
        backend.close()
