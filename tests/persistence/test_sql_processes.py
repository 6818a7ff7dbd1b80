"""The SQL backend across real processes: concurrent upgrades, flow locks, concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowkit import exceptions as exc
from flowkit import states
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.persistence.models import FlowDetail, LogBook
from tests.persistence.conftest import drop_tables, unique_prefix
from tests.support import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0


class Child:
    """A ``tests.persistence.sql_child`` process driven line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.persistence.sql_child", *args],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, line: str) -> None:
        assert self.proc.stdout is not None
        got = self.proc.stdout.readline().strip()
        if got != line:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=DEADLINE)
            raise AssertionError("child said %r, expected %r; stderr:\n%s" % (got, line, err))

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> str:
        out, err = self.proc.communicate(timeout=DEADLINE)
        assert self.proc.returncode == 0, "child failed (%s):\n%s" % (self.proc.returncode, err)
        return out

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=DEADLINE)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=DEADLINE)


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    made: list[Child] = []

    def spawn(*args: str) -> Child:
        child = Child(*args)
        made.append(child)
        return child

    yield spawn
    for child in made:
        child.cleanup()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(url, table_prefix)`` of a fresh, empty logbook on each kind of server."""
    prefix = unique_prefix()
    if request.param == "sqlite":
        yield "sqlite:///%s" % (tmp_path / "shared.db"), prefix
        return
    url = request.getfixturevalue("postgres_url" if request.param == "postgres" else "mysql_url")
    yield url, prefix
    drop_tables(url, prefix)


def test_concurrent_upgrades_from_two_processes(children: Callable[..., Child], database: tuple[str, str]) -> None:
    url, prefix = database
    racers = [children("upgrade", url, prefix) for _ in range(2)]
    for child in racers:
        child.expect("ready")
    for child in racers:
        child.go()
    for child in racers:
        assert child.finish().splitlines()[-1] == "done"
    with SQLAlchemyBackend(url, table_prefix=prefix, create_schema=False) as backend:
        with backend.get_connection() as conn:
            conn.validate()


def test_flow_lock_across_processes_and_released_when_holder_dies(
    children: Callable[..., Child], database: tuple[str, str]
) -> None:
    url, prefix = database
    book = LogBook(name="locks")
    fd = FlowDetail(name="contended")
    book.add(fd)
    with SQLAlchemyBackend(url, table_prefix=prefix) as backend:
        with backend.get_connection() as conn:
            conn.save_logbook(book)
            holder = children("lock", url, prefix, fd.uuid)
            holder.expect("ready")
            holder.go()
            holder.expect("locked")
            with pytest.raises(exc.FlowDetailLocked, match=fd.uuid):
                conn.lock_flow(fd)
            holder.kill()  # SIGKILL: no chance to release anything itself
            conn.lock_flow(fd).release()


def test_several_processes_write_one_logbook(children: Callable[..., Child], database: tuple[str, str]) -> None:
    url, prefix = database
    with SQLAlchemyBackend(url, table_prefix=prefix) as backend:
        backend.upgrade()
        writers = [children("run", url, prefix, "proc%d" % i, "60") for i in range(4)]
        for child in writers:
            child.expect("ready")
        for child in writers:
            child.go()
        for child in writers:
            assert child.finish().splitlines()[-1] == "done"
        with backend.get_connection() as conn:
            flows = [fd for book in conn.get_logbooks() for fd in book]
    assert sorted(fd.name for fd in flows) == ["proc0", "proc1", "proc2", "proc3"]
    for fd in flows:
        assert fd.state == states.SUCCESS
        assert len(fd) == 60 and all(ad.state == states.SUCCESS and ad.results == ad.name for ad in fd)


def test_children_see_no_database_is_locked(tmp_path: Path, children: Callable[..., Child]) -> None:
    # Many short-lived writers on one SQLite file, all started at once.
    url = "sqlite:///%s" % (tmp_path / "busy.db")
    prefix = "busy_"
    with SQLAlchemyBackend(url, table_prefix=prefix) as backend:
        backend.upgrade()
    writers = [children("run", url, prefix, "w%d" % i, "30") for i in range(6)]
    for child in writers:
        child.expect("ready")
    for child in writers:
        child.go()
    for child in writers:
        child.finish()
    assert not any(name.endswith(".lock") for name in os.listdir(tmp_path / "busy.db.locks"))


@pytest.mark.parametrize("same_key", [False, True], ids=["different-keys", "same-key"])
def test_processes_racing_to_send_one_signal(
    children: Callable[..., Child], database: tuple[str, str], same_key: bool
) -> None:
    # 8 processes send signal "race" to one flow detail at once: one stores it,
    # the others get what they would get coming second.  Then each sends more,
    # while this process follows signals_after() the way a conductor does: a
    # signal that became visible after one with a larger number would be missed.
    url, prefix = database
    book = LogBook(name="signals")
    fd = FlowDetail(name="raced")
    book.add(fd)
    with SQLAlchemyBackend(url, table_prefix=prefix) as backend:
        with backend.get_connection() as conn:
            conn.save_logbook(book)
            keys = ["same" if same_key else "key%d" % i for i in range(8)]
            senders = [children("signal", url, prefix, fd.uuid, key, "15") for key in keys]
            for child in senders:
                child.expect("ready")
            for child in senders:
                child.go()
            seen: list[tuple[int, str, str]] = []

            def follow() -> bool:
                seen.extend(conn.signals_after(seen[-1][0] if seen else 0))
                return len(seen) >= 1 + 15 * len(senders)

            outcomes = [child.proc.stdout.readline().strip() for child in senders]  # type: ignore[union-attr]
            wait_until(follow, "every signal listed by signals_after", timeout=DEADLINE)
            for child in senders:
                child.expect("done")
                child.finish()
            stored = conn.get_signals(fd.uuid)
            everything = conn.signals_after(0)
    assert outcomes.count("stored") == 1, outcomes
    assert sorted(outcomes)[:-1] == (["noop"] * 7 if same_key else ["already"] * 7), outcomes
    assert stored["race"] == keys[outcomes.index("stored")]
    assert seen == everything
