"""An order saga: reserve stock, charge the card, ship, notify the customer.

Each step that changes the world has a compensating action. The first attempt at the order
fails at shipping (the courier is down), so flowkit undoes what was done, in reverse order:
the card is refunded and the stock released. The second attempt, with the courier back,
goes through.

Written with flowkit's modern API: ``as_task`` turns a plain function into a task factory;
its arguments are what the task requires, ``provides=`` names its result and ``revert=``
is the function that undoes it.
"""

from flowkit import LinearFlow, as_task, load


class CourierUnavailable(Exception):
    """The courier's booking service did not answer."""


# --- compensating actions: called with the task's own result --------------------------


def release_stock(result, **_):
    print(f"    undo: released reservation {result}")


def refund_card(result, **_):
    print(f"    undo: refunded charge {result}")


# --- the steps ------------------------------------------------------------------------


@as_task(provides="reservation", revert=release_stock)
def reserve_stock(order):
    reservation = f"RSV-{order['id']}"
    print(f"    reserved {order['quantity']} x {order['sku']} ({reservation})")
    return reservation


@as_task(provides="charge", revert=refund_card)
def charge_card(order):
    charge = f"CHG-{order['id']}"
    print(f"    charged {order['amount']:.2f} EUR to card ending {order['card'][-4:]} ({charge})")
    return charge


@as_task(provides="tracking")
def ship(order, reservation, courier_online):
    if not courier_online:
        print("    courier booking failed: the courier's service is down")
        raise CourierUnavailable("courier booking service timed out")
    tracking = f"TRK-{order['id']}"
    print(f"    booked courier for {reservation} (tracking {tracking})")
    return tracking


@as_task(provides="notification")
def notify_customer(order, tracking):
    message = f"Your order {order['id']} is on its way, tracking {tracking}"
    print(f"    emailed {order['email']}: {message!r}")
    return message


def make_flow():
    return LinearFlow("order").add(reserve_stock(), charge_card(), ship(), notify_customer())


def place_order(order, courier_online):
    engine = load(make_flow(), store={"order": order, "courier_online": courier_online})
    try:
        engine.run()
    except CourierUnavailable as exc:
        print(f"  order {order['id']} not placed: {exc}; everything was undone")
    else:
        tracking = engine.storage.fetch("tracking")
        print(f"  order {order['id']} placed, tracking {tracking}")
    print(f"  flow state: {engine.storage.get_flow_state()}")


def main():
    order = {
        "id": 1042,
        "sku": "KB-101",
        "quantity": 2,
        "amount": 89.90,
        "card": "4111111111111111",
        "email": "ada@example.com",
    }
    print("Attempt 1 (the courier is down):")
    place_order(order, courier_online=False)
    print("Attempt 2 (the courier is back):")
    place_order(order, courier_online=True)


if __name__ == "__main__":
    main()
