"""executor=: any concurrent.futures-style executor, TaskFlow's names, and futurist's green threads."""

from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HAVE_EVENTLET = importlib.util.find_spec("eventlet") is not None


def _flow(package: str) -> Any:
    task = importlib.import_module(package + ".task")
    unordered_flow = importlib.import_module(package + ".patterns.unordered_flow")

    class Name(task.Task):
        def execute(self) -> str:
            return str(self.name)

    return unordered_flow.Flow("u").add(Name("a", provides="a"), Name("b", provides="b"))


def test_a_concurrent_futures_thread_pool(package: str) -> None:
    engines = importlib.import_module(package + ".engines")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        engine = engines.load(_flow(package), engine="parallel", executor=pool)
        engine.run()
    assert (engine.storage.fetch("a"), engine.storage.fetch("b")) == ("a", "b")


@pytest.mark.parametrize("name", ["threads", "threaded", "thread", "THREADED"])
def test_taskflows_names_for_a_thread_pool(package: str, name: str) -> None:
    engines = importlib.import_module(package + ".engines")
    engine = engines.load(_flow(package), engine="parallel", executor=name)
    engine.run()
    assert engine.storage.fetch("b") == "b"


class DuckPool:
    """An executor that is not a concurrent.futures.Executor but has its submit()."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Any, *args: Any) -> concurrent.futures.Future[Any]:
        self.submitted += 1
        return self._pool.submit(fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown()


def test_any_executor_with_submit_runs_the_flow() -> None:
    # TaskFlow refuses what is not a concurrent.futures.Executor; flowkit takes any submit().
    from flowkit import engines

    pool = DuckPool()
    try:
        engine = engines.load(_flow("flowkit"), engine="parallel", executor=pool)
        engine.run()
    finally:
        pool.shutdown()
    assert pool.submitted == 2
    assert engine.storage.fetch("a") == "a"


def test_an_executor_that_returns_no_future_fails_the_atom_clearly() -> None:
    from flowkit import engines

    class NoFuture:
        def submit(self, fn: Any, *args: Any) -> None:
            return None

    engine = engines.load(_flow("flowkit"), engine="parallel", executor=NoFuture())
    with pytest.raises(Exception, match=r"could not be submitted to the executor: NoFuture.submit\(\) returned None"):
        engine.run()


def test_what_is_no_executor_is_refused_at_load() -> None:
    from flowkit import engines

    with pytest.raises(ValueError, match=r"executor must be 'threads', 'processes', 'greenthreads' or an executor"):
        engines.load(_flow("flowkit"), engine="parallel", executor=42)


@pytest.mark.skipif(HAVE_EVENTLET, reason="eventlet is installed: green threads are available")
def test_green_threads_without_eventlet_are_refused_at_load() -> None:
    from flowkit import engines

    with pytest.raises(ValueError, match=r"needs eventlet: pip install 'flowkit\[greenthreads\]'"):
        engines.load(_flow("flowkit"), engine="parallel", executor="greenthreaded")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_EVENTLET, reason="eventlet is not installed (pip install 'flowkit[greenthreads]')")
@pytest.mark.parametrize("patched", [False, True], ids=["unpatched", "monkey-patched"])
def test_a_green_thread_pool_completes(package: str, patched: bool) -> None:
    # In a child process: eventlet changes threading, and futurist warns when it is imported.
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    argv = [sys.executable, str(Path(__file__).with_name("green_child.py")), package] + (["patch"] if patched else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["given pool: ab", "greenthreaded: ab", "done"]
