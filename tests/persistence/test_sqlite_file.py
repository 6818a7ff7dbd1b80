"""The SQLite file goes away under a running engine: the next flush fails, the run never reports SUCCESS.

A task in the middle of the flow deletes the database file (with its -wal and
-shm), or puts another database file in its place.  The engine's writer still
has the old file open, so SQLite would go on committing into an unlinked
inode: nothing durable.  The backend notices at the next flush (the path no
longer leads to the file it opened) and fails with StorageFailure naming it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from flowkit import states
from flowkit.exceptions import StorageFailure
from flowkit.patterns import linear_flow
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.task import Task


class Mark(Task):
    """Append the task's name to the file ``log`` (in whatever process runs it), return the name."""

    def execute(self, log: str) -> str:
        with open(log, "a") as f:
            f.write(self.name + "\n")
        return self.name


class DeleteDatabase(Mark):
    """Delete the database file ``db`` and its -wal and -shm."""

    def execute(self, log: str, db: str) -> str:  # type: ignore[override]
        for path in (db, db + "-wal", db + "-shm"):
            os.unlink(path)
        return super().execute(log)


class ReplaceDatabase(Mark):
    """Put a copy of ``db`` (another file, another inode) in its place."""

    def execute(self, log: str, db: str) -> str:  # type: ignore[override]
        copy = db + ".copy"
        # A consistent copy through SQLite's backup API, then an atomic rename over the original.
        source = sqlite3.connect(db)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        os.replace(copy, db)
        for path in (db + "-wal", db + "-shm"):
            if os.path.exists(path):
                os.unlink(path)
        return super().execute(log)


def make_flow(middle: type[Mark]) -> linear_flow.Flow:
    return linear_flow.Flow("vanishing").add(Mark("before"), middle("middle"), Mark("after"), Mark("last"))


def executed(log: str) -> list[str]:
    with open(log) as f:
        return f.read().split()


@pytest.mark.parametrize(
    ("middle", "what"),
    [(DeleteDatabase, "was deleted"), (ReplaceDatabase, "was replaced")],
    ids=["deleted", "replaced"],
)
def test_database_file_gone_mid_flow_is_a_storage_failure(
    tmp_path: Any, load: Callable[..., Any], middle: type[Mark], what: str
) -> None:
    db = str(tmp_path / "flows.db")
    log = str(tmp_path / "executed.txt")
    backend = SQLAlchemyBackend("sqlite:///" + db)
    try:
        engine = load(make_flow(middle), store={"log": log, "db": db}, backend=backend)
        with pytest.raises(StorageFailure) as caught:
            engine.run()
        message = str(caught.value)
        assert db in message and what in message
        assert engine.storage.get_flow_state() != states.SUCCESS
        # The flush after the middle task failed, so the next task never started.
        assert executed(log) == ["before", "middle"]
        # And every later write is refused too, rather than going to the lost file.
        with pytest.raises(StorageFailure, match=what):
            engine.run()
        assert executed(log) == ["before", "middle"]
    finally:
        backend.close()


def test_untouched_file_runs_to_success(tmp_path: Any, load: Callable[..., Any]) -> None:
    # The identity check must not fire on a file that stays put (WAL checkpoints included).
    db = str(tmp_path / "flows.db")
    log = str(tmp_path / "executed.txt")
    backend = SQLAlchemyBackend("sqlite:///" + db)
    try:
        flow = linear_flow.Flow("steady").add(*(Mark("m%d" % i) for i in range(6)))
        engine = load(flow, store={"log": log}, backend=backend)
        with backend.get_connection() as conn:
            engine.run()
            conn.flush()
        # A checkpoint moves the WAL into the file but keeps both files where they are.
        with sqlite3.connect(db) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.reset()
        engine.run()
        assert engine.storage.get_flow_state() == states.SUCCESS
        assert executed(log) == ["m%d" % i for i in range(6)] * 2
    finally:
        backend.close()
    shutil.rmtree(db + ".locks", ignore_errors=True)
