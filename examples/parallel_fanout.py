"""Parallel fan-out: ask four suppliers for a price at once, then pick the cheapest.

The lookups sit in an unordered flow (no order between them), so the parallel engine runs
them together on its thread pool. A barrier makes each lookup wait until all four are in
flight: the example only finishes if they really ran at the same time.

Tasks print nothing (their order would vary from run to run); the main thread prints the
results after the run.
"""

import threading

from flowkit import engines, task
from flowkit.patterns import linear_flow, unordered_flow

PRICES = {"acme": 120, "globex": 95, "initech": 110, "umbrella": 99}
all_in_flight = threading.Barrier(len(PRICES), timeout=30)


class FetchPrice(task.Task):
    def execute(self, supplier):
        all_in_flight.wait()  # raises BrokenBarrierError if the lookups ran one by one
        return PRICES[supplier]


class PickCheapest(task.Task):
    default_provides = "best"

    def execute(self, **quotes):
        supplier = min(quotes, key=quotes.get)
        return supplier.removeprefix("price_"), quotes[supplier]


def main():
    lookups = unordered_flow.Flow("lookups")
    for supplier in PRICES:
        lookups.add(
            FetchPrice(
                f"ask-{supplier}", inject={"supplier": supplier}, provides=f"price_{supplier}"
            )
        )
    pick = PickCheapest(requires=[f"price_{supplier}" for supplier in PRICES])
    flow = linear_flow.Flow("quote").add(lookups, pick)

    engine = engines.load(flow, engine="parallel", max_workers=len(PRICES))
    engine.run()

    print("all four lookups were in flight at the same time")
    for supplier in PRICES:
        print(f"  {supplier:<9} quoted {engine.storage.fetch(f'price_{supplier}')}")
    supplier, price = engine.storage.fetch("best")
    print(f"cheapest: {supplier} at {price}")


if __name__ == "__main__":
    main()
