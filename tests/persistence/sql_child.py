"""Child process for the multi-process SQL tests: ``python -m tests.persistence.sql_child CMD URL PREFIX [ARGS]``.

Commands (each prints ``ready`` and waits for a line on stdin before acting,
so the parent can start several children and release them together):

- ``upgrade``: call ``upgrade()``, print ``done``.
- ``lock FD_UUID``: take the flow-detail lock, print ``locked``, then wait to be killed.
- ``run NAME N``: run an N-task linear flow named NAME, print ``done``.
- ``signal FD_UUID KEY N``: send signal ``race`` to the flow detail with
  idempotency key KEY, print ``stored``, ``noop`` or ``already``, then send it
  N signals named ``PID-0``, ``PID-1``... (PID: this process's) and print ``done``.
"""

from __future__ import annotations

import os
import sys

from flowkit import engines, signals
from flowkit.exceptions import SignalAlreadySent
from flowkit.patterns import linear_flow
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.persistence.models import FlowDetail
from flowkit.task import Task


class Echo(Task):
    """Return the task's name."""

    def execute(self) -> str:
        return self.name


def main(argv: list[str]) -> int:
    command, url, prefix, *args = argv
    backend = SQLAlchemyBackend(url, table_prefix=prefix, create_schema=False)
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        if command == "upgrade":
            with backend.get_connection() as conn:
                conn.upgrade()
                conn.validate()
        elif command == "lock":
            with backend.get_connection() as conn:
                lock = conn.lock_flow(FlowDetail(name="locked", uuid=args[0]))
                print("locked", flush=True)
                sys.stdin.readline()  # killed here by the parent
                lock.release()
                return 3
        elif command == "run":
            name, count = args[0], int(args[1])
            flow = linear_flow.Flow(name).add(*(Echo("%s-%d" % (name, i)) for i in range(count)))
            backend.upgrade()
            engine = engines.load(flow, backend=backend, engine="parallel", max_workers=2)
            engine.run()
        elif command == "signal":
            fd_uuid, key, count = args[0], args[1], int(args[2])
            try:
                stored = signals.send(backend, fd_uuid, "race", key, idempotency_key=key)
                print("stored" if stored else "noop", flush=True)
            except SignalAlreadySent:
                print("already", flush=True)
            for i in range(count):
                signals.send(backend, fd_uuid, "%d-%d" % (os.getpid(), i), i)
        else:
            raise SystemExit("unknown command %r" % command)
        print("done", flush=True)
        return 0
    finally:
        backend.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
