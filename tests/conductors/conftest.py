"""Boards for the multi-process conductor tests, and conductor processes to race over them.

Each test gets its own board name, so runs never see each other's jobs.
PostgreSQL comes from ``FLOWKIT_TEST_POSTGRES_URL``, Redis from
``FLOWKIT_TEST_REDIS_URL`` (defaults: the servers on this machine); an
unreachable server skips its tests with the reason, or fails them under
``CI=true``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit.conductors.cli import board_conf
from flowkit.jobs.backends import fetch as fetch_board
from flowkit.jobs.base import JobBoard
from flowkit.persistence.backends import fetch as fetch_backend
from flowkit.persistence.base import Backend
from tests.persistence.conftest import POSTGRES_URL, server_url
from tests.support import unavailable, wait_until

REDIS_URL = os.environ.get("FLOWKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent.parent

#: The board kinds the process tests run on.
KINDS = ("sqlite", "postgres", "redis")


def redis_url() -> str:
    """``REDIS_URL`` if Redis answers; else skip (fail under CI=true) with the reason."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:
        message = "Redis at %s is unreachable (%s: %s); set FLOWKIT_TEST_REDIS_URL to a reachable server" % (
            REDIS_URL,
            type(error).__name__,
            error,
        )
        unavailable(message)
    return REDIS_URL


@dataclasses.dataclass
class Setup:
    """Where one test's jobs and logbooks live, as URLs a conductor process is given."""

    kind: str
    board_url: str
    persistence_url: str
    board_name: str
    tmp: Path

    def persistence(self) -> Backend:
        return fetch_backend(self.persistence_url)

    def board(self, persistence: Backend) -> JobBoard:
        return fetch_board(self.board_name, board_conf(self.board_url), persistence=persistence).connect()


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    """A fresh board (by name) of each kind, with a logbook backend next to it."""
    kind = request.param
    name = "t-%s" % uuid.uuid4().hex[:12]
    if kind == "sqlite":
        url = "sqlite:///%s" % (tmp_path / "flowkit.db")
        return Setup(kind, url, url, name, tmp_path)
    if kind == "postgres":
        url = server_url(POSTGRES_URL, "PostgreSQL", "FLOWKIT_TEST_POSTGRES_URL")
        return Setup(kind, url, url, name, tmp_path)
    # Redis holds the jobs; the logbooks go to PostgreSQL when it is there (the
    # production pairing), else to a SQLite file.
    board = redis_url()
    try:
        persistence = server_url(POSTGRES_URL, "PostgreSQL", "FLOWKIT_TEST_POSTGRES_URL")
    except pytest.skip.Exception:
        persistence = "sqlite:///%s" % (tmp_path / "flowkit.db")
    return Setup(kind, board, persistence, name, tmp_path)


class ConductorProcess:
    """``flowkit conductor`` in a child process; its event lines go to a file."""

    def __init__(
        self,
        setup: Setup,
        name: str,
        *,
        ttl: float,
        hold: bool = False,
        extra: tuple[str, ...] = (),
        cwd: Path | str | None = None,
    ):
        self.name = name
        self.output = setup.tmp / ("%s.out" % name)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env.pop("PYTHONWARNINGS", None)
        env.pop("FLOWKIT_TEST_HOLD", None)
        if hold:
            env["FLOWKIT_TEST_HOLD"] = "1"
        command = [
            sys.executable,
            "-m",
            "flowkit.cli",
            "conductor",
            "--board",
            setup.board_url,
            "--board-name",
            setup.board_name,
            "--persistence",
            setup.persistence_url,
            "--name",
            name,
            "--ttl",
            str(ttl),
            # The jobs' factories: registered by this module's decorators.
            "--import",
            "tests.conductors.flows",
            *extra,
        ]
        with open(self.output, "w") as out:
            # ``python -m`` puts the working directory first on sys.path: what it can import depends on it.
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd if cwd is not None else setup.tmp, env=env
            )

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines()

    def events(self, event: str) -> list[str]:
        """The job uuids of every ``event`` line this conductor printed."""
        return [line.split()[1] for line in self.lines() if line.startswith(event + " ")]

    def wait_for_line(self, prefix: str, deadline: float) -> None:
        """Return once this conductor printed a line starting with ``prefix``; fail if it exits first."""

        def printed() -> bool:
            if any(line.startswith(prefix) for line in self.lines()):
                return True
            if self.proc.poll() is not None:
                raise AssertionError("conductor %s exited (%s):\n%s" % (self.name, self.proc.returncode, self.text()))
            return False

        what = "conductor %s to print a %r line" % (self.name, prefix)
        wait_until(printed, what, deadline=deadline, detail=self.text)

    def text(self) -> str:
        return self.output.read_text()

    def terminate(self, timeout: float) -> int:
        """SIGTERM (drain) and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def conductors() -> Iterator[list[ConductorProcess]]:
    """Conductor processes started by the test; any still alive are killed afterwards."""
    started: list[ConductorProcess] = []
    yield started
    for process in started:
        if process.proc.poll() is None:
            os.kill(process.proc.pid, signal.SIGCONT)
            process.kill()


class AppModule:
    """A flow factory (``make``) in a module of its own, whose folder can leave sys.path and come back.

    The job is posted while the module is importable (posting registers
    ``make`` in this process); then ``hide()``: the module leaves sys.path and
    ``make`` the default factory registry, so a conductor that runs now is one
    started where the module is not, as in the field.  ``put_back()`` undoes
    both.
    """

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import importlib

        self.name = "app_flows_%s" % (tmp_path.name.replace("-", "_"),)
        self.folder = str(tmp_path / "app")
        os.mkdir(self.folder)
        with open(os.path.join(self.folder, self.name + ".py"), "w") as out:
            out.write("from tests.conductors import flows\n\n\ndef make():\n    return flows.one_line()\n")
        self._monkeypatch = monkeypatch
        monkeypatch.syspath_prepend(self.folder)
        self.make = importlib.import_module(self.name).make

    def hide(self) -> None:
        import importlib
        import sys

        from flowkit.factories import default_registry

        sys.path.remove(self.folder)
        del sys.modules[self.name]
        importlib.invalidate_caches()
        if self.factory_name in default_registry:
            default_registry.unregister(self.factory_name)

    def put_back(self) -> None:
        from flowkit.factories import register

        self._monkeypatch.syspath_prepend(self.folder)
        register(self.make)

    @property
    def factory_name(self) -> str:
        """The name the job's flow detail records for ``make``."""
        return "%s:make" % (self.name,)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppModule:
    """A flow factory module of this test's own (see :class:`AppModule`)."""
    return AppModule(tmp_path, monkeypatch)
