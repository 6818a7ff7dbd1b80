"""An order that waits for a person, then for the shipping window, holding nothing while it waits.

    place order -> wait for "approval" (at most 24 h) -> charge the card
                -> sleep until the next shipping window (14:00 UTC) -> ship

``engine.run(park=True)`` returns as soon as the flow can only wait: the flow
is WAITING in the logbook (``flow_detail.meta["wake"]`` says until when), and
no thread, pool worker or process is kept for it.  The approval is a signal
(:func:`flowkit.signals.send`), stored in the logbook even though no engine
runs the flow when it is sent; the next run finds it.  Each run here is a new
engine rebuilt from the logbook (:func:`flowkit.engines.load_from_detail`),
as another process would do after this one exited.

The charge passes ``self.context.idempotency_key`` to the payment service:
the same key for every run of this attempt, so a charge retried after a
crash is not made twice.

Time is a :class:`flowkit.testing.clock.VirtualClock`, so the day of waiting
takes no time at all; a real program passes no clock.  A second order is
never approved: its wait times out after 24 hours, and the flow reverts.

The logbook is the embedded SQLite file ``approval.db`` in the current
directory.
"""

import datetime

from flowkit import LinearFlow, Sleep, Task, WaitFor, exceptions, signals
from flowkit.engines import load_from_detail, load_from_factory
from flowkit.factories import flow_factory
from flowkit.persistence.backends import fetch
from flowkit.testing.clock import VirtualClock

UTC = datetime.timezone.utc
DAY = 24 * 60 * 60


class PaymentService:
    """A payment API that de-duplicates by idempotency key, as real ones do."""

    def __init__(self):
        self.charges = {}

    def charge(self, order_id, amount, idempotency_key):
        if idempotency_key not in self.charges:
            self.charges[idempotency_key] = "ch_%d_%d" % (order_id, len(self.charges) + 1)
        return self.charges[idempotency_key]


PAYMENTS = PaymentService()


class PlaceOrder(Task):
    def execute(self, order_id):
        print(f"  order {order_id}: placed, waiting for approval")
        return order_id

    def revert(self, order_id, **kwargs):
        print(f"  order {order_id}: cancelled")


class Charge(Task):
    def execute(self, order_id, approval):
        key = self.context.idempotency_key
        charge = PAYMENTS.charge(order_id, 4200, idempotency_key=key)
        print(f"  order {order_id}: approved by {approval['by']}; charged 42.00 as {charge} (idempotency key {key})")
        return charge


class Ship(Task):
    def execute(self, order_id, charge):
        print(f"  order {order_id}: shipped (paid by {charge})")


@flow_factory("approval:order_flow")  # a fixed name: this file also runs as __main__
def order_flow(order_id, ships_at):
    """The order's flow; ``ships_at`` is the shipping window as an ISO 8601 time with its offset."""
    return LinearFlow("order-%d" % order_id).add(
        PlaceOrder("place", provides="order_id", inject={"order_id": order_id}),
        WaitFor("approval", timeout=DAY, provides="approval"),
        Charge("charge", provides="charge"),
        Sleep("shipping-window", until=datetime.datetime.fromisoformat(ships_at)),
        Ship("ship"),
    )


def at(clock):
    return datetime.datetime.fromtimestamp(clock.now(), UTC).strftime("%a %H:%M")


def resume(backend, flow_uuid, clock):
    """A new engine for the flow, rebuilt from the logbook, run until it ends or waits."""
    with backend.get_connection() as conn:
        flow_detail = conn.get_flow_details(flow_uuid)
    engine = load_from_detail(flow_detail, backend=backend, clock=clock)
    engine.run(park=True)
    return engine


def report(engine, clock):
    state = engine.storage.get_flow_state()
    wake = engine.flow_detail.meta.get("wake") if state == "WAITING" else None
    if wake is None:
        print(f"[{at(clock)}] flow {state}")
        return
    due = wake.get("due")
    until = "no deadline" if due is None else datetime.datetime.fromtimestamp(due, UTC).strftime("%a %H:%M")
    signals_ = ", ".join(wake.get("signals") or []) or "none"
    print(f"[{at(clock)}] flow WAITING: wakes at {until}, or on signal: {signals_}")


def main():
    backend = fetch("sqlite:///approval.db")
    with backend.get_connection() as conn:
        conn.upgrade()
    clock = VirtualClock(datetime.datetime(2026, 3, 2, 9, 0, tzinfo=UTC))  # a Monday, 09:00 UTC
    window = datetime.datetime(2026, 3, 2, 14, 0, tzinfo=UTC).isoformat()

    print(f"[{at(clock)}] order 1042")
    engine = load_from_factory(order_flow, factory_args=[1042, window], backend=backend, clock=clock)
    engine.run(park=True)
    flow_uuid = engine.flow_detail.uuid
    report(engine, clock)

    clock.advance(90 * 60)
    print(f"[{at(clock)}] ann approves (no engine is running the flow)")
    signals.send(backend, flow_uuid, "approval", {"by": "ann"})
    engine = resume(backend, flow_uuid, clock)
    report(engine, clock)

    clock.set(datetime.datetime.fromisoformat(window))
    print(f"[{at(clock)}] the shipping window opens")
    engine = resume(backend, flow_uuid, clock)
    report(engine, clock)

    print()
    print(f"[{at(clock)}] order 1043")
    engine = load_from_factory(order_flow, factory_args=[1043, window], backend=backend, clock=clock)
    engine.run(park=True)
    flow_uuid = engine.flow_detail.uuid
    report(engine, clock)
    clock.advance(DAY)
    print(f"[{at(clock)}] a day later, still no approval")
    try:
        resume(backend, flow_uuid, clock)
    except exceptions.WaitTimeout as timeout:
        print(f"  {type(timeout).__name__}: {timeout}")
    with backend.get_connection() as conn:
        print(f"[{at(clock)}] flow {conn.get_flow_details(flow_uuid).state}")
    backend.close()


if __name__ == "__main__":
    main()
