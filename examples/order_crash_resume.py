"""An order flow survives its process dying: crash mid-flow, resume from the logbook.

Each order runs in a child process (reserve stock, charge the card, ship, notify the
customer) that writes every step to the SQLite logbook ``flowkit.db`` in the current
directory, flowkit's default. The child dies with ``os._exit`` while booking the courier,
as if the machine lost power. This process then reads the logbook, rebuilds the flow
from the factory named in it and resumes (what ``flowkit resume <uuid>`` does):

- order 1042: the stock and the charge are taken from the logbook, not done again (the
  card is not charged twice); shipping runs again and the order completes;
- order 1043: shipping is refused on the resumed run, so flowkit undoes the reservation
  and the charge that the dead process made, using the results it had logged.

The flow is built by ``make_order_flow``, registered with ``@flow_factory`` as
``order_crash_resume:make_order_flow``: the name the child records in the logbook. The
logbook only *names* the factory; flowkit never imports what a logbook says. This process
knows the factory because it imported this module, and so does
``PYTHONPATH=examples flowkit resume --import order_crash_resume <uuid>``.
"""

import os
import subprocess
import sys

from flowkit import LinearFlow, as_task
from flowkit.cli import DEFAULT_BACKEND
from flowkit.cli import main as flowkit_command
from flowkit.engines import load_from_detail, load_from_factory
from flowkit.factories import flow_factory
from flowkit.persistence.backends import fetch

# Set only in the child process: the step that "loses power" part-way through.
CRASH_IN = None


class CourierRefused(Exception):
    """The courier will not take the parcel."""


def say(text):
    # The child's output goes through a pipe and os._exit skips Python's
    # buffer flushing, so every line is flushed as it is written.
    print(text, flush=True)


# --- compensating actions: called with the task's own (logged) result -------------


def release_stock(result, **_):
    say(f"    undo: released reservation {result}")


def refund_card(result, **_):
    say(f"    undo: refunded charge {result}")


# --- the steps ------------------------------------------------------------------------


@as_task(provides="reservation", revert=release_stock)
def reserve_stock(order):
    reservation = f"RSV-{order['id']}"
    say(f"    reserved {order['quantity']} x {order['sku']} ({reservation})")
    return reservation


@as_task(provides="charge", revert=refund_card)
def charge_card(order):
    charge = f"CHG-{order['id']}"
    say(f"    charged {order['amount']:.2f} EUR to card ending {order['card'][-4:]} ({charge})")
    return charge


@as_task(provides="tracking")
def ship(order, reservation):
    say(f"    booking a courier for {reservation} ...")
    if CRASH_IN == "ship":
        os._exit(70)  # the power goes out: no cleanup, no exception handling
    if order["address"] == "unknown":
        say("    the courier refused the parcel: unknown address")
        raise CourierRefused(f"no courier will deliver order {order['id']} to an unknown address")
    tracking = f"TRK-{order['id']}"
    say(f"    booked (tracking {tracking})")
    return tracking


@as_task(provides="notification")
def notify_customer(order, tracking):
    message = f"Your order {order['id']} is on its way, tracking {tracking}"
    say(f"    emailed {order['email']}: {message!r}")
    return message


@flow_factory
def make_order_flow():
    """The order flow; the logbook records this factory's name so the flow can be rebuilt."""
    return LinearFlow("order").add(reserve_stock(), charge_card(), ship(), notify_customer())


# --- the process that crashes -------------------------------------------------------------


def child(order, crash_in):
    global CRASH_IN
    CRASH_IN = crash_in
    with fetch(DEFAULT_BACKEND) as backend:
        engine = load_from_factory(make_order_flow, store={"order": order}, backend=backend)
        say(f"flow-detail {engine.flow_detail.uuid}")
        engine.run()
    say("    (finished without crashing)")


def run_child(order):
    """Run the order in a child process that dies in ``ship``; return its flow detail uuid."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", repr(order)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.splitlines()
    uuid = lines[0].split()[1]
    for line in lines[1:]:
        print(line)
    print(f"  the process died (exit status {proc.returncode}) in the middle of the flow")
    return uuid


# --- this process: look at the logbook, then resume -----------------------------------------


def resume(uuid):
    with fetch(DEFAULT_BACKEND) as backend:
        with backend.get_connection() as conn:
            detail = conn.get_flow_details(uuid)
        before = {atom.name: atom.state for atom in detail}
        print("  the logbook after the crash:")
        for name, state in before.items():
            print(f"    {name:<16} {state}")
        print("  resuming from the logbook in this process:")
        engine = load_from_detail(detail, backend=backend)
        try:
            engine.run()
        except CourierRefused as error:
            print(f"  order not placed: {error}; everything was undone")
        else:
            print(f"  order placed, tracking {engine.storage.fetch('tracking')}")
        print(f"  flow state: {engine.storage.get_flow_state()}")
        ran_before = [name for name, state in before.items() if state == "SUCCESS"]
        print(f"  done before the crash and not repeated: {', '.join(ran_before)}")


def main():
    orders = [
        {"id": 1042, "sku": "KB-101", "quantity": 2, "amount": 89.90, "address": "1 Main St"},
        {"id": 1043, "sku": "MS-300", "quantity": 1, "amount": 24.50, "address": "unknown"},
    ]
    for order in orders:
        order.update(card="4111111111111111", email="ada@example.com")
        print(f"Order {order['id']}: run in a child process that crashes while shipping")
        uuid = run_child(order)
        resume(uuid)
        print(f"  `flowkit show` of the flow detail ({DEFAULT_BACKEND}):")
        flowkit_command(["show", uuid, "--backend", DEFAULT_BACKEND])
        print()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        import ast

        # Run the importable copy of this file, so the logbook records the
        # factory as order_crash_resume:make_order_flow rather than __main__.
        import order_crash_resume

        order_crash_resume.child(ast.literal_eval(sys.argv[2]), crash_in="ship")
    else:
        import order_crash_resume

        order_crash_resume.main()
