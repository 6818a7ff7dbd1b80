"""The process of ``test_notifications.py``'s crash test: ends itself from a SUCCESS listener.

::

    python -m tests.engines.success_listener_child URL ENGINE_OPTIONS_JSON ATOMS KILL_AT

runs a linear flow of ``ATOMS`` tasks (``t0``, ``t1``, ...) with its logbook at
``URL``, prints the flow detail's uuid, and ends the process with
``os._exit(KILL_EXIT)`` from a listener of the SUCCESS of task ``KILL_AT``:
no flush, no cleanup, as a process that is killed there.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from flowkit import engines, states
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.task import Task

#: The exit status the listener ends the process with.
KILL_EXIT = 17


class Step(Task):
    def execute(self) -> int:
        return 1


def main(url: str, options: dict[str, Any], atoms: int, kill_at: str) -> None:
    flow = linear_flow.Flow("chain").add(*(Step("t%d" % i) for i in range(atoms)))
    engine = engines.load(flow, backend=fetch({"connection": url}), **options)
    print(engine.flow_detail.uuid, flush=True)

    def on_success(state: Any, details: dict[str, Any]) -> None:
        if details["atom_name"] == kill_at:
            os._exit(KILL_EXIT)

    engine.atom_notifier.register(states.SUCCESS, on_success)
    engine.run()


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
