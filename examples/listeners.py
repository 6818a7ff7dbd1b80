"""Watching a flow: print, capture, time and draw progress with listeners.

Listeners are context managers over an engine: entering one registers it with the engine's
notifiers and leaving removes it. ``PrintingListener`` prints every state change in TaskFlow's
words (here with the flow's inputs, and the card number masked), ``CaptureListener`` keeps a
compact list of events (handy in tests), ``PrintingDurationListener`` prints how long each
step took and records the seconds in the logbook (``meta["duration"]``, which ``flowkit show``
reads), and ``ProgressListener`` draws a live bar when standard error is a terminal, and stays
quiet otherwise (as when this example runs under the test suite).
"""

from flowkit import LinearFlow, as_task, engines
from flowkit.listeners import CaptureListener, PrintingDurationListener, PrintingListener, ProgressListener


@as_task(provides="reservation")
def reserve(sku):
    return {"sku": sku, "slot": "A-7"}


@as_task(provides="payment")
def charge(card, amount):
    return {"card": {"number": card, "brand": "visa"}, "amount": amount, "status": "captured"}


@as_task(provides="parcel")
def ship(reservation):
    return f"parcel for {reservation['sku']}"


def main():
    flow = LinearFlow("order").add(reserve(), charge(), ship())
    engine = engines.load(flow, store={"sku": "KB-101", "card": "4111111111111111", "amount": 89.9})

    print("--- printing (card numbers masked) ---")
    with (
        PrintingListener(engine, mask_keys={"card", "number"}, show_uuids=False, show_inputs=True),
        CaptureListener(engine, capture_results=False) as capture,
        PrintingDurationListener(engine),
        ProgressListener(engine),
    ):
        engine.run()

    print("--- captured ---")
    for value in capture.values:
        print(value)

    print("--- recorded in the logbook ---")
    for detail in engine.storage.flow_detail:
        print(f"{detail.name}: {detail.state}, took {detail.meta['duration']:.3f}s")


if __name__ == "__main__":
    main()
