"""Post flows as jobs on a job board; a conductor claims them, runs them, consumes them.

The producer never runs a flow: it posts a *job* naming a factory (a
function registered with ``@flow_factory`` that builds the flow) and the
values the flow needs.  A conductor claims each job under a lease, rebuilds
the flow with the registered factory the job's logbook names (a conductor in
another process imports this module, ``flowkit conductor --import
jobboard_conductor``, to know it), runs it, and consumes the job.  A flow that
fails reverts, and its job is done too: the outcome is in the logbook.

Here everything is in one process (a memory board, a SQLite logbook) so the
output is deterministic; ``doc/jobs.rst`` shows the same with PostgreSQL and
conductors in their own processes (``flowkit conductor``).
"""

from __future__ import annotations

import os
import sys
import tempfile

from flowkit import LinearFlow, Task
from flowkit.conductors import EVENTS, fetch, post_flow
from flowkit.factories import flow_factory
from flowkit.jobs.backends import fetch as fetch_board
from flowkit.persistence.backends import fetch as fetch_backend

MAX_SIZE_GB = 100


class Allocate(Task):
    """Reserve a volume; undone by releasing it."""

    default_provides = "volume"

    def execute(self, name: str, size_gb: int) -> str:
        print(f"    allocate {name} ({size_gb} GB)")
        return f"vol-{name}"

    def revert(self, name: str, size_gb: int, **kwargs: object) -> None:
        print(f"    release {name}")


class Attach(Task):
    """Attach the volume to a host; fails for sizes the host cannot take."""

    def execute(self, volume: str, size_gb: int, host: str) -> None:
        if size_gb > MAX_SIZE_GB:
            raise ValueError(f"{host} cannot attach {size_gb} GB (max {MAX_SIZE_GB})")
        print(f"    attach {volume} to {host}")


@flow_factory
def make_provision_flow(name: str) -> LinearFlow:
    """The factory each job names; a conductor calls it to rebuild the flow."""
    return LinearFlow(f"provision-{name}").add(Allocate("allocate"), Attach("attach"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        persistence = fetch_backend(f"sqlite:///{os.path.join(tmp, 'logbook.db')}")
        board = fetch_board("volumes", {"board": "memory"}, persistence=persistence)

        print("Posting jobs:")
        jobs = []
        for name, size in [("db", 20), ("logs", 500), ("cache", 5)]:
            job = post_flow(
                board,
                make_provision_flow,
                [name],
                store={"name": name, "size_gb": size, "host": "node-1"},
                name=f"provision-{name}",
                idempotency_key=f"provision-{name}",
            )
            jobs.append(job)
            print(f"  {job.name}: {job.state}")
        again = post_flow(board, make_provision_flow, ["db"], name="provision-db", idempotency_key="provision-db")
        print(f"  provision-db posted again with the same idempotency key: same job? {again == jobs[0]}")
        extra = post_flow(board, make_provision_flow, ["tmp"], store={"name": "tmp", "size_gb": 1, "host": "node-1"},
                          name="provision-tmp")
        print(f"  provision-tmp cancelled before anyone claimed it: {board.cancel(extra)}")

        conductor = fetch("blocking", "conductor-1", board, persistence=persistence)

        def report(event: str, details: dict[str, object]) -> None:
            job = details["job"]
            state = details.get("state")
            print(f"  [{event}] {job.name}" + (f" -> {state}" if state else ""))  # type: ignore[attr-defined]

        for event in EVENTS:
            conductor.notifier.register(event, report)

        print("\nConductor running three jobs:")
        conductor.run(max_dispatches=3)

        print("\nAfterwards:")
        with persistence.get_connection() as conn:
            for job in [*jobs, extra]:
                (flow_detail,) = conn.get_logbook(job.book_uuid)
                print(f"  {job.name}: job {job.state}, flow {flow_detail.state or 'never ran'}")
        print(f"  jobs left on the board: {board.job_count}")
        board.close()
        persistence.close()


if __name__ == "__main__":
    # Run the importable copy of this file, so the jobs record the factory as
    # jobboard_conductor:make_provision_flow rather than __main__.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jobboard_conductor

    jobboard_conductor.main()
