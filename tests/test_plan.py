"""The plan of a resume is what the resume then does, atom by atom.

The property: over random graph flows with a retry scope (``tests/plan_child.py``), each
run by a real process that fails where the seed says (retries, a scope that gives up, a
flow that reverts) and is killed with ``os._exit`` at a random call of ``execute`` or
``revert`` (in a serial or a parallel engine), the plan made from the logbook
(``flowkit.plan.plan_flow_detail``) says for every atom what resuming it does: skipped
atoms neither run nor revert, atoms to run (or run again) execute once, atoms to revert
revert once, atoms whose scope retries revert and then execute; and the flow ends as the
plan says.  The seeded generator makes the cases; ``FLOWKIT_PLAN_SEED=N`` replays one
set, ``FLOWKIT_PLAN_CASES`` sets how many.

Then: a plan changes nothing and takes no lock (``flowkit plan`` while another engine
holds the flow's lock), and ``flowkit plan`` / ``flowkit resume --dry-run`` print it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit import states
from flowkit.cli import main
from flowkit.engines import load_from_detail, load_from_factory
from flowkit.persistence.backends import fetch
from flowkit.plan import Action, plan_flow_detail
from tests import versioned_child
from tests.plan_child import CRASH_EXIT, make_flow

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("FLOWKIT_PLAN_SEED", "1414"))
CASES = int(os.environ.get("FLOWKIT_PLAN_CASES", "16"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    roots = [str(REPO_ROOT), str(Path(flowkit.__file__).resolve().parent.parent)]
    env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONWARNINGS", None)
    return env


class Runner:
    """The process that forks one process per run (``tests/plan_child.py``)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.plan_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_env(),
            text=True,
        )

    def killed_run(self, workdir: Path, template: Path, seed: int, kill: int, engine: str) -> tuple[Any, str] | None:
        """Run flow ``seed`` killed at call ``kill``; the backend and flow detail, or None if it finished."""
        shutil.copy(template, workdir / "logbook.db")  # the schema, made once
        conf = {"connection": "sqlite:///%s" % (workdir / "logbook.db",)}
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"backend": conf, "workdir": str(workdir), "seed": seed, "kill": kill, "engine": engine}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        status = int(self.process.stdout.readline())
        if status == 0:
            return None
        assert status == CRASH_EXIT, "the run of flow %d exited %d" % (seed, status)
        return fetch(conf), (workdir / "flow-detail").read_text()

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.process.stdout.close()


def _what_the_resume_did(backend: Any, uuid: str) -> tuple[dict[str, list[str]], str]:
    """Resume the flow detail (nothing fails now); each atom's executions and reverts in order, the final state."""
    with backend.get_connection() as conn:
        fd = conn.get_flow_details(uuid)
    engine = load_from_detail(fd, backend=backend)
    did: dict[str, list[str]] = defaultdict(list)

    def seen(state: Any, details: dict[str, Any]) -> None:
        if state == states.RUNNING:
            did[details["atom_name"]].append("execute")
        elif state == states.REVERTING:
            did[details["atom_name"]].append("revert")

    engine.atom_notifier.register("*", seen)
    try:
        engine.run()
    except Exception:
        pass  # a flow that was reverting ends REVERTED, re-raising what made it revert
    return did, str(engine.storage.get_flow_state())


EXPECTED = {
    Action.SKIP: [],
    Action.NONE: [],
    Action.RUN: ["execute"],
    Action.RERUN: ["execute"],
    Action.REVERT: ["revert"],
    Action.REVERT_AND_RUN: ["revert", "execute"],
}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_plan_is_what_the_resume_does(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    template = tmp_path / "empty.db"
    with fetch("sqlite:///%s" % (template,)) as made, made.get_connection() as conn:
        conn.upgrade()
    runner = Runner()
    try:
        _check_cases(rng, runner, template, tmp_path)
    finally:
        runner.close()


def _check_cases(rng: random.Random, runner: Runner, template: Path, tmp_path: Path) -> None:
    checked = 0
    kinds: set[Action] = set()
    for case in range(CASES):
        seed = rng.randrange(10**6)
        kill = rng.randint(1, 14)
        engine = rng.choice(["serial", "parallel"])
        workdir = tmp_path / str(case)
        workdir.mkdir()
        killed = runner.killed_run(workdir, template, seed, kill, engine)
        if killed is None:
            continue  # the flow ended before the chosen call
        backend, uuid = killed
        with backend.get_connection() as conn:
            plan = plan_flow_detail(conn.get_flow_details(uuid))
        where = "FLOWKIT_PLAN_SEED=%d, case %d (flow seed %d, killed at call %d, %s)" % (
            SEED,
            case,
            seed,
            kill,
            engine,
        )
        assert not plan.changes and not plan.refused, where
        did, final = _what_the_resume_did(backend, uuid)
        if plan.outcome == "UNDECIDED":
            continue  # a controller's decision pending: the plan says it cannot tell
        for step in plan.steps:
            kinds.add(step.action)
            assert did.get(step.atom, []) == EXPECTED[step.action], "%s: atom %r (%s, planned %s): did %s\n%s" % (
                where,
                step.atom,
                step.state,
                step.action.value,
                did.get(step.atom, []),
                json.dumps(plan.to_data(), indent=1),
            )
        assert final == plan.outcome, where
        checked += 1
    # The cases reached what the property is about: most runs were killed, and the plans
    # skipped, ran, re-ran and reverted atoms.
    assert checked >= CASES // 2, checked
    assert {Action.SKIP, Action.RUN, Action.REVERT} <= kinds, kinds


# -- no side effects, and the command -----------------------------------------------------


@pytest.fixture
def suspended(tmp_path: Path) -> tuple[str, str]:
    """The versioned-resume flow stopped after ``allocate_ip``: the backend URL and the flow detail's uuid."""
    url = "sqlite:///%s" % (tmp_path / "logbook.db",)
    engine = load_from_factory(versioned_child.make_flow, [str(tmp_path)], backend=fetch(url))

    def suspend(state: Any, details: dict[str, Any]) -> None:
        if state == states.SUCCESS and details["atom_name"] == "allocate_ip":
            engine.suspend()

    engine.atom_notifier.register("*", suspend)
    engine.run()
    return url, engine.flow_detail.uuid


def test_a_plan_writes_nothing_and_takes_no_lock(
    suspended: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, uuid = suspended
    backend = fetch(url)
    with backend.get_connection() as conn:
        before = conn.get_flow_details(uuid)
        held = conn.lock_flow(before)  # another engine drives the flow meanwhile
        try:
            versioned_child.VARIANT = "rename"
            assert main(["plan", uuid, "--backend", url, "--import", "tests.versioned_child"]) == 1
            out = capsys.readouterr().out
            assert main(["plan", uuid, "--backend", url, "--rename", "allocate_ip=allocate_address", "--json"]) == 0
            data = json.loads(capsys.readouterr().out)
        finally:
            held.release()
            versioned_child.VARIANT = "base"
        after = conn.get_flow_details(uuid)
    assert after.meta == before.meta
    assert {(ad.name, ad.state, ad.version) for ad in after} == {(ad.name, ad.state, ad.version) for ad in before}
    assert "REFUSED  atom 'allocate_ip', finished (SUCCESS) in the logbook, was removed" in out
    assert "renamed to 'allocate_address'?" in out
    steps = {step["atom"]: step for step in data["steps"]}
    assert [steps[name]["action"] for name in ("start", "reserve", "allocate_address", "configure", "notify")] == [
        "skip",
        "skip",
        "skip",
        "run",
        "run",
    ]
    assert data["changes"][0]["kind"] == "renamed" and data["refused"] is False
    assert data["outcome"] == "SUCCESS"


def test_resume_dry_run_prints_the_plan_and_runs_nothing(
    suspended: tuple[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url, uuid = suspended
    ran = versioned_child.journal(tmp_path)
    assert main(["resume", uuid, "--backend", url, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan for flow 'network' (%s), now SUSPENDED\n" % (uuid,))
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("start ", "configure "))}
    assert rows["start"][:5] == ["start", "task", "SUCCESS", "1.0", "skip"]
    assert rows["configure"][:4] == ["configure", "task", "PENDING", "1.0"] and rows["configure"][4] == "run"
    assert out.endswith("outcome if nothing fails: SUCCESS\n")
    assert versioned_child.journal(tmp_path) == ran
    # Then the real resume does what it said.
    assert main(["resume", uuid, "--backend", url]) == 0
    assert versioned_child.journal(tmp_path)[len(ran) :] == ["configure", "notify", "report"]


def test_the_engine_plans_a_flow_in_flight(tmp_path: Path) -> None:
    engine = load_from_factory(make_flow, [7], backend=fetch("sqlite:///%s" % (tmp_path / "l.db",)))
    plan = engine.plan()
    assert {step.action for step in plan.steps} == {Action.RUN}
    assert plan.outcome == "SUCCESS" and not plan.changes
    engine.run()
    assert {step.action for step in engine.plan().steps} == {Action.SKIP}
