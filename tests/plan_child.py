"""Random graph flows with retries and reverts, and the process that runs one until it dies.

``test_plan.py`` runs this module in a child process::

    python -m tests.plan_child

which imports flowkit once, then reads one JSON line per run from stdin
(``{"backend": CONF, "workdir": DIR, "seed": N, "kill": K, "engine": MODE}``), forks a
process that runs it, waits for that process to end and writes its exit status as
one line to stdout.  (Forking from this single-threaded process is what keeps a run
cheap on a busy machine: each run is still a process of its own, killed for real.)

The flow is made by :func:`make_flow` from the seed alone (the parent rebuilds the same
one from the logbook): a graph flow of tasks wired by what they require and provide,
with a linear subflow under a ``Times(2)`` retry controller somewhere in it.  In the
child some tasks fail (:data:`FAILING`, set by ``main``): a task in the retry scope on
its first attempt or on both (the scope then reverts), and sometimes a task outside it
(the whole flow then reverts).  The K-th call of ``execute`` or ``revert`` in the child
ends the process with ``os._exit`` before doing anything; a child that never gets there
exits 0.  In the parent nothing fails, so a resume does exactly what its plan says.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
from pathlib import Path
from typing import Any

from flowkit.engines import load_from_factory
from flowkit.factories import flow_factory
from flowkit.patterns import graph_flow, linear_flow
from flowkit.persistence.backends import fetch
from flowkit.retry import Times
from flowkit.task import Task

CRASH_EXIT = 77

#: Whether tasks fail as the seed says (only in the child).
FAILING = False
_kill_at = 0
_calls = 0
_executions: dict[str, int] = {}
_lock = threading.Lock()


class Boom(Exception):
    """What a failing task raises."""


def _call(name: str) -> int:
    """Count one call of execute/revert in this process; die at the chosen one; the atom's executions so far."""
    global _calls
    with _lock:
        _calls += 1
        if FAILING and _calls == _kill_at:
            os._exit(CRASH_EXIT)
        return _executions.get(name, 0)


class Node(Task):
    """Returns its name; in the child, fails on its first ``fail`` executions."""

    def __init__(self, name: str, fail: int, **options: Any) -> None:
        super().__init__(name=name, **options)
        self.fail = fail

    def execute(self, **inputs: Any) -> str:
        done = _call(self.name)
        with _lock:
            _executions[self.name] = done + 1
        if FAILING and done < self.fail:
            raise Boom("%s fails (execution %d)" % (self.name, done + 1))
        return self.name

    def revert(self, **kwargs: Any) -> None:
        _call(self.name)


def shape(seed: int) -> dict[str, Any]:
    """The random choices of flow ``seed``: tasks, their inputs, the scope, who fails."""
    rng = random.Random(seed)
    count = rng.randint(3, 6)
    inputs = {j: sorted(i for i in range(j) if rng.random() < 0.4) for j in range(count)}
    scope_size = rng.randint(1, 3)
    scope_after = rng.randint(0, count - 1)  # the scope needs this task's value
    scope_fail = rng.choice([0, 1, 1, 2])  # first attempts failing: 2 uses up Times(2)
    failing_scope_task = rng.randrange(scope_size)
    outside_fail = rng.randrange(count) if rng.random() < 0.3 else -1
    consumer = rng.randrange(count) if rng.random() < 0.6 else -1  # a task needing the scope's value
    if consumer != -1 and consumer <= scope_after:
        consumer = -1
    return {
        "count": count,
        "inputs": inputs,
        "scope_size": scope_size,
        "scope_after": scope_after,
        "scope_fail": scope_fail,
        "failing_scope_task": failing_scope_task,
        "outside_fail": outside_fail,
        "consumer": consumer,
    }


@flow_factory
def make_flow(seed: int) -> graph_flow.Flow:
    """The graph flow of ``seed``."""
    s = shape(seed)
    flow = graph_flow.Flow("random-%d" % seed)
    for j in range(s["count"]):
        requires = ["v%d" % i for i in s["inputs"][j]]
        if j == s["consumer"]:
            requires.append("scoped")
        flow.add(Node("t%d" % j, 1 if j == s["outside_fail"] else 0, requires=requires, provides="v%d" % j))
    scope = linear_flow.Flow("scope", retry=Times(2, name="scope_retry"))
    for k in range(s["scope_size"]):
        requires = ["v%d" % s["scope_after"]] if k == 0 else []
        provides = "scoped" if k == s["scope_size"] - 1 else None
        fail = s["scope_fail"] if k == s["failing_scope_task"] else 0
        scope.add(Node("s%d" % k, fail, requires=requires, provides=provides))
    flow.add(scope)
    return flow


def _run(request: dict[str, Any]) -> None:
    """Run one flow in this (forked) process until it is killed or ends; never returns."""
    global FAILING, _kill_at
    FAILING = True
    _kill_at = int(request["kill"])
    options: dict[str, Any] = {"engine": request["engine"]}
    if request["engine"] == "parallel":
        options.update(executor="threads", max_workers=3)
    try:
        backend = fetch(request["backend"])
        engine = load_from_factory(make_flow, [int(request["seed"])], backend=backend, **options)
        Path(request["workdir"], "flow-detail").write_text(engine.flow_detail.uuid)
        try:
            engine.run()
        except Exception:  # a flow that reverts raises its failure; the logbook is what counts
            pass
        backend.close()
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def main() -> int:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run(request)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write("%d\n" % (os.waitstatus_to_exitcode(status),))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
