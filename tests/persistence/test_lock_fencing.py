"""A flow lock held by a database session dies under the engine: its writes are refused, it stops.

The engine holds its flow detail's lock in a session of its own
(``pg_try_advisory_lock`` / ``GET_LOCK``).  Here an operator kills that session
from another connection (``pg_terminate_backend``, ``KILL``) while a task runs.
The engine must notice at its next write, raise LockLost, start nothing more
and write nothing more; another engine then takes the lock and resumes.

Tasks record each execution in a file (they may run in another process), and
the test kills the session while the task ``gate`` waits for a file to appear.
That task was in flight when the lock died, so its outcome is never written
and the resuming engine runs it again, exactly as after a crash; every other
task runs once.

Run as a script (``python -m tests.persistence.test_lock_fencing URL PREFIX
BOOK FD DIR MODE WHO``) it is the child of the two-process race below.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from flowkit import engines, states
from flowkit.exceptions import FlowDetailLocked, LockLost, StorageFailure
from flowkit.patterns import linear_flow
from flowkit.persistence._sql.locks import lock_key, mysql_lock_name
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend, normalize_url
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.task import Task
from tests.support import wait_until

DEADLINE = 60.0
# A child in distributed mode starts a Dask cluster of its own first: slow on a busy machine.
RACE_DEADLINE = 180.0

TASKS = ["a", "b", "gate", "c", "d"]


class Counted(Task):
    """Append ``<who> <name>`` to ``<dir>/executed.txt``, then return the name."""

    def execute(self, dir: str, who: str) -> str:
        record(dir, who, self.name)
        return self.name


class Gate(Counted):
    """Record, say so in ``<dir>/entered-<who>``, then wait until ``<dir>/release`` exists."""

    def execute(self, dir: str, who: str) -> str:
        record(dir, who, self.name)
        open(os.path.join(dir, "entered-" + who), "w").close()
        wait_until(lambda: os.path.exists(os.path.join(dir, "release")), "the release file", timeout=RACE_DEADLINE)
        return self.name


def record(dir: str, who: str, name: str) -> None:
    # One short O_APPEND write per line: lines of concurrent processes never interleave.
    fd = os.open(os.path.join(dir, "executed.txt"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("%s %s\n" % (who, name)).encode())
    finally:
        os.close(fd)


def executions(dir: str) -> list[tuple[str, str]]:
    try:
        with open(os.path.join(dir, "executed.txt")) as f:
            return [tuple(line.split()) for line in f if line.strip()]  # type: ignore[misc]
    except FileNotFoundError:
        return []


def wait_file(dir: str, name: str, what: str) -> None:
    wait_until(lambda: os.path.exists(os.path.join(dir, name)), what, timeout=RACE_DEADLINE)


def make_flow() -> linear_flow.Flow:
    return linear_flow.Flow("fenced").add(*(Gate(n) if n == "gate" else Counted(n) for n in TASKS))


# -- the server side: who holds the lock, and killing that session ------------------------------


class Server:
    """Finds and kills the session that holds a flow detail's lock, from a connection of its own."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool)
        self.dialect = self.engine.dialect.name

    def holder(self, backend: SQLAlchemyBackend, fd_uuid: str) -> int | None:
        """The server's id of the session holding the lock of ``fd_uuid`` (None if nobody holds it)."""
        name = backend.table_prefix + fd_uuid
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                key = lock_key(name) & 0xFFFFFFFFFFFFFFFF
                row = conn.execute(
                    sa.text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND classid = :hi AND objid = :lo AND objsubid = 1"
                    ),
                    {"hi": key >> 32, "lo": key & 0xFFFFFFFF},
                ).first()
                return None if row is None else int(row[0])
            found = conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": mysql_lock_name(name)}).scalar()
            return None if found is None else int(found)

    def kill(self, session: int) -> None:
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": session}).scalar()
            else:
                conn.execute(sa.text("KILL %d" % session))

    def kill_holder(self, backend: SQLAlchemyBackend, fd_uuid: str) -> int:
        session = self.holder(backend, fd_uuid)
        assert session is not None, "nobody holds the lock of the running flow"
        self.kill(session)
        # The server drops the lock once the session is gone: wait for that, not for a time.
        wait_until(lambda: self.holder(backend, fd_uuid) != session, "the killed session to let go of the lock")
        return session

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb"])
def server_url(request: pytest.FixtureRequest) -> str:
    """Each server in turn (PostgreSQL, MariaDB); skipped or failed like the other server tests."""
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgres)
        return str(request.getfixturevalue("postgres_url"))
    request.applymarker(pytest.mark.mysql)
    return str(request.getfixturevalue("mysql_url"))


@pytest.fixture
def server(server_url: str) -> Iterator[Server]:
    s = Server(server_url)
    yield s
    s.close()


def stored(backend: SQLAlchemyBackend, fd_uuid: str) -> tuple[FlowDetail, LogBook]:
    # Through a fresh backend on the same tables: what the database holds, no cache.
    with SQLAlchemyBackend(backend.url, table_prefix=backend.table_prefix) as other:
        with other.get_connection() as conn:
            fd = conn.get_flow_details(fd_uuid)
            book = next(b for b in conn.get_logbooks() if b.find(fd_uuid) is not None)
    return fd, book


def test_killed_lock_session_stops_the_engine_and_another_resumes(
    server_url: str,
    server: Server,
    sql_backend_factory: Callable[..., SQLAlchemyBackend],
    engine_options: dict[str, Any],
    tmp_path: Any,
) -> None:
    backend = sql_backend_factory(server_url)
    dir = str(tmp_path)
    engine = engines.load(make_flow(), store={"dir": dir, "who": "first"}, backend=backend, **engine_options)
    fd_uuid = engine.flow_detail.uuid
    raised: list[BaseException] = []

    def drive() -> None:
        try:
            engine.run()
        except BaseException as error:
            raised.append(error)

    runner = threading.Thread(target=drive)
    runner.start()
    try:
        wait_until(lambda: os.path.exists(os.path.join(dir, "entered-first")), "the gate task to start")
        server.kill_holder(backend, fd_uuid)
    finally:
        open(os.path.join(dir, "release"), "w").close()
        runner.join(DEADLINE)
    assert not runner.is_alive()

    assert len(raised) == 1 and isinstance(raised[0], LockLost), raised
    message = str(raised[0])
    assert fd_uuid in message and "fenced" in message and "ended" in message
    assert raised[0].__cause__ is not None
    # The next atom never started ...
    assert executions(dir) == [("first", "a"), ("first", "b"), ("first", "gate")]
    # ... and nothing after the kill was written: the gate is still RUNNING, the flow RUNNING.
    fd, book = stored(backend, fd_uuid)
    assert {ad.name: ad.state for ad in fd} == {
        "a": states.SUCCESS,
        "b": states.SUCCESS,
        "gate": states.RUNNING,
        "c": states.PENDING,
        "d": states.PENDING,
    }
    assert fd.state == states.RUNNING
    # The engine that lost its lock refuses to go on, even though the lock is free now.
    with pytest.raises(LockLost):
        engine.run()
    assert len(executions(dir)) == 3

    # A second engine takes the lock and resumes; only the atom in flight at the kill runs again.
    second = engines.load(
        make_flow(), store={"dir": dir, "who": "second"}, backend=backend, book=book, flow_detail=fd, **engine_options
    )
    second.run()
    assert second.storage.get_flow_state() == states.SUCCESS
    assert executions(dir)[3:] == [("second", "gate"), ("second", "c"), ("second", "d")]
    final, _ = stored(backend, fd_uuid)
    assert final.state == states.SUCCESS
    assert {ad.name: ad.results for ad in final} == {n: n for n in TASKS}


def test_a_failed_statement_on_a_live_lock_session_is_not_a_lost_lock(
    server_url: str, sql_backend_factory: Callable[..., SQLAlchemyBackend], tmp_path: Any
) -> None:
    # A write the server refuses (a name longer than the column) fails that write only: the
    # session is still there and still holds the lock.
    backend = sql_backend_factory(server_url)
    engine = engines.load(make_flow(), store={"dir": str(tmp_path), "who": "x"}, backend=backend)
    engine.prepare()
    with backend.get_connection() as conn:
        fd = conn.get_flow_details(engine.flow_detail.uuid)
        lock = conn.lock_flow(fd)
        try:
            fd.meta["note"] = "fine"
            conn.update_flow_details(fd)
            conn.flush()
            fd.name = "n" * 300
            conn.update_flow_details(fd)
            with pytest.raises(StorageFailure) as caught:
                conn.flush()
            assert not isinstance(caught.value, LockLost)
            with pytest.raises(FlowDetailLocked):
                backend.get_connection().lock_flow(fd)
            # The same session writes again once the row is right.
            fd.name = "fenced"
            conn.update_flow_details(fd)
            conn.flush()
            assert stored(backend, fd.uuid)[0].meta["note"] == "fine"
        finally:
            lock.release()


# -- two processes race for the flow detail -------------------------------------------------------


def child(argv: list[str]) -> int:
    """Drive the flow detail until it is done or this process's lock is lost.

    Exit 0 after SUCCESS, 3 on LockLost.  Until the lock is free
    (FlowDetailLocked) it tries again, reading the flow detail afresh each time;
    an AssertionError (exit 1) if it never is.
    """
    url, prefix, book_uuid, fd_uuid, dir, mode, who = argv
    options: dict[str, Any] = {"engine": mode}
    cluster: Any = None
    if mode == "distributed":
        import distributed

        from flowkit.engines.distributed import local_cluster_options

        cluster = distributed.LocalCluster(**local_cluster_options(1))
        options["client"] = distributed.Client(cluster, set_as_default=False)
    elif mode == "parallel":
        options.update(executor="threads", max_workers=2)
    backend = SQLAlchemyBackend(url, table_prefix=prefix, create_schema=False)

    def attempt() -> str | None:
        """Drive the flow once: "done", "lost" (LockLost), or None while another engine holds it."""
        with backend.get_connection() as conn:
            book = conn.get_logbook(book_uuid)
        fd = book.find(fd_uuid)
        assert fd is not None
        store = {"dir": dir, "who": who}
        engine = engines.load(make_flow(), store=store, backend=backend, book=book, flow_detail=fd, **options)
        try:
            engine.run()
        except FlowDetailLocked:
            open(os.path.join(dir, "tried-" + who), "w").close()
            return None
        except LockLost:
            return "lost"
        return "done"

    try:
        outcome = wait_until(attempt, "the flow detail's lock to be free", timeout=RACE_DEADLINE)
        return 0 if outcome == "done" else 3
    finally:
        backend.close()
        if cluster is not None:
            options["client"].close()
            cluster.close()


def start_child(args: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "tests.persistence.test_lock_fencing", *args], env=env)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_never_both_drive_the_flow(
    server_url: str,
    server: Server,
    sql_backend_factory: Callable[..., SQLAlchemyBackend],
    engine_mode: str,
    tmp_path: Any,
) -> None:
    backend = sql_backend_factory(server_url)
    dir = str(tmp_path)
    prepared = engines.load(make_flow(), store={"dir": dir, "who": "parent"}, backend=backend)
    prepared.prepare()
    fd_uuid = prepared.flow_detail.uuid
    with backend.get_connection() as conn:
        book = next(b for b in conn.get_logbooks() if b.find(fd_uuid) is not None)
    url = backend.url.render_as_string(hide_password=False)
    common = [url, backend.table_prefix, book.uuid, fd_uuid, dir, engine_mode]
    children: list[subprocess.Popen[bytes]] = []
    try:
        first = start_child(common + ["first"])
        children.append(first)
        wait_file(dir, "entered-first", "the first process to reach the gate")
        second = start_child(common + ["second"])
        children.append(second)
        # The second process is trying (and refused) while the first one holds the lock.
        wait_file(dir, "tried-second", "the second process to try")
        server.kill_holder(backend, fd_uuid)
        # The second takes the lock and runs the gate again (it was RUNNING); let both go on.
        wait_file(dir, "entered-second", "the second process to reach the gate")
        open(os.path.join(dir, "release"), "w").close()
        assert first.wait(RACE_DEADLINE) == 3, "the first process must stop with LockLost"
        assert second.wait(RACE_DEADLINE) == 0, "the second process must finish the flow"
    finally:
        open(os.path.join(dir, "release"), "w").close()
        for process in children:
            if process.poll() is None:
                process.kill()
                process.wait()

    runs = executions(dir)
    by_task = {name: [who for who, n in runs if n == name] for name in TASKS}
    # Never two engines: the first stopped at its first write after the kill, so it ran
    # nothing after the gate; the second ran the rest.  Only the gate, in flight in the
    # first process when its lock died, ran twice (its outcome was refused).
    assert by_task == {
        "a": ["first"],
        "b": ["first"],
        "gate": ["first", "second"],
        "c": ["second"],
        "d": ["second"],
    }
    final, _ = stored(backend, fd_uuid)
    assert final.state == states.SUCCESS
    assert {ad.name: ad.results for ad in final} == {n: n for n in TASKS}


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
