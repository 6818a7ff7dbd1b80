"""Run a flow that blocks in its second task until killed: ``python -m tests.cli_recover_child URL GATE``.

Prints the flow detail uuid, then ``blocked`` once the engine is inside the
second task (RUNNING in the logbook, its lock held).  The task returns at once
when the file GATE exists, so the same flow resumed after the kill finishes.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from flowkit.engines import load_from_factory
from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.task import Task


class Step(Task):
    """Return its name."""

    def execute(self) -> str:
        return self.name


class Gate(Task):
    """Return once the file ``gate`` exists (never, in the process that is killed)."""

    def execute(self, gate: str) -> str:
        if not os.path.exists(gate):
            print("blocked", flush=True)
            deadline = time.monotonic() + 120
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.05)  # only ever ends by SIGKILL in the tests
        return "passed"


@flow_factory
def make_gated() -> Any:
    """first -> gate -> last."""
    return linear_flow.Flow("gated").add(Step("first"), Gate("gate", provides="passed"), Step("last"))


if __name__ == "__main__":
    with fetch(sys.argv[1]) as backend:
        engine = load_from_factory(make_gated, store={"gate": sys.argv[2]}, backend=backend)
        print(engine.storage.flow_detail.uuid, flush=True)
        engine.run()
