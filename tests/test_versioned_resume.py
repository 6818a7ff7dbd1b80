"""A flow killed mid-run, its code changed, then resumed: each kind of change is absorbed or refused.

In every engine mode a real process (``tests/versioned_child.py``) runs the flow
``start -> reserve -> allocate_ip -> configure -> notify -> report`` against an SQLite
file and dies inside ``configure`` (``os._exit`` in the engine process, or SIGKILL from
the Dask worker running the task).  So ``start``, ``reserve`` and ``allocate_ip`` are
finished (SUCCESS), ``configure`` is RUNNING, the rest PENDING.  Each test copies that
logbook, changes the code (``versioned_child.VARIANT``) and resumes it with
``load_from_detail``:

- a compatible change resumes at once, records what changed, and runs no finished atom
  again;
- an incompatible change raises ``FlowChanged`` naming the atoms and the kind of change,
  before anything runs or is written;
- with the migration that matches it, the resume proceeds, and no finished atom runs
  again except those the migration names in ``rerun``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit import states
from flowkit.engines import load_from_detail
from flowkit.exceptions import FlowChanged
from flowkit.persistence.backends import fetch
from flowkit.persistence.models import FlowDetail
from flowkit.versioning import CHANGES_KEY, DROPPED_KEY, STRUCTURE_KEY, Migration
from tests import versioned_child
from tests.versioned_child import CRASH_EXIT, journal

REPO_ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT = 120.0
FINISHED = ("start", "reserve", "allocate_ip")

pytestmark = pytest.mark.slow

# The logbook each mode's crashed run left, made once per mode: (directory, flow detail uuid).
_CRASHED: dict[str, tuple[Path, str]] = {}


def _child_options(engine_options: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in engine_options.items() if k != "client"}
    client = engine_options.get("client")
    if client is not None:
        options["address"] = client.scheduler.address
    return options


def _crashed_run(engine_mode: str, engine_options: dict[str, Any], root: Path) -> tuple[Path, str]:
    if engine_mode in _CRASHED:
        return _CRASHED[engine_mode]
    workdir = root / ("crashed-%s" % engine_mode)
    workdir.mkdir()
    env = dict(os.environ)
    roots = [str(REPO_ROOT), str(Path(flowkit.__file__).resolve().parent.parent)]
    env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONWARNINGS", None)
    conf = {"connection": "sqlite:///%s" % (workdir / "logbook.db",)}
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.versioned_child",
            "--backend",
            json.dumps(conf),
            "--workdir",
            str(workdir),
            "--engine-options",
            json.dumps(_child_options(engine_options)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert child.returncode in (CRASH_EXIT, -9), "the child did not die in configure: %d\n%s%s" % (
        child.returncode,
        child.stdout,
        child.stderr,
    )
    uuid = (workdir / "events").read_text().split()[1]
    assert journal(workdir) == ["start", "reserve", "allocate_ip", "configure"]
    _CRASHED[engine_mode] = (workdir, uuid)
    return workdir, uuid


class Resume:
    """One test's copy of the crashed logbook, and the code variant it resumes with."""

    def __init__(self, source: Path, uuid: str, workdir: Path, engine_options: dict[str, Any]) -> None:
        for part in [p for p in source.glob("logbook.db*") if p.is_file()]:  # with its write-ahead log
            shutil.copy(part, workdir / part.name)
        shutil.copy(source / "journal", workdir / "journal")
        self.workdir = workdir
        self.uuid = uuid
        self.options = engine_options
        self.backend = fetch({"connection": "sqlite:///%s" % (workdir / "logbook.db",)})
        # The factory's argument is the directory its tasks journal to: this copy's.
        with self.backend.get_connection() as conn:
            fd = conn.get_flow_details(uuid)
            fd.meta["factory"]["args"] = [str(workdir)]
            conn.update_flow_state(fd)
            conn.flush()

    def flow_detail(self) -> FlowDetail:
        with self.backend.get_connection() as conn:
            return conn.get_flow_details(self.uuid)

    def resume(self, migrate: Migration | None = None) -> Any:
        engine = load_from_detail(self.flow_detail(), backend=self.backend, migrate=migrate, **self.options)
        engine.run()
        return engine

    def executed_after_crash(self) -> Counter[str]:
        return Counter(journal(self.workdir)[4:])


@pytest.fixture
def crashed(
    engine_mode: str, engine_options: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> Resume:
    source, uuid = _crashed_run(engine_mode, engine_options, tmp_path_factory.getbasetemp())
    return Resume(source, uuid, tmp_path, engine_options)


@pytest.fixture(autouse=True)
def _code_version() -> Any:
    yield
    versioned_child.VARIANT = "base"


def _stored(crashed: Resume) -> FlowDetail:
    with crashed.backend.get_connection() as conn:
        return conn.get_flow_details(crashed.uuid)


# -- compatible changes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, ran, kinds",
    [
        ("add", {"configure", "notify", "report", "audit"}, {"added"}),
        ("reorder", {"configure", "notify", "report"}, set()),
        ("version_minor", {"configure", "notify", "report"}, {"version"}),
        ("retry_scope", {"configure_retry", "configure", "notify", "report"}, {"added", "scope"}),
    ],
)
def test_a_compatible_change_resumes_and_runs_no_finished_atom_again(
    crashed: Resume, variant: str, ran: set[str], kinds: set[str]
) -> None:
    versioned_child.VARIANT = variant
    engine = crashed.resume()
    assert engine.storage.get_flow_state() == states.SUCCESS
    tasks = ran - {"configure_retry"}
    assert crashed.executed_after_crash() == Counter(dict.fromkeys(tasks, 1))
    fd = _stored(crashed)
    assert {ad.name for ad in fd if ad.state == states.SUCCESS} == set(FINISHED) | ran
    record = fd.meta[CHANGES_KEY][-1]
    assert {d["kind"] for d in record["differences"]} == kinds
    assert all(d["compatible"] for d in record["differences"])
    # The structure recorded is now the new code's: resuming again changes nothing.
    assert fd.meta[STRUCTURE_KEY]["digest"] == record["to"] != record["from"]


# -- incompatible changes, then the migration that matches --------------------------------

CASES = {
    # variant: (what the error names, the migration, the finished atoms it runs again)
    "rename": (
        ["'allocate_ip'", "removed", "renamed to 'allocate_address'"],
        Migration(rename={"allocate_ip": "allocate_address"}),
        set(),
    ),
    "remove": (["'start'", "removed"], Migration(drop=["start"]), set()),
    "add_before": (
        ["'start'", "'check'", "is new"],
        Migration(rerun=["start", "reserve", "allocate_ip"]),
        set(FINISHED),
    ),
    "reorder_finished": (["'allocate_ip'", "'report'", "PENDING"], Migration(rerun=["allocate_ip"]), {"allocate_ip"}),
    "version_major": (["'allocate_ip'", "version 1.0 to 2.0"], Migration(rerun=["allocate_ip"]), {"allocate_ip"}),
    "provides": (
        ["'allocate_ip'", "provided 'ip'", "now provides 'address'"],
        Migration(rerun=["allocate_ip"]),
        {"allocate_ip"},
    ),
    "retry_scope_finished": (
        ["'allocate_ip'", "'provisioning_retry'", "is new"],
        Migration(rerun=["allocate_ip"]),
        {"allocate_ip"},
    ),
}


@pytest.mark.parametrize("variant", sorted(CASES))
def test_an_incompatible_change_is_refused_naming_it_then_its_migration_resumes(crashed: Resume, variant: str) -> None:
    named, migration, rerun = CASES[variant]
    versioned_child.VARIANT = variant
    before = _stored(crashed)
    with pytest.raises(FlowChanged) as refused:
        load_from_detail(crashed.flow_detail(), backend=crashed.backend, **crashed.options)
    message = str(refused.value)
    for part in named:
        assert part in message, message
    assert "'network'" in message and crashed.uuid in message and "Migration(" in message
    # Nothing ran, nothing was written.
    assert crashed.executed_after_crash() == Counter()
    after = _stored(crashed)
    assert after.meta == before.meta
    assert {(ad.name, ad.state) for ad in after} == {(ad.name, ad.state) for ad in before}

    engine = crashed.resume(migration)
    assert engine.storage.get_flow_state() == states.SUCCESS
    executed = crashed.executed_after_crash()
    # Only what the migration names and what had not finished runs; each once.
    assert set(executed) & set(FINISHED) == rerun & set(FINISHED)
    assert all(count == 1 for count in executed.values()), executed
    assert "configure" in executed and "notify" in executed
    fd = _stored(crashed)
    record = fd.meta[CHANGES_KEY][-1]
    assert record["migration"] == migration.to_data()
    if variant == "rename":
        renamed = fd.find_by_name("allocate_address")
        assert renamed is not None and renamed.results == "allocate_ip"  # the result it had, kept
        assert fd.find_by_name("allocate_ip") is None
        assert executed["allocate_address"] == 0
    if variant == "remove":
        dropped = fd.find_by_name("start")
        assert dropped is not None and dropped.state == states.IGNORE
        assert dropped.meta[DROPPED_KEY]["state"] == "SUCCESS"
