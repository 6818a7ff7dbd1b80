"""Run in a child interpreter by test_behave_executors: a parallel engine on futurist's green threads.

``python green_child.py PACKAGE [patch]``: with ``patch``, eventlet monkey-patches the process
first. Prints one line per run, then ``done``. Not a test module (eventlet must not be imported
into the test process: it changes threading, and futurist warns about it).
"""

import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)

if "patch" in sys.argv[2:]:
    import eventlet

    eventlet.monkey_patch()

import importlib  # noqa: E402

import futurist  # noqa: E402

package = sys.argv[1]
task = importlib.import_module(package + ".task")
unordered_flow = importlib.import_module(package + ".patterns.unordered_flow")
linear_flow = importlib.import_module(package + ".patterns.linear_flow")
engines = importlib.import_module(package + ".engines")


class Name(task.Task):
    def execute(self):
        return self.name


def flow(name):
    return linear_flow.Flow(name).add(
        unordered_flow.Flow(name + "-fan").add(Name("a", provides="a"), Name("b", provides="b")),
        task.FunctorTask(lambda a, b: a + b, name="join", provides="joined"),
    )


with futurist.GreenThreadPoolExecutor(max_workers=2) as pool:
    engine = engines.load(flow("given"), engine="parallel", executor=pool)
    engine.run()
    print("given pool:", engine.storage.fetch("joined"))
engine = engines.load(flow("named"), engine="parallel", executor="greenthreaded")
engine.run()
print("greenthreaded:", engine.storage.fetch("joined"))
print("done")
