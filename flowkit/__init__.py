"""flowkit: operations that finish or are undone, even when the process dies.

How the package is layered (data flows down, nothing calls up):

- ``flowkit/atom.py``, ``task.py``, ``retry.py``: what users subclass.
- ``flowkit/flow.py`` and ``flowkit/patterns/``: containers (linear,
  unordered, graph flows); structure only, no execution.
- ``flowkit/engines/``: ``compiler`` (flatten + validate), ``runtime``
  (schedule, revert, retry), ``executors`` (serial, threads, processes),
  ``engine`` (the only place that joins the others).
- ``flowkit/factories.py``: the registry of flow factories, the only way
  a name read from a logbook reaches code.
- ``flowkit/storage.py``: name -> value lookup over a flow's logbook.
- ``flowkit/persistence/``: logbook models and backends.
- ``flowkit/types/``: captured failures and notifiers.

This file pulls together the public API; the TaskFlow-compatible module paths
(``flowkit.task``, ``flowkit.patterns.linear_flow``, ``flowkit.engines``, ...)
are public too.
"""

from flowkit import exceptions, states
from flowkit.decorators import as_task
from flowkit.engines import load, run
from flowkit.patterns.graph_flow import Flow as GraphFlow
from flowkit.patterns.linear_flow import Flow as LinearFlow
from flowkit.patterns.unordered_flow import Flow as UnorderedFlow
from flowkit.retry import (
    AlwaysRevert,
    AlwaysRevertAll,
    Decision,
    ForEach,
    ParameterizedForEach,
    Retry,
    Times,
)
from flowkit.task import FunctorTask, Task
from flowkit.types.failure import Failure

__version__ = "0.1.0"

__all__ = [
    # atoms
    "Task",
    "FunctorTask",
    "as_task",
    # retry controllers
    "Retry",
    "Decision",
    "Times",
    "ForEach",
    "ParameterizedForEach",
    "AlwaysRevert",
    "AlwaysRevertAll",
    # patterns
    "LinearFlow",
    "UnorderedFlow",
    "GraphFlow",
    # running
    "load",
    "run",
    # values and errors
    "Failure",
    "states",
    "exceptions",
    "__version__",
]
