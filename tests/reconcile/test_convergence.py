"""Real processes: three reconciling conductors, a service changing targets, faults and SIGKILLs.

Three ``flowkit reconcile`` processes work the ``public_ip`` resources while
a service process creates them and changes their targets at random; 10% of
operations fail (``$FLOWKIT_RECONCILE_FAIL_RATE``) and a conductor is
SIGKILLed now and then (and another started).  Afterwards every resource is at
the service's last target, or BROKEN after exactly ``max_errors`` failures in
a row of one rule; the fsync'd journal the operations write shows no two
operations running on one resource at once; every operation's flow detail is
in the logbook.  ``$FLOWKIT_RECONCILE_RESOURCES`` (default 40; the issue's
figure is 200) scales it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flowkit.reconcile import Resources, ResourceStatus
from tests.conductors.conftest import ROOT
from tests.persistence.conftest import POSTGRES_URL, server_url
from tests.reconcile import kinds
from tests.reconcile.flows import FAIL_RATE_ENV, JOURNAL_ENV, journal_lines
from tests.support import wait_until

COUNT = int(os.environ.get("FLOWKIT_RECONCILE_RESOURCES", "40"))
CHURN_SECONDS = 6.0
TTL = 2.0


def _env(journal: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONWARNINGS", None)
    env[JOURNAL_ENV] = str(journal)
    env[FAIL_RATE_ENV] = "0.1"
    return env


class Reconcilers:
    """The ``flowkit reconcile`` processes, started, killed and replaced by the test."""

    def __init__(self, url: str, board: str, tmp: Path, env: dict[str, str]) -> None:
        self.url, self.board, self.tmp, self.env = url, board, tmp, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: dict[int, float] = {}  # pid -> when it was SIGKILLed
        self.started = 0

    def start(self) -> None:
        self.started += 1
        name = "r%d" % self.started
        command = [
            sys.executable, "-m", "flowkit.cli", "reconcile", "--kind", "public_ip",
            "--import", "tests.reconcile.kinds", "--backend", self.url, "--board-name", self.board,
            "--name", name, "--ttl", str(TTL), "--poll", "0.1",
        ]  # fmt: skip
        with open(self.tmp / (name + ".out"), "w") as out:
            self.procs[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)

    def kill_one(self, rng: random.Random) -> None:
        name = rng.choice(sorted(n for n, p in self.procs.items() if p.poll() is None))
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        self.killed[proc.pid] = time.time()
        proc.wait()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(
                    "%s exited %s:\n%s" % (name, proc.returncode, (self.tmp / (name + ".out")).read_text())
                )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _check_no_overlap(journal: Path, killed: dict[int, float]) -> int:
    """No operation starts on a resource while another, in a live process, has not ended; the starts."""
    running: dict[str, tuple[int, float]] = {}
    starts = 0
    for words in journal_lines(str(journal)):
        event, key, pid, when = words[0], words[1], int(words[3]), float(words[4])
        if event == "start":
            starts += 1
            other = running.get(key)
            if other is not None:
                other_pid, other_start = other
                assert other_pid in killed and killed[other_pid] <= when, (
                    "%s started in pid %d at %.3f while the operation pid %d started at %.3f was running"
                    % (key, pid, when, other_pid, other_start)
                )
            running[key] = (pid, when)
        else:
            assert running.get(key, (None,))[0] == pid, "%s: %s in pid %d without its start" % (key, event, pid)
            del running[key]
    return starts


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("server", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_resources_converge_across_killed_conductors(server: str, tmp_path: Path) -> None:
    if server == "sqlite":
        url = "sqlite:///%s" % (tmp_path / "flowkit.db")
    else:
        url = server_url(POSTGRES_URL, "PostgreSQL", "FLOWKIT_TEST_POSTGRES_URL")
    run = "run%s" % uuid.uuid4().hex[:8]
    journal = tmp_path / "journal"
    env = _env(journal)
    rng = random.Random(18)
    with Resources(url) as store:
        store.backend.ensure_schema()  # one upgrade before the processes race to it
    reconcilers = Reconcilers(url, run, tmp_path, env)
    targets_file = tmp_path / "targets.json"
    try:
        for _ in range(3):
            reconcilers.start()
        churn = subprocess.Popen(
            [sys.executable, "-m", "tests.reconcile.churn", url, run, str(COUNT), str(CHURN_SECONDS), "7",
             str(targets_file)],
            env=env, cwd=ROOT,
        )  # fmt: skip
        kills = 0
        while churn.poll() is None:
            reconcilers.check_alive()
            try:
                churn.wait(rng.uniform(2.0, 3.0))
            except subprocess.TimeoutExpired:
                reconcilers.kill_one(rng)
                reconcilers.start()
                kills += 1
        assert churn.returncode == 0
        assert kills >= 2
        targets = json.loads(targets_file.read_text())

        with Resources(url) as store:
            store.reconcilers.add(kinds.RECONCILER)

            def settled() -> bool:
                reconcilers.check_alive()
                return all(
                    r.status is not ResourceStatus.CONVERGING and r.job is None
                    for r in store.list(kind="public_ip")
                    if r.id.startswith(run + "-")
                )

            wait_until(settled, "every resource to settle", timeout=150)
            found = {r.id: r for r in store.list(kind="public_ip") if r.id.startswith(run + "-")}
            assert len(found) == COUNT
            broken = 0
            ran = 0  # operations whose flow ran to an end: each started in the journal
            with store.backend.get_connection() as conn:
                for resource_id, resource in found.items():
                    history = store.operations("public_ip", resource_id)
                    if resource.status is ResourceStatus.BROKEN:
                        broken += 1
                        rule = kinds.RECONCILER.rule(resource.operation or history[-1].rule)
                        assert rule is not None
                        # Errors are counted per rule and reset by that rule's success: its
                        # last max_errors runs failed (other rules may have run between them).
                        last = [op for op in history if op.rule == rule.name][-rule.max_errors :]
                        assert len(last) == rule.max_errors, resource_id
                        assert all(op.outcome != "SUCCESS" for op in last), resource_id
                        assert resource.errors == {rule.name: rule.max_errors}
                    else:
                        assert (resource.status, resource.current) == (ResourceStatus.CONVERGED, targets[resource_id])
                        assert resource.observed_generation == resource.generation
                    for op in history:
                        assert op.outcome is not None, (resource_id, op)
                        ran += op.outcome in ("SUCCESS", "REVERTED")
                        assert conn.get_flow_details(op.flow).name == "public_ip/%s: %s" % (resource_id, op.rule)
        starts = _check_no_overlap(journal, reconcilers.killed)
        assert ran > COUNT // 2 and starts >= ran
        assert broken < COUNT // 4
    finally:
        reconcilers.stop()
