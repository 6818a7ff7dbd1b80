"""Crash fuzzing: kill a real process at random points of a flow, check the logbook after every kill.

The flow (``tests/persistence/fuzz_child.py``) is a graph flow of 16 atoms with
fan-out, fan-in and a retry scope whose last atom fails on its first attempts,
so the engine goes through RETRY, scope reverts and, in the ``reverted``
variant, a revert of the whole flow.  A seeded RNG picks, per run of the
child, where it dies: right after its k-th durable write, at the start of its
k-th write (what was buffered since is lost), or by a real SIGKILL from this
process once the child has reported n atom state changes (the child carries
on meanwhile, so that kill lands wherever the child happens to be).  It also
picks the engine of each run (serial, or parallel on threads), so a flow is
often resumed by another mode than the one that crashed.

After every kill this process reads the logbook through the public API
(``get_flow_details``) and checks, against the journal each task appends to
(one line per execute/revert, written before it goes on and labelled with the
retry attempt):

- every recorded state and intention is a legal one for the atom's kind;
- write ahead: an atom that started executing is not PENDING in the logbook
  (its RUNNING record was durable first), and each predecessor's result, and
  the controller's attempt, were durable before it started;
- an atom recorded SUCCESS at an earlier kill is never executed again in the
  same attempt, and keeps its result; an atom recorded REVERTED is never
  reverted again in the same attempt; a SUCCESS is backed by an execution;
- within one process no atom runs (or reverts) twice in the same attempt:
  only atoms in flight at a kill run again.

Then a new child resumes the flow with ``load_from_detail`` until it ends,
and its final logbook (the flow's state, every atom's state, intention,
results, failure and revert outcome, and ``storage.fetch_all()``) must equal
an uninterrupted run's, and so must the set of executions and reverts done
(every attempt of every atom ran and was undone as without the kills).

A failure names the seed; ``FLOWKIT_FUZZ_SEED=N`` replays the same choices
(the timing of the parent's SIGKILLs stays the machine's).
``FLOWKIT_FUZZ_KILLS`` sets the number of kills per database (default 28).
Runs against an SQLite file and PostgreSQL (unreachable: skipped, or a
failure under ``CI=true``).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit import states
from flowkit.engines import load_from_detail
from flowkit.persistence.backends import fetch
from flowkit.persistence.base import Backend
from flowkit.persistence.models import AtomDetail
from flowkit.types.failure import Failure
from tests.persistence.conftest import drop_tables, unique_prefix
from tests.persistence.fuzz_child import CRASH_EXIT, DEPS, RETRY_NAME, SCOPE, VARIANTS, read_journal
from tests.support import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("FLOWKIT_FUZZ_KILLS", "28"))

# A few seconds of CPU on a quiet machine; the timeout leaves room for a busy one
# (and grows with FLOWKIT_FUZZ_KILLS for a longer hunt).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(max(240, 8 * KILLS))]
MAX_KILLS_PER_FLOW = 4
#: How long one run of the child may take (generous: the machine may be busy).
RUN_DEADLINE = 60.0
#: How long a resume waits for a killed engine's flow lock to be dropped by the server.
LOCK_DEADLINE = 30.0

ENGINES: dict[str, dict[str, Any]] = {
    "serial": {"engine": "serial"},
    "parallel": {"engine": "parallel", "executor": "threads", "max_workers": 2},
}

ATOMS = frozenset([*DEPS, RETRY_NAME])
TASK_STATES = frozenset(
    [states.PENDING, states.RUNNING, states.SUCCESS, states.FAILURE, states.REVERTING, states.REVERTED]
)
RETRY_STATES = TASK_STATES | {states.RETRYING}
#: A kill may leave the flow in any of these (None: killed before its first write after
#: ``load_from_factory`` saved the bare flow detail); FAILURE or SUSPENDED would be a bug here.
FLOW_STATES = frozenset([None, states.PENDING, states.RUNNING, states.REVERTING, states.SUCCESS, states.REVERTED])
ENDED = frozenset([states.SUCCESS, states.REVERTED])
#: States an atom that ran to completion can be in (later undone or not).
COMPLETED = frozenset([states.SUCCESS, states.REVERTING, states.REVERTED])

Line = tuple[str, str, str]  # (action, atom, label)


# -- databases ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fuzz_conf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The database the children and this process share: an SQLite file or a fresh PostgreSQL prefix."""
    if request.param == "sqlite":
        yield {"connection": "sqlite:///%s" % (tmp_path / "fuzz.db",)}
        return
    url = request.getfixturevalue("postgres_url")  # skips, or fails under CI=true, when unreachable
    prefix = unique_prefix()
    yield {"connection": url, "table_prefix": prefix}
    drop_tables(url, prefix)


# -- the fork server ---------------------------------------------------------------------


class Run:
    """What one forked run of the child did."""

    def __init__(self, pid: int, code: int, lines: list[str], sigkilled: bool) -> None:
        self.pid = pid
        self.code = code
        self.lines = lines
        self.sigkilled = sigkilled

    def value(self, key: str) -> list[str] | None:
        for line in self.lines:
            words = line.split()
            if words and words[0] == key:
                return words[1:]
        return None

    @property
    def finished(self) -> bool:
        return self.code == 0 and self.value("finished") is not None

    @property
    def died(self) -> bool:
        """Killed where planned (it never got to finish)."""
        return self.code == CRASH_EXIT or (self.sigkilled and self.code == -signal.SIGKILL)


class ForkServer:
    """``fuzz_child`` started once with ``sys.executable``; it forks a process per run."""

    def __init__(self, tmp_path: Path) -> None:
        env = dict(os.environ)
        roots = [str(REPO_ROOT), str(Path(flowkit.__file__).resolve().parent.parent)]
        env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
        env.pop("PYTHONWARNINGS", None)
        self.stderr_path = tmp_path / "fuzz_child.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.persistence.fuzz_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=str(REPO_ROOT),
            bufsize=0,
        )
        self._buffer = b""

    def _line(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the child said nothing for %.0f s" % (RUN_DEADLINE,))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError("the fork server exited (status %s)" % (self.proc.poll(),))
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def run(self, command: dict[str, Any]) -> Run:
        """Fork a run of ``command``; SIGKILL it after its n-th event if the command says ``events``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()
        kill = command.get("kill")
        kill_after = int(kill[1]) if kill and kill[0] == "events" else None
        deadline = time.monotonic() + RUN_DEADLINE
        pid = None
        lines: list[str] = []
        sigkilled = False
        while True:
            line = self._line(deadline)
            words = line.split()
            if words and words[0] == "exit":
                return Run(int(words[1]), int(words[2]), lines, sigkilled)
            lines.append(line)
            if words and words[0] == "pid":
                pid = int(words[1])
            elif words and words[0] == "e" and kill_after is not None and not sigkilled:
                if int(words[1]) >= kill_after:
                    # The run reports and carries on, so it is usually still going.
                    # If it has just ended, the fork server has reaped it: no kill.
                    assert pid is not None
                    try:
                        os.kill(pid, signal.SIGKILL)
                        sigkilled = True
                    except ProcessLookupError:
                        pass

    def stderr_tail(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_bytes().decode(errors="replace")[-4000:]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self._stderr.close()


# -- reading the logbook -------------------------------------------------------------------


class Snapshot:
    """The logbook of one flow detail as read after a kill (or at the end)."""

    def __init__(self, backend: Backend, fd_uuid: str) -> None:
        with backend.get_connection() as conn:
            detail = conn.get_flow_details(fd_uuid)
        self.flow_state = detail.state
        self.atoms: dict[str, AtomDetail] = {ad.name: ad for ad in detail}
        retry = self.atoms.get(RETRY_NAME)
        #: The attempt the retry scope is on: how many results its controller recorded.
        self.attempt = len(retry.results or []) if retry is not None else 0
        self.retry_done = retry is not None and retry.state == states.SUCCESS

    def label(self, name: str) -> str:
        """The journal label an execution of ``name`` recorded here would carry."""
        return str(self.attempt) if name in SCOPE else "-"

    def current(self, name: str, label: str) -> bool:
        """Whether the attempt ``label`` of ``name`` is what this logbook still holds.

        A scope atom's record is reset when the scope is retried; its record is
        about attempt ``label`` only while the controller is SUCCESS on it.
        """
        if name not in SCOPE:
            return True
        return self.retry_done and label == str(self.attempt)

    def normal(self) -> dict[str, Any]:
        """Everything an uninterrupted run must agree with, as comparable data."""
        atoms = {}
        for name, ad in self.atoms.items():
            results = ad.results
            if ad.atom_type == "retry":
                results = [[value, {k: _failure(f) for k, f in failures.items()}] for value, failures in results or []]
            atoms[name] = {
                "type": ad.atom_type,
                "state": str(ad.state),
                "intention": str(ad.intention),
                "results": results,
                "failure": _failure(ad.failure),
                "revert_results": ad.revert_results,
                "revert_failure": _failure(ad.revert_failure),
            }
        return {"flow": str(self.flow_state), "atoms": atoms}


def _failure(failure: Failure | None) -> Any:
    # Traceback text differs from run to run; the exception does not.
    return None if failure is None else [list(failure.exc_type_names), failure.exception_str]


def fetch_all(backend: Backend, fd_uuid: str) -> dict[str, Any]:
    """The flow's results as a user reads them after the end: ``load_from_detail(...).storage.fetch_all()``."""
    with backend.get_connection() as conn:
        detail = conn.get_flow_details(fd_uuid)
    engine = load_from_detail(detail, backend=backend)
    try:
        return dict(engine.storage.fetch_all())
    finally:
        engine.close()


# -- the fuzzer ---------------------------------------------------------------------------------


class Baseline:
    """How an uninterrupted run ends, and how many writes and atom events it took per engine."""

    def __init__(self, normal: dict[str, Any], results: dict[str, Any], lines: set[Line]) -> None:
        self.normal = normal
        self.results = results
        #: Every (action, atom, attempt) the run journaled.  The flow is built so that
        #: this set does not depend on the schedule: when ``flaky`` fails, every other
        #: atom of its attempt has run, and nothing after the scope has started.
        self.lines = lines
        self.writes: dict[str, int] = {}
        self.events: dict[str, int] = {}


class Fuzz:
    """Runs flows to random kill points on one database and checks the logbook after each."""

    def __init__(self, seed: int, conf: dict[str, Any], server: ForkServer, reader: Backend, tmp_path: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.conf = conf
        self.server = server
        self.reader = reader
        self.tmp_path = tmp_path
        self.trail: list[str] = []
        self.kills: Counter[str] = Counter()
        self.lock_waits = 0
        self.baselines: dict[str, Baseline] = {}

    # -- reporting

    def fail(self, message: str) -> None:
        pytest.fail(
            "crash fuzz on %s, seed %d (replay: FLOWKIT_FUZZ_SEED=%d): %s\n-- what ran --\n%s\n-- child stderr --\n%s"
            % (
                self.conf["connection"].split(":", 1)[0],
                self.seed,
                self.seed,
                message,
                "\n".join(self.trail[-40:]),
                self.server.stderr_tail(),
            ),
            pytrace=False,
        )

    def check(self, ok: bool, message: str, *args: Any) -> None:
        if not ok:
            self.fail(message % args)

    # -- running the child

    def run(self, journal: Path, variant: str, fd_uuid: str | None, engine: str, kill: list[Any] | None) -> Run:
        command = {
            "backend": self.conf,
            "journal": str(journal),
            "variant": variant,
            "flow_detail": fd_uuid,
            "engine": ENGINES[engine],
            "kill": kill,
        }

        def attempt() -> Run | None:
            run = self.server.run(command)
            self.trail.append(
                "%s %s kill=%s -> exit %d%s: %s"
                % (fd_uuid or "new flow", engine, kill, run.code, " (SIGKILL sent)" if run.sigkilled else "",
                   " | ".join(line for line in run.lines if not line.startswith("e ")))
            )
            if run.code == 0 and run.value("locked") is not None:
                # The server has not yet ended the killed run's session, which holds the flow's lock.
                self.lock_waits += 1
                return None
            return run

        return wait_until(
            attempt,
            "the server to drop a killed run's flow lock (seed %d)" % (self.seed,),
            timeout=LOCK_DEADLINE,
            detail=lambda: "\n".join(self.trail[-40:]),
        )

    def baseline(self, variant: str) -> Baseline:
        """An uninterrupted run per engine; all must end the same."""
        seen: dict[str, Baseline] = {}
        for engine in ENGINES:
            journal = self.tmp_path / ("baseline-%s-%s.txt" % (variant, engine))
            run = self.run(journal, variant, None, engine, None)
            self.check(run.finished, "the uninterrupted %s run (%s) did not finish: exit %d", variant, engine, run.code)
            fd_uuid = (run.value("flow-detail") or [""])[0]
            end = Snapshot(self.reader, fd_uuid)
            done = run.value("finished") or []
            self.check(
                end.flow_state in ENDED, "the uninterrupted %s run ended %s", variant, end.flow_state
            )
            lines = read_journal(str(journal))
            self.check_journal_once(lines, "the uninterrupted %s run (%s)" % (variant, engine))
            seen[engine] = Baseline(end.normal(), fetch_all(self.reader, fd_uuid), set(lines))
            seen[engine].writes[engine], seen[engine].events[engine] = int(done[1]), int(done[2])
        first = seen["serial"]
        for engine, other in seen.items():
            self.check(
                other.normal == first.normal and other.results == first.results and other.lines == first.lines,
                "the %s flow ends differently on the %s engine:\n%s\nthan on the serial one:\n%s",
                variant, engine, other.normal, first.normal,
            )
            first.writes.update(other.writes)
            first.events.update(other.events)
        return first

    # -- the invariants

    def check_journal_once(self, lines: list[Line], who: str) -> None:
        """No atom executed (or reverted) twice in one attempt by one process."""
        twice = [line for line, n in Counter(lines).items() if n > 1]
        self.check(not twice, "%s ran the same attempt twice: %s", who, twice)

    def check_snapshot(
        self, snap: Snapshot, journal: list[Line], earlier: list[tuple[int, Snapshot]], where: str
    ) -> None:
        """Every invariant the module docstring lists, for the logbook ``snap`` read ``where``."""
        self.check(snap.flow_state in FLOW_STATES, "%s: the flow is %s", where, snap.flow_state)
        self.check(set(snap.atoms) <= ATOMS, "%s: unknown atoms %s", where, sorted(set(snap.atoms) - ATOMS))
        for name, ad in snap.atoms.items():
            legal = RETRY_STATES if name == RETRY_NAME else TASK_STATES
            self.check(ad.state in legal, "%s: %s is %s", where, name, ad.state)
            intentions = {states.EXECUTE, states.REVERT} | ({states.RETRY} if name == RETRY_NAME else set())
            self.check(ad.intention in intentions, "%s: %s has intention %s", where, name, ad.intention)
            if name != RETRY_NAME and ad.state == states.SUCCESS:
                label = snap.label(name)
                self.check(
                    isinstance(ad.results, str) and ad.results.startswith("%s@%s:" % (name, label)),
                    "%s: %s is SUCCESS with result %r, not one of attempt %s", where, name, ad.results, label,
                )
                self.check(
                    ("execute", name, label) in journal,
                    "%s: %s is SUCCESS for attempt %s, which never executed", where, name, label,
                )
        retry = snap.atoms.get(RETRY_NAME)
        if retry is not None:
            provided = [value for value, _ in retry.results or []]
            self.check(provided == list(range(1, len(provided) + 1)), "%s: the controller's history is %s",
                       where, retry.results)

        for action, name, label in set(journal):
            if action != "execute":
                continue
            found = snap.atoms.get(name)
            if snap.current(name, label):
                # Write ahead: RUNNING was durable before execute began.
                self.check(
                    found is not None and found.state != states.PENDING,
                    "%s: %s executed (attempt %s) but the logbook has it %s: its RUNNING record was not "
                    "durable before it started", where, name, label, "missing" if found is None else found.state,
                )
            if name in SCOPE:
                self.check(
                    snap.attempt >= int(label),
                    "%s: %s executed for attempt %s but the controller's result for it is not in the logbook",
                    where, name, label,
                )
            for pred in DEPS[name]:
                if pred not in DEPS:
                    continue  # the store's seed, or the controller's attempt (checked above)
                pred_label = label if pred in SCOPE and name in SCOPE else snap.label(pred)
                if pred in SCOPE and not snap.current(pred, pred_label):
                    continue
                got = snap.atoms.get(pred)
                self.check(
                    got is not None and got.state in COMPLETED,
                    "%s: %s executed (attempt %s) while its predecessor %s is %s in the logbook: a result was "
                    "not durable before its successor started", where, name, label, pred,
                    "missing" if got is None else got.state,
                )

        for offset, before in earlier:
            after = journal[offset:]
            for name, ad in before.atoms.items():
                if name == RETRY_NAME:
                    continue
                label = before.label(name)
                if ad.state == states.SUCCESS and ad.intention == states.EXECUTE:
                    self.check(
                        ("execute", name, label) not in after,
                        "%s: %s was SUCCESS (attempt %s) at an earlier kill, and executed again",
                        where, name, label,
                    )
                    now = snap.atoms.get(name)
                    if now is not None and now.state in COMPLETED and snap.label(name) == label:
                        self.check(
                            now.results == ad.results,
                            "%s: %s had result %r at an earlier kill, now %r", where, name, ad.results, now.results,
                        )
                if ad.state == states.REVERTED:
                    self.check(
                        ("revert", name, label) not in after,
                        "%s: %s was REVERTED (attempt %s) at an earlier kill, and reverted again",
                        where, name, label,
                    )

    def check_end(self, variant: str, fd_uuid: str, snap: Snapshot, journal: list[Line]) -> None:
        baseline = self.baselines[variant]
        self.check(
            set(journal) == baseline.lines,
            "flow %s (%s) never ran %s, and ran %s, which an uninterrupted run does not",
            fd_uuid, variant, sorted(baseline.lines - set(journal)), sorted(set(journal) - baseline.lines),
        )
        self.check(
            snap.normal() == baseline.normal,
            "flow %s (%s) ended as\n%s\nbut an uninterrupted run ends as\n%s",
            fd_uuid, variant, snap.normal(), baseline.normal,
        )
        results = fetch_all(self.reader, fd_uuid)
        self.check(
            results == baseline.results, "flow %s (%s) has results %s, not %s", fd_uuid, variant, results,
            baseline.results,
        )

    # -- one flow, killed a few times

    def flow(self, index: int, kills_left: int) -> int:
        """Run one flow to its end with up to ``kills_left`` kills; return how many there were."""
        variant = self.rng.choice(sorted(VARIANTS))
        baseline = self.baselines[variant]
        journal_path = self.tmp_path / ("journal-%d.txt" % (index,))
        wanted = self.rng.randint(1, min(MAX_KILLS_PER_FLOW, kills_left))
        fd_uuid: str | None = None
        earlier: list[tuple[int, Snapshot]] = []
        writes = events = kills = 0
        self.trail.append("-- flow %d: %s, %d kills planned" % (index, variant, wanted))
        while True:
            engine = self.rng.choice(sorted(ENGINES))
            kill: list[Any] | None = None
            if kills < wanted:
                # A point somewhere in what is left of the run (as far as an uninterrupted run tells).
                kind = self.rng.choice(["after", "before", "events"])
                if kind == "events":
                    done, total = events, baseline.events[engine]
                else:
                    done, total = writes, baseline.writes[engine]
                kill = [kind, self.rng.randint(1, max(1, total - done))]
            start = len(read_journal(str(journal_path)))
            run = self.run(journal_path, variant, fd_uuid, engine, kill)
            journal = read_journal(str(journal_path))
            self.check_journal_once(journal[start:], "one run")
            if fd_uuid is None:
                found = run.value("flow-detail")
                self.check(found is not None, "the first run of flow %d printed no flow detail: exit %d",
                           index, run.code)
                assert found is not None
                fd_uuid = found[0]
            if run.finished:
                end = Snapshot(self.reader, fd_uuid)
                self.check_snapshot(end, journal, earlier, "at the end of flow %d" % (index,))
                self.check_end(variant, fd_uuid, end, journal)
                return kills
            self.check(
                run.died,
                "a run of flow %d neither finished nor died at %s: exit %d (SIGKILL %s)",
                index, kill, run.code, "sent" if run.sigkilled else "not sent",
            )
            assert kill is not None
            kills += 1
            self.kills[kill[0]] += 1
            if kill[0] == "events":
                events += int(kill[1])
            else:
                writes += int(kill[1]) - (1 if kill[0] == "before" else 0)
            snap = Snapshot(self.reader, fd_uuid)
            where = "after kill %d of flow %d (%s, %s engine)" % (kills, index, kill, engine)
            self.trail.append("   logbook: flow %s, %s" % (
                snap.flow_state, ", ".join("%s=%s" % (n, a.state) for n, a in sorted(snap.atoms.items()))))
            self.check_snapshot(snap, journal, earlier, where)
            earlier.append((len(journal), snap))
            if snap.flow_state in ENDED:
                # Killed after its end was durable: there is nothing left to resume.
                self.check_end(variant, fd_uuid, snap, journal)
                return kills


def test_kills_at_random_points_never_redo_completed_atoms(fuzz_conf: dict[str, Any], tmp_path: Path) -> None:
    seed = int(os.environ.get("FLOWKIT_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    server = ForkServer(tmp_path)
    reader = fetch(fuzz_conf)
    try:
        with reader.get_connection() as conn:
            conn.upgrade()  # once, here: the children's backends never migrate
        fuzz = Fuzz(seed, fuzz_conf, server, reader, tmp_path)
        for variant in sorted(VARIANTS):
            fuzz.baselines[variant] = fuzz.baseline(variant)
        kills = 0
        index = 0
        while kills < KILLS:
            kills += fuzz.flow(index, KILLS - kills)
            index += 1
        print(
            "crash fuzz, seed %d: %d flows, kills %s, %d waits for a killed run's lock"
            % (seed, index, dict(sorted(fuzz.kills.items())), fuzz.lock_waits)
        )
        # Every way of dying was tried (28 kills choosing among 3 make a miss very unlikely).
        if KILLS >= 12:
            assert set(fuzz.kills) == {"after", "before", "events"}, (seed, fuzz.kills)
    finally:
        reader.close()
        server.close()
