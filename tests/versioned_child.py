"""The flows of the versioned-resume tests, and the process that runs the first version until it dies.

``test_versioned_resume.py`` runs this module in a child process::

    python -m tests.versioned_child --backend CONF_JSON --workdir DIR [--engine-options JSON]

It loads version "base" of the flow with ``load_from_factory``, writes ``flow-detail UUID``
to ``DIR/events`` and runs it.  ``configure`` is where it dies: the task finds
``DIR/armed`` (holding the engine process's pid), claims it with a rename (so it fires
once) and ends the engine process, with ``os._exit`` when it runs in it (serial,
parallel) or with SIGKILL from the Dask worker it runs on (distributed).

The parent then sets :data:`VARIANT` (the code "changed") and resumes the flow detail.
Every ``execute`` appends ``execute NAME`` to ``DIR/journal`` first, in whatever process
it runs, so the parent counts what ran before and after the crash.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from flowkit.engines import load_from_factory
from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import fetch
from flowkit.retry import Times
from flowkit.task import Task

#: The exit status of a child that died where it was told to.
CRASH_EXIT = 75

#: Which version of the code this process has (the parent changes it before resuming).
VARIANT = "base"

VARIANTS = (
    "base",
    "add",
    "add_before",
    "remove",
    "rename",
    "reorder",
    "reorder_finished",
    "version_minor",
    "version_major",
    "provides",
    "retry_scope",
    "retry_scope_finished",
)


class Step(Task):
    """Journal the execution, return the atom's name; ``configure`` ends the engine once armed."""

    def __init__(self, name: str, workdir: str, **options: Any) -> None:
        super().__init__(name=name, **options)
        self.workdir = workdir

    def execute(self, **inputs: Any) -> str:
        with open(os.path.join(self.workdir, "journal"), "a") as journal:
            journal.write("execute %s\n" % (self.name,))
        if self.name == "configure":
            _crash_if_armed(self.workdir)
        return self.name


class StepV2(Step):
    """The same step at version 2.0 (a result of version 1 must not be used)."""

    version = (2, 0)


class StepV1_1(Step):
    """The same step at version 1.1 (a fix that keeps the meaning of its result)."""

    version = (1, 1)


def _crash_if_armed(workdir: str) -> None:
    armed = os.path.join(workdir, "armed")
    try:
        os.rename(armed, armed + ".fired")
    except FileNotFoundError:
        return
    pid = int(Path(armed + ".fired").read_text())
    if pid == os.getpid():
        os._exit(CRASH_EXIT)
    os.kill(pid, signal.SIGKILL)  # the engine process; this Dask worker lives on


def build(variant: str, workdir: str) -> linear_flow.Flow:
    """The flow of ``variant``: base is start, reserve, allocate_ip, configure, notify, report."""

    def step(name: str, cls: type[Step] = Step, **options: Any) -> Step:
        return cls(name, workdir, **options)

    ip_name = "allocate_address" if variant == "rename" else "allocate_ip"
    ip_cls: type[Step] = {"version_major": StepV2, "version_minor": StepV1_1}.get(variant, Step)
    ip_symbol = "address" if variant == "provides" else "ip"
    start = step("start")
    reserve = step("reserve", provides="reservation")
    allocate = step(ip_name, ip_cls, requires=["reservation"], provides=ip_symbol)
    configure = step("configure", requires=[ip_symbol], provides="config")
    notify = step("notify", requires=["config"])
    report = step("report")
    flow = linear_flow.Flow("network")
    if variant == "add_before":
        flow.add(step("check"))
    if variant != "remove":
        flow.add(start)
    flow.add(reserve)
    if variant == "reorder_finished":
        flow.add(report)
    if variant == "retry_scope_finished":
        flow.add(linear_flow.Flow("provisioning", retry=Times(2, name="provisioning_retry")).add(allocate, configure))
    else:
        flow.add(allocate)
        if variant == "retry_scope":
            flow.add(linear_flow.Flow("configuring", retry=Times(2, name="configure_retry")).add(configure, notify))
        else:
            flow.add(configure)
    if variant == "reorder":
        flow.add(report, notify)
    elif variant == "reorder_finished":
        flow.add(notify)
    elif variant != "retry_scope":
        flow.add(notify, report)
    else:
        flow.add(report)
    if variant == "add":
        flow.add(step("audit"))
    return flow


@flow_factory
def make_flow(workdir: str) -> linear_flow.Flow:
    """The flow of this process's :data:`VARIANT`."""
    return build(VARIANT, workdir)


def journal(workdir: Path) -> list[str]:
    """The names of the atoms executed so far, in order."""
    path = workdir / "journal"
    if not path.exists():
        return []
    return [line.split()[1] for line in path.read_text().splitlines() if line.startswith("execute ")]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--engine-options", default="{}")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    (workdir / "armed").write_text(str(os.getpid()))
    backend = fetch(json.loads(args.backend))
    engine = load_from_factory(make_flow, [str(workdir)], backend=backend, **json.loads(args.engine_options))
    with open(workdir / "events", "a") as events:
        events.write("flow-detail %s\n" % (engine.flow_detail.uuid,))
    engine.run()
    return 0  # the crash point was never reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
