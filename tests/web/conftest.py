"""Fixtures of the dashboard tests: a real SQLite logbook with three flows, and a served dashboard."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn  # the web extra is part of the test extra

from tests.support import wait_until


@pytest.fixture
def logbook(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """The URL of an SQLite logbook holding the flows of tests/web/flows.py, and their uuids."""
    from tests.web.flows import populate

    url = "sqlite:///%s" % (tmp_path / "flows.db",)
    return url, populate(url)


class Served:
    """A dashboard served by uvicorn on a free local port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="dashboard", daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), "the dashboard to start")
        assert self.server.started, "the dashboard did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = "http://127.0.0.1:%d" % (port,)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(app)`` starts ``app`` on a free port and returns it; every one is stopped after the test."""
    started: list[Served] = []

    def start(app: Any) -> Served:
        served = Served(app)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture
def reconciled(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The URL of an SQLite logbook holding the resources of tests/web/resources.py, and those resources."""
    from tests.web.resources import reconcile

    url = "sqlite:///%s" % (tmp_path / "resources.db",)
    return url, reconcile(url)
