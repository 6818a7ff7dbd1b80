"""Run a flow whose second task kills its process, leaving the flow detail RUNNING in the logbook.

python -m tests.web.crash_child sqlite:///path   (prints the flow detail uuid first)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from flowkit.engines import load_from_factory
from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.task import Task


class Step(Task):
    def execute(self) -> str:
        return "done"


class Die(Task):
    def execute(self) -> None:
        sys.stdout.flush()
        os._exit(17)  # no cleanup at all: the kernel drops the flow lock


@flow_factory
def make_doomed() -> Any:
    return linear_flow.Flow("doomed").add(Step("first"), Die("die"))


if __name__ == "__main__":
    with fetch(sys.argv[1]) as backend:
        engine = load_from_factory(make_doomed, backend=backend)
        print(engine.storage.flow_detail.uuid, flush=True)
        engine.run()
