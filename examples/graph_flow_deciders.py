"""A graph flow with deciders: run one branch or the other depending on a result.

``graph_flow.Flow`` orders tasks by the data they need, whatever order they were added in.
``link(u, v, decider=...)`` adds an explicit edge; the decider is called with ``history``
(the results of ``v``'s predecessors by name) and, when it returns False, ``v`` and whatever
depends on it are skipped (state IGNORE) while the flow still succeeds.
"""

from flowkit import engines, states, task
from flowkit.patterns import graph_flow

STOCK = {"keyboard": 3, "monitor": 0}


class CheckStock(task.Task):
    default_provides = "in_stock"

    def execute(self, item):
        return STOCK[item] > 0


class Ship(task.Task):
    default_provides = "shipment"

    def execute(self, item):
        return f"{item} shipped today"


class Backorder(task.Task):
    default_provides = "backorder"

    def execute(self, item):
        return f"{item} backordered"


class Confirm(task.Task):
    default_provides = "confirmation"

    def execute(self, item, shipment):
        return f"confirmation sent for {item}: {shipment}"


def make_flow():
    check = CheckStock("check-stock")
    ship = Ship("ship")
    backorder = Backorder("backorder")
    confirm = Confirm("confirm")

    flow = graph_flow.Flow("fulfil")
    # Added out of order on purpose: the graph flow orders them by data (confirm needs shipment).
    flow.add(confirm, ship, backorder, check)
    flow.link(check, ship, decider=lambda history: history["check-stock"])
    flow.link(check, backorder, decider=lambda history: not history["check-stock"])
    return flow


def main():
    for item in ("keyboard", "monitor"):
        engine = engines.load(make_flow(), store={"item": item})
        engine.run()
        print(f"order for a {item}: flow {engine.storage.get_flow_state()}")
        for atom in ("check-stock", "ship", "backorder", "confirm"):
            state = engine.storage.get_atom_state(atom)
            if state == states.IGNORE:
                print(f"  {atom:<12} skipped")
            else:
                print(f"  {atom:<12} {state}: {engine.storage.get(atom)!r}")


if __name__ == "__main__":
    main()
