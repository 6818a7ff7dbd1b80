"""Hello world: two tasks in a linear flow, run by the default (serial) engine.

A task is a class with an ``execute()`` method. Its arguments are looked up by name in the
engine's storage; here ``name`` comes from the ``store`` given to the engine.
"""

from flowkit import engines, task
from flowkit.patterns import linear_flow


class SayHello(task.Task):
    def execute(self, name):
        print(f"Hello, {name}!")


class SayGoodbye(task.Task):
    def execute(self, name):
        print(f"Goodbye, {name}!")


def main():
    flow = linear_flow.Flow("hello-world").add(SayHello(), SayGoodbye())
    engine = engines.load(flow, store={"name": "world"})
    engine.run()
    print(f"flow finished in state {engine.storage.get_flow_state()}")


if __name__ == "__main__":
    main()
