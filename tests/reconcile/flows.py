"""The public IP operations the reconciler tests run (registered in any process that imports this module).

Each operation's task appends ``start`` and ``end`` lines to the journal named
by ``$FLOWKIT_RECONCILE_JOURNAL`` (one ``O_APPEND`` write each, fsync'd, so
the lines survive a SIGKILL and never interleave).  The resource's facts steer
it: ``{"fail": {"attach": 2}}`` fails the first two attach operations
(``-1``: every one), ``{"gate": PATH}`` makes an operation wait until PATH
exists; ``$FLOWKIT_RECONCILE_FAIL_RATE`` fails that share of operations at
random.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow
from flowkit.task import Task
from tests.support import wait_until

JOURNAL_ENV = "FLOWKIT_RECONCILE_JOURNAL"
FAIL_RATE_ENV = "FLOWKIT_RECONCILE_FAIL_RATE"


class OperationFailed(Exception):
    """An injected failure of an operation."""


def journal(line: str) -> None:
    path = os.environ.get(JOURNAL_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def journal_lines(path: str) -> list[list[str]]:
    """The journal's lines, split into words (a missing journal is empty)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []


class Operate(Task):
    """One operation on a resource: journals its start and end, fails or waits as the facts say."""

    def execute(self, resource: dict[str, Any], facts: Any) -> str:
        key = "%s/%s" % (resource["kind"], resource["id"])
        journal("start %s %s %d %.6f" % (key, self.name, os.getpid(), time.time()))
        facts = facts if isinstance(facts, dict) else {}
        gate = facts.get("gate")
        if gate:
            wait_until(lambda: os.path.exists(gate), "the gate %s to open" % gate, timeout=60)
        planned = (facts.get("fail") or {}).get(self.name, 0)
        path = os.environ.get(JOURNAL_ENV)
        failed_before = sum(
            1 for w in journal_lines(path) if w[:3] == ["fail", key, self.name]
        ) if path else 0  # fmt: skip
        rate = float(os.environ.get(FAIL_RATE_ENV) or 0)
        if planned == -1 or failed_before < planned or (rate and random.random() < rate):
            journal("fail %s %s %d %.6f" % (key, self.name, os.getpid(), time.time()))
            raise OperationFailed("%s of %s failed (injected)" % (self.name, key))
        journal("end %s %s %d %.6f" % (key, self.name, os.getpid(), time.time()))
        return "%s %s" % (self.name, key)


def _operation(name: str) -> Any:
    return linear_flow.Flow(name).add(Operate(name))


@flow_factory("tests.reconcile.allocate")
def allocate() -> Any:
    return _operation("allocate")


@flow_factory("tests.reconcile.attach")
def attach() -> Any:
    return _operation("attach")


@flow_factory("tests.reconcile.detach")
def detach() -> Any:
    return _operation("detach")


@flow_factory("tests.reconcile.release")
def release() -> Any:
    return _operation("release")
