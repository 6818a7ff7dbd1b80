"""Flow factories for the ``flowkit.start`` tests, and the child process that starts one.

Each task appends one line to the file named by the store's ``log`` (one ``O_APPEND``
write, so lines from concurrent processes never interleave): the file is the tests' durable
record of which task ran, how often, and in which process.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import flowkit
from flowkit.patterns import linear_flow
from flowkit.task import Task
from tests.conductors.flows import append_line
from tests.support import wait_until

__all__ = ["noted", "noted_other", "failing_user", "failing_builtin", "gated", "executions", "race_child"]


class Note(Task):
    """Appends ``"<name> <pid>"`` to ``log`` and returns ``"<name>:<prefix>"``."""

    def execute(self, log: str, prefix: str) -> str:
        append_line(log, "%s %d" % (self.name, os.getpid()))
        return "%s:%s" % (self.name, prefix)


class Pair(Task):
    """Notes itself and returns ``[name, prefix]`` (provide it as two symbols)."""

    def execute(self, log: str, prefix: str) -> list[str]:
        append_line(log, "%s %d" % (self.name, os.getpid()))
        return [self.name, prefix]


class Gate(Task):
    """Notes itself, then waits for the ``release`` file to exist."""

    def execute(self, log: str, release: str) -> str:
        append_line(log, "%s %d" % (self.name, os.getpid()))
        wait_until(lambda: os.path.exists(release), "the release file %s" % release)
        return self.name


class Boom(Exception):
    """A user's exception type: a logbook can name it, never import it."""


class RaiseBoom(Task):
    def execute(self, log: str) -> None:
        append_line(log, "%s %d" % (self.name, os.getpid()))
        raise Boom("the %s task fails" % (self.name,))


class RaiseValueError(Task):
    def execute(self, log: str) -> None:
        append_line(log, "%s %d" % (self.name, os.getpid()))
        raise ValueError("bad value in %s" % (self.name,))


def noted(label: str) -> Any:
    """``a``, ``b``, then ``c``, which provides two symbols from one result."""
    flow = linear_flow.Flow("noted-%s" % (label,))
    return flow.add(Note("a", provides="first"), Note("b", provides="last"), Pair("c", provides=("x", "y")))


def noted_other(label: str) -> Any:
    """Another factory, to start a key with a second time."""
    return linear_flow.Flow("other-%s" % (label,)).add(Note("a", provides="first"))


def failing_user() -> Any:
    """``a`` runs, then ``boom`` raises a user exception: the flow reverts."""
    return linear_flow.Flow("failing").add(Note("a", provides="first"), RaiseBoom("boom"))


def failing_builtin() -> Any:
    """``a`` runs, then ``bad`` raises ValueError: the flow reverts."""
    return linear_flow.Flow("failing-builtin").add(Note("a", provides="first"), RaiseValueError("bad"))


def gated() -> Any:
    """``gate`` waits for the ``release`` file, then ``after`` runs."""
    return linear_flow.Flow("gated").add(Gate("gate"), Note("after", provides="after"))


def executions(log: str) -> list[tuple[str, int]]:
    """``(task name, pid)`` of every execution recorded in ``log``, in order."""
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [(name, int(pid)) for name, pid in (line.split() for line in f.read().splitlines())]


def race_child(backend_conf: dict[str, Any], key: str, log: str, barrier: Any, out: Any) -> None:
    """Start ``noted`` under ``key`` once ``barrier`` lets every racer go; report the outcome on ``out``."""
    try:
        barrier.wait(60)
        handle = flowkit.start(
            noted, key=key, backend=backend_conf, factory_args=["race"], store={"log": log, "prefix": "p"}
        )
        outcome = handle.result(timeout=60)
        out.put(json.dumps({"pid": os.getpid(), "created": handle.created, "uuid": handle.uuid, "result": outcome}))
    except BaseException as error:  # reported to the test, which fails on it
        out.put(json.dumps({"pid": os.getpid(), "error": "%s: %s" % (type(error).__name__, error)}))
        sys.stderr.write("race child failed: %r\n" % (error,))
