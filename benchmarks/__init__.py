"""flowkit's benchmark suite: flowkit against TaskFlow 6.5.0, in one process.

Not tests: nothing here asserts on timing, and no file is named so that
pytest would collect it. Run ``python -m benchmarks --help``.

Layout, each module depending only on those above it:

* ``targets``   import flowkit or TaskFlow behind one small adapter
* ``shapes``    the flow shapes (linear, unordered, graph chain, graph fan-in)
* ``timing``    phase timing, repetitions, run-time extrapolation
* ``baselines`` bare ThreadPoolExecutor costs (the parallel step yardstick)
* ``memory``    peak memory per atom, one fresh subprocess per measurement
* ``report``    tables rendered as Markdown or reStructuredText
* ``cli``       ``python -m benchmarks``: orchestration and the targets check
"""

__all__: list[str] = []
