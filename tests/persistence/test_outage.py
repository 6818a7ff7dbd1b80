"""The database goes away mid-flow: the engine stops with StorageFailure and resumes later.

A TCP proxy (threads in this process, on 127.0.0.1) sits between flowkit and
PostgreSQL.  A task in the middle of the flow cuts it while it executes, so
the next durability point (its SUCCESS plus its successor's RUNNING, one
transaction) cannot be written.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flowkit import engines, states
from flowkit.exceptions import StorageFailure
from flowkit.patterns import linear_flow
from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend
from flowkit.task import Task

pytestmark = pytest.mark.postgres


class Proxy:
    """Forwards 127.0.0.1:<port> to a server; ``cut()`` drops every connection and refuses new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set() or self.stopping.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.update((client, server))
            self._spawn(self._pipe, client, server)

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                if self.stopping.is_set() or not self.up.is_set():
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except OSError:
            return
        finally:
            self._close(a, b)

    def _close(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self.lock:
                self.sockets.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self) -> None:
        """Drop every forwarded connection now; refuse new ones until :meth:`restore`.

        Only shuts the sockets down: each pipe thread wakes from ``select`` on
        the shutdown and closes its own pair, so no thread ever selects on a
        descriptor another thread has already closed.
        """
        self.up.clear()
        with self.lock:
            live = list(self.sockets)
        for sock in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self) -> None:
        """Forward new connections again."""
        self.up.set()

    def close(self) -> None:
        """Stop everything and wait for the threads (bounded)."""
        self.stopping.set()
        self.cut()
        # close() does not wake a thread blocked in accept(); a connection does.
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        except OSError:
            pass
        self.listener.close()
        for thread in self.threads:
            thread.join(10)


EXECUTED: list[str] = []
CUT_AT: dict[str, Callable[[], None]] = {}


class Step(Task):
    """Record the execution; the task named in CUT_AT cuts the database while it runs."""

    def execute(self) -> str:
        EXECUTED.append(self.name)
        hook = CUT_AT.pop(self.name, None)
        if hook is not None:
            hook()
        return self.name


def make_flow() -> linear_flow.Flow:
    return linear_flow.Flow("outage").add(*(Step("s%d" % i) for i in range(8)))


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[Proxy]:
    import sqlalchemy as sa

    url = sa.make_url(postgres_url)
    p = Proxy(url.host or "127.0.0.1", url.port or 5432)
    yield p
    p.close()


# The tasks record themselves and cut the proxy in this process: not on Dask workers.
@pytest.mark.modes("serial", "parallel")
def test_database_outage_stops_the_engine_and_the_flow_resumes(
    postgres_url: str,
    proxy: Proxy,
    sql_backend_factory: Callable[..., SQLAlchemyBackend],
    engine_options: dict[str, Any],
) -> None:
    import sqlalchemy as sa

    direct = sql_backend_factory(postgres_url)
    direct.upgrade()
    through = sa.make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
    backend = sql_backend_factory(through.render_as_string(hide_password=False), table_prefix=direct.table_prefix)
    EXECUTED.clear()
    CUT_AT.clear()
    CUT_AT["s3"] = proxy.cut

    engine = engines.load(make_flow(), backend=backend, **engine_options)
    with pytest.raises(StorageFailure) as caught:
        engine.run()
    assert "s3" in str(caught.value) or "s4" in str(caught.value) or "outage" in str(caught.value)
    assert caught.value.__cause__ is not None
    assert EXECUTED == ["s0", "s1", "s2", "s3"], "no task may start without its RUNNING record"

    # What is durable: s0-s2 done, s3 RUNNING (its SUCCESS and s4's RUNNING were
    # one transaction, which failed whole), the rest untouched.
    with direct.get_connection() as conn:
        fd = conn.get_flow_details(engine.flow_detail.uuid)
        book = next(b for b in conn.get_logbooks() if b.find(fd.uuid) is not None)
    stored = {ad.name: ad.state for ad in fd}
    assert stored == {
        "s0": states.SUCCESS,
        "s1": states.SUCCESS,
        "s2": states.SUCCESS,
        "s3": states.RUNNING,
        **{"s%d" % i: states.PENDING for i in range(4, 8)},
    }

    proxy.restore()
    resumed = engines.load(make_flow(), backend=backend, book=book, flow_detail=fd, **engine_options)
    resumed.run()
    assert resumed.storage.get_flow_state() == states.SUCCESS
    # Only the atom in flight at the outage runs twice.
    assert EXECUTED == ["s0", "s1", "s2", "s3", "s3", "s4", "s5", "s6", "s7"]
    with direct.get_connection() as conn:
        final = conn.get_flow_details(fd.uuid)
    assert final.state == states.SUCCESS
    assert {ad.name: ad.results for ad in final} == {"s%d" % i: "s%d" % i for i in range(8)}


def test_unreachable_database_is_a_storage_failure(postgres_url: str, proxy: Proxy) -> None:
    import sqlalchemy as sa

    proxy.cut()
    url = sa.make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
    with SQLAlchemyBackend(url.render_as_string(hide_password=False), table_prefix="never_") as backend:
        with pytest.raises(StorageFailure, match="127.0.0.1:%d" % proxy.port) as caught:
            with backend.get_connection() as conn:
                conn.get_logbook("x")
    assert caught.value.__cause__ is not None
