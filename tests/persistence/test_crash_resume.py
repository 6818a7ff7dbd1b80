"""Kill a real process mid-flow, resume from the logbook, and check nothing done is redone.

Each test runs ``tests/persistence/crash_child.py`` in a child process (``sys.executable``)
against a database; the child dies with ``os._exit`` or SIGKILL at a chosen point (before,
during and after an atom's execute, during a revert, during a retry). This process then
reads the logbook, resumes with ``load_from_detail`` and checks, from the journal every
task writes to (one line per execute and revert call, written before it goes on), that:

- the flow ends as it would have without the crash, with the same results;
- no atom whose result was durable at the crash runs again (nor is a reverted atom
  reverted again);
- at most the atoms that were in flight run a second time.

Coordination is deterministic: the child crashes itself at the point it was given, or
prints ``ready`` and waits for SIGKILL. Every test runs in every engine mode (the
``engine_mode`` fixture, ``FLOWKIT_ENGINE_MODE``) and against every SQL backend: an SQLite
file, and PostgreSQL at ``FLOWKIT_TEST_POSTGRES_URL`` (skipped when unreachable, except
under ``CI=true``, where that is a failure).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit import states
from flowkit.engines import load_from_detail
from flowkit.exceptions import WrappedFailure
from flowkit.persistence.backends import fetch
from tests.persistence.conftest import drop_tables, unique_prefix
from tests.persistence.crash_child import CRASH_EXIT, IN_TASK_CRASHES, CrashTestError, read_journal

CHILD_TIMEOUT = 60.0
REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

Event = tuple[str, str]


# -- backends ----------------------------------------------------------------------------


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def backend_conf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The conf (for ``fetch``) of a database the child and this process share."""
    if request.param == "sqlite":
        yield {"connection": "sqlite:///%s" % (tmp_path / "crash.db",)}
        return
    # skips, or fails under CI=true, when the server is unreachable
    url = request.getfixturevalue("postgres_url" if request.param == "postgresql" else "mysql_url")
    prefix = unique_prefix()
    yield {"connection": url, "table_prefix": prefix}
    drop_tables(url, prefix)


# -- running the child -------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    # The child must import the same flowkit and the tests package this process does.
    env = dict(os.environ)
    roots = [str(REPO_ROOT), str(Path(flowkit.__file__).resolve().parent.parent)]
    env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONWARNINGS", None)
    return env


class Crash:
    """What a crashed child left behind: its flow detail, journal and logbook states."""

    def __init__(self, fd_uuid: str, journal: list[Event], at_crash: dict[str, tuple[str, str]]) -> None:
        self.fd_uuid = fd_uuid
        self.journal = journal
        self.at_crash = at_crash  # atom name -> (state, intention) in the logbook after the crash


def _child_engine_options(engine_options: dict[str, Any]) -> dict[str, Any]:
    """The child's engine options as JSON data: a Dask client is passed by its scheduler's address."""
    client = engine_options.get("client")
    if client is None:
        return engine_options
    options = {k: v for k, v in engine_options.items() if k != "client"}
    options["address"] = client.scheduler.address
    return options


def crash_child(
    backend_conf: dict[str, Any],
    journal: Path,
    scenario: str,
    crash: str,
    engine_options: dict[str, Any],
) -> Crash:
    """Run the scenario in a child process that dies at ``crash``; return what it left."""
    engine_options = _child_engine_options(engine_options)
    # On a Dask worker an in-task crash point SIGKILLs the engine process (see crash_child).
    remote = engine_options.get("engine") == "distributed" and crash.split(":")[0] in IN_TASK_CRASHES
    argv = [
        sys.executable,
        "-m",
        "tests.persistence.crash_child",
        "--backend", json.dumps(backend_conf),
        "--journal", str(journal),
        "--scenario", scenario,
        "--crash", crash,
        "--engine-options", json.dumps(engine_options),
    ]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
        cwd=str(REPO_ROOT),
    )
    killed = False
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if crash.startswith("sigkill:") and not remote and first.startswith("flow-detail "):
            line = proc.stdout.readline()
            if line.startswith("ready "):
                proc.send_signal(signal.SIGKILL)
                killed = True
            first += line
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = first + out
    expected = -signal.SIGKILL if killed or remote else CRASH_EXIT
    assert proc.returncode == expected, (
        "child did not crash at %s (exit %s)\n--- stdout ---\n%s\n--- stderr ---\n%s"
        % (crash, proc.returncode, out, err)
    )
    fd_uuid = out.split()[1]
    with fetch(backend_conf) as backend, backend.get_connection() as conn:
        detail = conn.get_flow_details(fd_uuid)
        at_crash = {ad.name: (str(ad.state), str(ad.intention)) for ad in detail}
    return Crash(fd_uuid, read_journal(str(journal)), at_crash)


def resume(
    backend_conf: dict[str, Any], fd_uuid: str, engine_options: dict[str, Any]
) -> tuple[str, dict[str, Any], Any]:
    """Resume the flow detail here; return its final state, its results and what run() raised."""
    raised: BaseException | None = None
    with fetch(backend_conf) as backend:
        with backend.get_connection() as conn:
            detail = conn.get_flow_details(fd_uuid)
        engine = load_from_detail(detail, backend=backend, **engine_options)
        try:
            engine.run()
        except (CrashTestError, WrappedFailure) as error:
            raised = error
        return str(engine.storage.get_flow_state()), engine.storage.fetch_all(), raised


# -- checking what ran -------------------------------------------------------------------


def check_reruns(crash: Crash, after: list[Event], expected: list[Event], crashed: str) -> None:
    """Everything expected ran; only in-flight atoms (or ``crashed``) ran twice; done stays done."""
    allowed: set[Event] = set()
    for name, (state, _) in crash.at_crash.items():
        if state == states.RUNNING:
            allowed.add(("execute", name))
        elif state == states.REVERTING:
            allowed.add(("revert", name))
    # The crashed atom is in flight even when its RUNNING (or SUCCESS) record
    # was not flushed yet, so it may be PENDING (or RUNNING) in the logbook.
    allowed.add(("execute", crashed))
    allowed.add(("revert", crashed))

    total = collections.Counter(crash.journal + after)
    wanted = collections.Counter(expected)
    assert not wanted - total, "never ran: %s (journal %s + %s)" % (wanted - total, crash.journal, after)
    extra = total - wanted
    assert set(extra) <= allowed and all(n == 1 for n in extra.values()), (
        "ran again, but was not in flight: %s (logbook at the crash: %s)" % (dict(extra), crash.at_crash)
    )
    for name, (state, intention) in crash.at_crash.items():
        if state == states.SUCCESS and intention == states.EXECUTE:
            assert ("execute", name) not in after, "%s was done at the crash but ran again" % (name,)
        if state == states.REVERTED:
            assert ("revert", name) not in after, "%s was reverted at the crash but reverted again" % (name,)


def _dedupe(events: list[Event]) -> list[Event]:
    """Collapse a re-run that directly follows the run it repeats."""
    out: list[Event] = []
    for event in events:
        if not out or out[-1] != event:
            out.append(event)
    return out


def run_crash_case(
    tmp_path: Path,
    backend_conf: dict[str, Any],
    engine_options: dict[str, Any],
    scenario: str,
    crash: str,
    expected: list[Event],
    ordered: bool = True,
) -> tuple[Crash, list[Event], str, dict[str, Any], Any]:
    journal = tmp_path / "journal.txt"
    crashed = crash.split(":", 1)[1].split("@", 1)[0]
    result = crash_child(backend_conf, journal, scenario, crash, engine_options)
    state, values, raised = resume(backend_conf, result.fd_uuid, engine_options)
    after = read_journal(str(journal))[len(result.journal):]
    check_reruns(result, after, expected, crashed)
    if ordered:
        assert _dedupe(result.journal + after) == expected
    return result, after, state, values, raised


E = "execute"
R = "revert"

LINEAR = [(E, "a"), (E, "b"), (E, "c"), (E, "d")]

LINEAR_CRASHES = [
    "running:a",  # before the first atom's RUNNING record is flushed
    "start:b",  # RUNNING durable, execute not begun
    "during:b",  # execute half done
    "success:b",  # result saved, maybe not flushed
    "start:c",  # right after b's result became durable
    "sigkill:c",
    "during:d",  # the last atom
    "success:d",  # everything ran, the flow's SUCCESS not written
]


@pytest.mark.parametrize("crash", LINEAR_CRASHES)
def test_linear_flow_resumes_where_it_stopped(
    tmp_path: Path, backend_conf: dict[str, Any], engine_options: dict[str, Any], crash: str
) -> None:
    result, after, state, values, raised = run_crash_case(
        tmp_path, backend_conf, engine_options, "linear", crash, LINEAR
    )
    assert raised is None
    assert state == states.SUCCESS
    assert values["after_d"] == ["a", "b", "c", "d"]
    if crash.startswith(("start:", "during:", "sigkill:")):
        # The crashed atom's RUNNING record was durable, and so was everything before it.
        crashed = crash.split(":")[1]
        assert result.at_crash[crashed] == (states.RUNNING, states.EXECUTE)
        done_before = [name for _, name in LINEAR[: [n for _, n in LINEAR].index(crashed)]]
        assert all(result.at_crash[name][0] == states.SUCCESS for name in done_before)


@pytest.mark.parametrize("crash", ["during:p2", "sigkill:p3", "success:p1", "start:d"])
def test_unordered_flow_reruns_only_what_was_in_flight(
    tmp_path: Path, backend_conf: dict[str, Any], engine_options: dict[str, Any], crash: str
) -> None:
    expected = [(E, "a"), (E, "p1"), (E, "p2"), (E, "p3"), (E, "d")]
    _, _, state, values, raised = run_crash_case(
        tmp_path, backend_conf, engine_options, "unordered", crash, expected, ordered=False
    )
    assert raised is None
    assert state == states.SUCCESS
    assert values["after_p1"] == ["a", "p1"] and values["after_d"] == ["a", "d"]


REVERT = [(E, "a"), (E, "b"), (E, "c"), (E, "boom"), (R, "boom"), (R, "c"), (R, "b"), (R, "a")]


@pytest.mark.parametrize(
    "crash",
    [
        "during:boom",  # the failing atom, before it fails
        "revert:boom",  # reverting the failed atom itself
        "revert:b",  # halfway through the revert
        "reverted:b",  # b's REVERTED saved, maybe not flushed
        "revert:a",  # the last revert
    ],
)
def test_reverting_flow_resumes_reverting(
    tmp_path: Path, backend_conf: dict[str, Any], engine_options: dict[str, Any], crash: str
) -> None:
    result, after, state, _, raised = run_crash_case(
        tmp_path, backend_conf, engine_options, "revert", crash, REVERT
    )
    assert state == states.REVERTED
    # The original failure comes back from the logbook (as data: type names and message).
    failures = list(raised) if isinstance(raised, WrappedFailure) else None
    if failures is not None:
        assert [f.check(CrashTestError) for f in failures] == [CrashTestError]
        assert failures[0].exception_str == "boom failed"
    else:
        assert isinstance(raised, CrashTestError)
    assert not any(event == (E, name) for event in after for name in ("a", "b", "c"))


RETRY = [
    (E, "a"),
    (E, "b"),
    (E, "flaky"),  # fails the first time
    (R, "flaky"),
    (R, "b"),
    (E, "b"),  # second attempt
    (E, "flaky"),
    (E, "c"),
]


@pytest.mark.parametrize(
    "crash",
    [
        "revert:flaky",  # the retry is reverting its scope
        "revert:b",
        "reverted:b",  # scope reverted, the controller not yet asked again
        "running:attempts-retry@2",  # the controller's second run
        "start:b@2",  # the second attempt begins
        "during:flaky@2",  # the second attempt of the failed atom
        "start:c",  # after the retried scope succeeded
    ],
)
def test_retrying_flow_resumes_its_retry(
    tmp_path: Path, backend_conf: dict[str, Any], engine_options: dict[str, Any], crash: str
) -> None:
    result, after, state, values, raised = run_crash_case(
        tmp_path, backend_conf, engine_options, "retry", crash, RETRY
    )
    assert raised is None
    assert state == states.SUCCESS
    assert values["after_c"] == ["a", "b", "flaky", "c"]
    assert (E, "a") not in after


def test_a_child_that_does_not_crash_fails_the_harness(
    tmp_path: Path, backend_conf: dict[str, Any], engine_options: dict[str, Any]
) -> None:
    # Guards the harness itself: a crash point that is never reached must not pass quietly.
    with pytest.raises(AssertionError, match="did not crash at during:nosuchatom"):
        crash_child(backend_conf, tmp_path / "journal.txt", "linear", "during:nosuchatom", engine_options)
