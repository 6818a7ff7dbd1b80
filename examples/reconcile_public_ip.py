"""Reconcile a public IP toward its target state; cancel an attach by setting the target back.

The service never runs an operation: ``resources.create()`` and
``resources.set_target()`` record what is wanted (inside the service's own
transaction) and return at once.  A driver beside a conductor works out which
rule moves the address toward its target, posts that operation as a job with
the address as its lock, and records the result when the job ends.

Here the user asks for the address to be attached, and changes their mind
while the attach runs.  The attach is not interrupted: when it ends, the rules
are asked again with the new target, and a detach takes the address back.
Everything runs in one process on a SQLite file so the output is
deterministic; ``flowkit reconcile --kind public_ip --import MODULE`` runs the
driver and a conductor in a process of their own.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading

from flowkit import LinearFlow, Task
from flowkit.conductors import fetch as fetch_conductor
from flowkit.factories import flow_factory
from flowkit.jobs.backends.impl_sql import SQLJobBoard
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.reconcile import Driver, Reconciler, ReconcilerRegistry, Resources, Rule

#: Set while the attach runs; the attach waits for ``go_on`` before it finishes.
attaching = threading.Event()
go_on = threading.Event()


class Attach(Task):
    def execute(self, resource: dict, facts: dict) -> None:
        print(f"    attach {resource['id']} to {facts['server']}: started")
        attaching.set()
        go_on.wait(30)
        print(f"    attach {resource['id']} to {facts['server']}: done")


class Detach(Task):
    def execute(self, resource: dict, facts: dict) -> None:
        print(f"    detach {resource['id']} from {facts['server']}")


@flow_factory("public_ip.attach")
def attach() -> LinearFlow:
    return LinearFlow("attach").add(Attach("attach"))


@flow_factory("public_ip.detach")
def detach() -> LinearFlow:
    return LinearFlow("detach").add(Detach("detach"))


RECONCILER = Reconciler(
    "public_ip",
    states=["detached", "attached"],
    rules=[
        Rule("attach", "detached", "attached", flow="public_ip.attach", max_errors=3),
        Rule("detach", "attached", "detached", flow="public_ip.detach", max_errors=3),
    ],
)


def show(resources: Resources, what: str) -> None:
    ip = resources.get("public_ip", "203.0.113.7")
    running = f", running {ip.operation}" if ip.operation else ""
    print(
        f"  {what}: current={ip.current} target={ip.target} {ip.status} "
        f"(generation {ip.generation}, observed {ip.observed_generation}{running})"
    )


def main() -> None:
    registry = ReconcilerRegistry()
    registry.add(RECONCILER)
    with tempfile.TemporaryDirectory() as tmp:
        backend = SQLAlchemyBackend(f"sqlite:///{os.path.join(tmp, 'flowkit.db')}")
        board = SQLJobBoard("flowkit", persistence=backend, poll_interval=0.05).connect()
        resources = Resources(backend, reconcilers=registry)

        print("The service asks for the address to be attached (the call returns at once):")
        with resources.begin() as conn:  # the service's own transaction
            resources.create("public_ip", "203.0.113.7", target="attached", facts={"server": "vm-42"}, connection=conn)
        show(resources, "created")

        conductor = fetch_conductor("blocking", "conductor-1", board, persistence=backend, wait_timeout=0.05)
        driver = Driver(board, ["public_ip"], reconcilers=registry, poll=0.05)
        engine_side = threading.Thread(target=driver.run, args=(conductor,), kwargs={"max_dispatches": 2})
        print("\nThe driver and a conductor start working:")
        engine_side.start()
        attaching.wait(30)
        show(resources, "while attaching")

        print("\nThe user cancels: the target goes back to detached (the attach is not interrupted):")
        resources.set_target("public_ip", "203.0.113.7", "detached")
        show(resources, "after set_target")
        go_on.set()
        engine_side.join(60)

        print("\nAfterwards:")
        show(resources, "settled")
        for op in resources.operations("public_ip", "203.0.113.7"):
            step = f"{op.rule} {op.current} -> {op.leads_to}"
            print(f"  operation {op.seq}: {step} for generation {op.generation}: {op.outcome}")
        board.close()
        backend.close()


if __name__ == "__main__":
    # Run the importable copy of this file, so the factories are registered under its module's name.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reconcile_public_ip

    reconcile_public_ip.main()
