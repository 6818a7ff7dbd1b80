"""flowkit: operations that finish or are undone, even when the process dies.

How the package is layered.  Data flows down, nothing calls up: each entry
names what it never imports, and ``tests/test_layering.py`` checks these rules
on the import graph, together with "no import cycles between modules" (lazy and
type-only imports included).

- Foundation: ``exceptions`` (the one error tree), ``states``,
  ``types/`` (captured failures, notifiers, the cancel token tasks read), ``clock`` (time and how long to
  block, which boards, conductors and waits share), and the internal ``_names`` and
  ``_imports`` (finding ``module:qualname``): every layer builds on them; they
  import nothing else of flowkit.
- ``atom.py``, ``task.py``, ``retry.py``, ``waits.py`` (timer and signal
  atoms), ``policies.py`` (retry policies), ``decorators.py``: what users
  subclass.  ``flow.py`` and ``patterns/`` (linear, unordered, graph flows):
  structure only.  They never import the engine, storage, persistence, the
  factories, or anything built on the engine.
- ``engines/``: ``_compiler`` (flatten + validate), ``_state`` (one run's
  state), ``_scheduler`` and ``_reverter`` (what runs next, what a failure
  undoes; both handed the run's state), ``engine`` (the only place that joins
  atoms, storage and persistence), ``helpers`` (rebuilding a flow from its
  logbook).  The engine
  never imports job boards, conductors, listeners, ``testing``, ``graphs`` or
  the command, nor SQL code.  The engine core (all of it but ``executors``
  and ``distributed``, with the atoms, patterns, ``storage``, ``states`` and
  ``types``) imports no SQLAlchemy, Dask, Redis or web package at module
  level, so ``import flowkit`` stays light.
- ``engines/executors``, ``engines/distributed``: where atoms run (futurist
  pools; Dask, imported on first use).  An executor never sees persistence,
  storage or the factories.
- ``storage.py``: name -> value lookup over a flow's logbook; never imports
  the engine, the factories, SQL code or anything above the engine.
- ``persistence/``: logbook models, the value codec, backends (memory,
  SQLAlchemy, imported on first use).  Stored data only: never imports atoms,
  patterns, the engine, storage, the factories or anything above the engine.
- ``signals.py``: sending signals to flow details (stored through
  persistence) and waking the waiters of this process.  Never imports atoms,
  patterns, the engine, storage, the factories or anything above the engine
  (the engine imports it to wait).
- ``cancellation.py``: cancel requests for any flow detail, stored as signals
  of their own; the same rules as ``signals.py`` (the engine imports it to
  act on them).
- ``factories.py``: the registry of flow factories, the only way a name read
  from a logbook reaches code.  Never imports the engine, storage,
  persistence, atoms or anything above the engine.
- ``jobs/``: job boards (memory, SQL, Redis).  They store jobs and run
  nothing: never import atoms, the engine, storage, the factories,
  conductors, listeners, ``testing``, ``graphs`` or the command.
- ``conductors/``: claim jobs and run them with the engine.  Never import
  listeners, ``testing``, ``graphs`` or the command.
- ``versioning.py``: the structure a run recorded, the rules for what a
  resume may change, and migrations (data and rules; the engine and its
  helpers import it).  Never imports storage, the factories, SQL code or
  anything above the engine.
- ``plan.py``: what a resume would do, read from the logbook without
  writing (built on the engine's helpers).  Never imports job boards,
  conductors, listeners, ``testing``, ``graphs`` or the command.
- ``reconcile/``: resources driven toward a target state (rules, the
  service-side store, the driver that posts one job per resource and runs
  them in conductors).  Never imports listeners, ``testing``, ``graphs`` or
  the command.
- ``starts.py``: start a flow once per key and get its outcome from any
  process (the engine, the factories, persistence).  Never imports job
  boards, conductors, listeners, ``testing``, ``graphs`` or the command.
- ``listeners/``: logging, timing, progress, capture, all on the notifier.
  Never import the engine (except its types, in annotations), storage,
  persistence, the factories, boards, conductors, ``testing``, ``graphs`` or
  the command.
- ``metrics.py``, ``tracing.py``: Prometheus metrics and OpenTelemetry spans
  (imported on first use), attached to every engine and conductor through
  ``engines/_observers.py`` and the notifiers.  Never import job boards,
  SQL code, ``testing``, ``graphs``, ``web`` or the command.
- ``graphs.py``: draws a flow with the compiler.  Never imports persistence,
  the factories, or anything else built on the engine.
- ``testing/``: conformance suites for backends and boards, for your own
  too.  Nothing in flowkit imports them; they never import conductors,
  listeners, ``graphs`` or the command.
- ``web/``: the dashboard (Starlette, imported on first use).  It reads the
  logbooks and the board it is handed: never imports job boards, conductors,
  ``testing`` or the command.
- TaskFlow's module paths beside the layers: ``deciders`` (the decider
  depths; with the atoms), ``logging`` (logger helpers; imports nothing of
  flowkit), ``utils/persistence_utils`` (logbooks in a few calls; with
  persistence), ``formatters`` (failure text from a run's storage; with the
  engine's types, never the engine).
- ``cli.py``, ``conductors/cli.py``, ``web/cli.py`` (and their shared ``_cli_common.py``):
  the ``flowkit`` command, on top of everything; nothing else imports them.

This file pulls together the public API (no module of flowkit imports it);
the TaskFlow-compatible module paths (``flowkit.task``,
``flowkit.patterns.linear_flow``, ``flowkit.engines``, ...) are public too.
Modules whose names start with an underscore are internal.
"""

from flowkit import exceptions, signals, states
from flowkit.decorators import as_task
from flowkit.engines import load, run
from flowkit.patterns.graph_flow import Flow as GraphFlow
from flowkit.patterns.linear_flow import Flow as LinearFlow
from flowkit.patterns.unordered_flow import Flow as UnorderedFlow
from flowkit.policies import RetryPolicy
from flowkit.retry import (
    AlwaysRevert,
    AlwaysRevertAll,
    Decision,
    ForEach,
    ParameterizedForEach,
    Retry,
    Times,
)
from flowkit.starts import FlowHandle, result, start
from flowkit.task import FunctorTask, Task
from flowkit.types.failure import Failure
from flowkit.waits import Sleep, WaitFor

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
    # retry policies on atoms
    "RetryPolicy",
    # waiting atoms
    "Sleep",
    "WaitFor",
    # patterns
    "LinearFlow",
    "UnorderedFlow",
    "GraphFlow",
    # running
    "load",
    "run",
    # starting by key, results later
    "start",
    "result",
    "FlowHandle",
    # sending signals to waiting flows (a module: flowkit.signals.send)
    "signals",
    # values and errors
    "Failure",
    "states",
    "exceptions",
    "__version__",
]
