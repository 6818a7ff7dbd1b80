"""Passing data between tasks: provides, requires, rebind and inject.

* ``provides`` names a task's result so later tasks can ask for it;
  a tuple of names unpacks a sequence result by position.
* A task's ``execute()`` arguments are what it requires; ``requires`` adds more names.
* ``rebind`` maps an argument to a different stored name (a dict), or gives the names
  in argument order (a list).
* ``inject`` gives one task its own constant values.
* Arguments with defaults are optional: filled from storage when present.
"""

from flowkit import engines, task
from flowkit.patterns import linear_flow


class Add(task.Task):
    def execute(self, x, y):
        return x + y


class Multiply(task.Task):
    def execute(self, a, b):
        return a * b


class SplitName(task.Task):
    default_provides = ("first_name", "last_name")

    def execute(self, full_name):
        first, last = full_name.split(" ", 1)
        return first, last


class Greet(task.Task):
    def execute(self, name, greeting="Hello"):
        return f"{greeting}, {name}!"


def main():
    flow = linear_flow.Flow("data-passing").add(
        # x and y come from the store.
        Add("add", provides="sum"),
        # a is read from "sum"; b is a constant for this task only.
        Multiply("double", rebind={"a": "sum"}, inject={"b": 2}, provides="doubled"),
        # A list rebinds by position: x <- doubled, y <- bonus.
        Add("add-bonus", rebind=["doubled", "bonus"], provides="total"),
        # default_provides unpacks the returned tuple into two names.
        SplitName(),
        # greeting has a default and nothing stores one, so this task uses the default...
        Greet("greet", rebind={"name": "first_name"}, provides="informal"),
        # ...and this one gets its own greeting injected.
        Greet(
            "greet-formally",
            rebind={"name": "full_name"},
            inject={"greeting": "Good evening"},
            provides="formal",
        ),
    )
    store = {"x": 2, "y": 3, "bonus": 10, "full_name": "Ada Lovelace"}
    results = engines.run(flow, store=store)

    for name in ("sum", "doubled", "total", "first_name", "last_name", "informal", "formal"):
        print(f"{name:>10} = {results[name]!r}")


if __name__ == "__main__":
    main()
