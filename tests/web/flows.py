"""Flows for the dashboard tests: one that succeeds, one that fails, one that waits for a signal.

``populate(url)`` runs each once into the SQLite logbook at ``url`` and returns
their flow detail uuids.  The factories register themselves, so the web
server needs only ``--import tests.web.flows`` to draw their graphs.
"""

from __future__ import annotations

from typing import Any

from flowkit.engines import load_from_factory
from flowkit.factories import flow_factory
from flowkit.listeners.timing import DurationListener
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.policies import RetryPolicy
from flowkit.task import Task
from flowkit.waits import WaitFor


class CardDeclined(Exception):
    """What the failing flow's charge raises."""


class Reserve(Task):
    def execute(self) -> dict[str, Any]:
        return {"seat": "12A", "password": "hunter2"}


class Charge(Task):
    def execute(self) -> str:
        raise CardDeclined("card 4242 declined by the bank")


class Ship(Task):
    def execute(self) -> str:
        return "shipped"


class Flaky(Task):
    """Fails its first attempt, then succeeds: its retry policy records the attempt."""

    failed_for: set[str] = set()

    def execute(self) -> str:
        flow = self.context.flow_uuid
        if flow not in Flaky.failed_for:
            Flaky.failed_for.add(flow)
            raise ConnectionError("the warehouse did not answer")
        return "packed"


@flow_factory
def make_order() -> Any:
    return linear_flow.Flow("order-ok").add(
        Reserve("reserve", provides="booking"),
        Flaky("pack", retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0)),
        Ship("ship"),
    )


@flow_factory
def make_declined() -> Any:
    return linear_flow.Flow("order-declined").add(Reserve("reserve", provides="booking"), Charge("charge"))


@flow_factory
def make_approval() -> Any:
    return linear_flow.Flow("order-approval").add(
        Reserve("reserve", provides="booking"), WaitFor("approval", provides="approved"), Ship("ship")
    )


class Ticks:
    """A clock for the durations listener that advances one second per reading."""

    def __init__(self) -> None:
        self.now = -1.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def populate(url: str) -> dict[str, str]:
    """Run the three flows into ``url``; return ``{"ok": uuid, "failed": uuid, "waiting": uuid}``.

    The successful one is timed (one second per clock reading), so it has a timeline.
    """
    found = {}
    with fetch(url) as backend:
        for key, factory in (("ok", make_order), ("failed", make_declined), ("waiting", make_approval)):
            engine = load_from_factory(factory, backend=backend)
            try:
                if key == "ok":
                    with DurationListener(engine, clock=Ticks()):
                        engine.run()
                else:
                    engine.run(park=True)
            except CardDeclined:
                pass
            found[key] = engine.storage.flow_detail.uuid
    return found
