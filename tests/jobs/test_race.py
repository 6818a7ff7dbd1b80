"""Several processes race to claim jobs from one board: every job is claimed exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowkit.jobs import backends
from flowkit.jobs.base import JobState
from tests.persistence.conftest import drop_tables, unique_prefix

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
JOBS = 300


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def conf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    name = "race-%s" % uuid.uuid4().hex[:8]
    if request.param == "sqlite":
        yield {"name": name, "board": "sql", "url": "sqlite:///%s" % (tmp_path / "race.db"), "poll_interval": 0.05}
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        yield {"name": name, "board": "redis", "url": url}
        board = backends.fetch(name, {"board": "redis", "url": url})
        board.clear()  # type: ignore[attr-defined]
        board.close()
    else:
        url = request.getfixturevalue("%s_url" % ("postgres" if request.param == "postgresql" else "mysql"))
        prefix = unique_prefix()
        yield {"name": name, "board": "sql", "url": url, "table_prefix": prefix, "poll_interval": 0.05}
        drop_tables(url, prefix)


@pytest.mark.timeout(180)
def test_processes_claim_every_job_exactly_once(conf: dict[str, Any]) -> None:
    options = {k: v for k, v in conf.items() if k != "name"}
    board = backends.fetch(conf["name"], options)
    board.connect()
    jobs = [board.post("job-%d" % i, resources=["r%d" % (i % 7)] if i % 3 == 0 else ()) for i in range(JOBS)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.jobs.race_child", "w%d" % i, json.dumps(conf)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.communicate(timeout=30)[1]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    # Every process holds a claim of its own at the same moment before any consumes:
    # the race is real whatever the machine's scheduling.
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "holding", child.communicate(timeout=30)[1]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("continue\n")
        child.stdin.flush()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=150)  # closes stdin too
        assert child.returncode == 0, err
        outputs.append([line.split() for line in out.splitlines()])
    consumed = Counter(uuid for lines in outputs for uuid, _ in lines)
    assert set(consumed) == {j.uuid for j in jobs}
    assert all(n == 1 for n in consumed.values()), [u for u, n in consumed.items() if n > 1]
    assert all(board.state_of(j) is JobState.COMPLETE for j in jobs)
    assert board.job_count == 0
    # Every process won at least the job it held.
    assert all(lines for lines in outputs), [len(lines) for lines in outputs]
    board.close()
