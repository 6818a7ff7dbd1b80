"""Pictures of flows: export the execution graph as Graphviz DOT.

``flowkit.graphs.to_dot`` draws what the engine will run: every atom, every ordering edge,
nested flows as boxes, retry controllers as hexagons and links with deciders dashed. Given an
engine (or a flow detail from a logbook) it colours each atom by its state. Render the text
with ``dot -Tsvg`` or ``graphs.render(text, "svg")`` when Graphviz is installed, or from the
command line: ``flowkit graph graph_export:make_flow --output flow.svg`` (with
``PYTHONPATH=examples``).
"""

from flowkit import engines, graphs, retry
from flowkit.patterns import graph_flow, linear_flow, unordered_flow
from flowkit.task import Task


class Step(Task):
    def execute(self):
        return self.name


class CheckStock(Task):
    default_provides = "in_stock"

    def execute(self, item):
        return item == "keyboard"


def in_stock(history):
    return history["check-stock"]


def make_flow():
    check = CheckStock("check-stock")
    ship = Step("ship")
    fulfil = graph_flow.Flow("fulfil").add(check, ship)
    # decider_depth="ATOM": a "no" skips only ship; the notifications still go out.
    fulfil.link(check, ship, decider=in_stock, decider_depth="ATOM")
    notify = unordered_flow.Flow("notify", retry=retry.Times(3, name="retry-notify")).add(
        Step("email"), Step("sms")
    )
    return linear_flow.Flow("order").add(Step("reserve"), fulfil, notify)


def main():
    print("--- the structure ---")
    print(graphs.to_dot(make_flow()), end="")

    engine = engines.load(make_flow(), store={"item": "monitor"})
    engine.run()
    print("--- after a run (monitor is out of stock: only ship is skipped) ---")
    print(graphs.to_dot(engine), end="")


if __name__ == "__main__":
    main()
