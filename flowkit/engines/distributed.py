"""``engine="distributed"``: atoms run on a Dask ``distributed`` cluster.

The engine process keeps the logbook and every scheduling decision; the
cluster only runs :func:`~flowkit.engines.executors.run_execute` /
:func:`~flowkit.engines.executors.run_revert` on a pickled copy of the atom
and sends back the :class:`~flowkit.engines.executors.Outcome` (result or captured
:class:`~flowkit.types.failure.Failure`, plus the progress the task reported,
which the engine replays on the task's notifier).

Dask is an optional dependency: it is imported when a
:class:`DistributedExecutor` is created, never by the engine core.

What happens when part of the cluster goes away:

* **A worker dies** while it runs an atom: the Dask scheduler runs the task
  again on another worker.  A task whose workers died more than
  ``distributed.scheduler.allowed-failures`` times (default 3) errs with
  ``KilledWorker``; flowkit turns that into the atom's failure, which goes
  through the normal retry / revert path.  Tasks must therefore have
  idempotent ``execute()``/``revert()`` (as for a resume).
* **The scheduler connection is lost** (the scheduler died, the network
  dropped, the client was closed): Dask cancels every pending future;
  flowkit turns that into :class:`~flowkit.exceptions.ExecutorLost`, the
  engine stops at once, leaves in-flight atoms RUNNING in the logbook and the
  flow SUSPENDED.  ``run()`` again (or ``load_from_detail()`` in another
  process) with a reachable cluster resumes it and re-runs those atoms.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import importlib
import threading
import uuid
from collections.abc import Callable
from typing import Any

from flowkit import exceptions as exc
from flowkit.engines._atom_executor import AtomExecutor

__all__ = ["DistributedExecutor", "DaskFlag", "DaskChannel", "INSTALL_HINT", "local_cluster_options"]

#: What to tell a user who asks for the distributed mode without Dask installed.
INSTALL_HINT = "engine='distributed' needs Dask's distributed package: pip install flowkit[distributed]"

# How long closing a client or cluster that flowkit started may take (seconds).
_CLOSE_TIMEOUT = 10


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return distributed


def _check_cloudpickle(atom: Any) -> None:
    """Raise :class:`~flowkit.exceptions.AtomNotPicklable` unless Dask can ship ``atom``."""
    # cloudpickle comes with Dask and is what it ships tasks with (it pickles
    # classes and functions defined in __main__ or locally by value).
    cloudpickle = importlib.import_module("cloudpickle")
    try:
        cloudpickle.dumps(atom)
    except Exception as error:
        raise exc.AtomNotPicklable(
            "atom %r cannot run on a Dask cluster: it does not pickle with cloudpickle (%s: %s); keep "
            "no locks, sockets, open files or clients on the task"
            % (getattr(atom, "name", atom), type(error).__name__, error)
        ) from error


def local_cluster_options(n_workers: int | None) -> dict[str, Any]:
    """The ``LocalCluster`` options flowkit starts a cluster with: processes, no dashboard.

    ``dashboard_address=None`` turns the dashboard off, but the scheduler still
    serves its health and metrics routes, on port 8787 unless told otherwise; a
    random localhost port keeps two such clusters (two flows at once) from
    colliding there.
    """
    return {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
    }


class DaskFlag:
    """A stop flag that Dask workers read: a ``distributed.Event`` named for one run.

    The engine raises it through its client; a worker-side copy (it pickles
    as its name) opens the event through the worker's own client on first
    use, so a look is one small message to the scheduler, paid only when a
    task asks.  Nothing is sent to the scheduler for a run that is never
    stopped.
    """

    __slots__ = ("name", "_client", "_event", "_raised")

    def __init__(self, name: str, client: Any = None) -> None:
        self.name = name
        self._client = client
        self._event: Any = None
        self._raised = False

    def _get(self) -> Any:
        if self._event is None:
            distributed = _import_distributed()
            self._event = distributed.Event(self.name, client=self._client)
        return self._event

    def set(self) -> None:
        self._raised = True
        self._get().set()

    def is_set(self) -> bool:
        return self._raised or bool(self._get().is_set())

    def close(self) -> None:
        if self._raised and self._client is not None and self._client.status == "running":
            # A cleared event with no waiters is forgotten by the scheduler.
            self._get().clear()

    def __reduce__(self) -> tuple[Any, ...]:
        return (DaskFlag, (self.name,))


class DaskChannel:
    """A heartbeat channel to Dask workers: a ``distributed.Variable`` named for one attempt.

    A worker-side copy (it pickles as its name) sets the variable through the
    worker's own client (a small message to the scheduler per send, which the
    pulse sends at most every :data:`~flowkit.types.heartbeat.SEND_EVERY`
    seconds); the engine reads it through its client when it looks.
    """

    __slots__ = ("name", "_client", "_variable")

    def __init__(self, name: str, client: Any = None) -> None:
        self.name = name
        self._client = client
        self._variable: Any = None

    def _get(self) -> Any:
        if self._variable is None:
            distributed = _import_distributed()
            self._variable = distributed.Variable(self.name, client=self._client)
        return self._variable

    def send(self, state: str) -> None:
        self._get().set(state)

    def read(self) -> str | None:
        try:
            value = self._get().get(timeout=0)
        except (TimeoutError, asyncio.TimeoutError):
            return None  # nothing sent yet
        return value if isinstance(value, str) else None

    def close(self) -> None:
        if self._variable is not None and self._client is not None and self._client.status == "running":
            try:
                self._variable.delete()
            except Exception:  # the scheduler forgets it with the client anyway
                pass

    def __reduce__(self) -> tuple[Any, ...]:
        return (DaskChannel, (self.name,))


class DistributedExecutor(AtomExecutor):
    """Runs atoms on a Dask cluster through a ``distributed.Client``.

    Give exactly one of ``address`` (a scheduler address such as
    ``"tcp://host:8786"``; a client is opened for each run and closed after
    it), ``client`` (an existing ``distributed.Client``, never closed here) or
    neither (a ``LocalCluster`` of worker processes, dashboard off, is started
    for each run and closed after it).

    ``max_workers`` is how many atoms are submitted at once; by default eight
    per worker thread of the cluster (at least 32), so a worker finds its next
    atom already queued instead of waiting a round trip for the engine (a
    submitted atom is RUNNING in the logbook, so a crash of the engine process
    re-runs at most these).  For a
    ``LocalCluster`` started here it is also the number of worker processes
    (one thread each; default: the CPU count).  ``security`` is passed to the
    client opened for ``address`` (a ``distributed.security.Security`` for
    TLS).

    Every submission is impure (``pure=False``) and keyed by atom, attempt and
    this executor, so two identical calls always both run.
    """

    local = False

    def __init__(
        self,
        *,
        address: str | None = None,
        client: Any = None,
        max_workers: int | None = None,
        security: Any = None,
    ) -> None:
        distributed = _import_distributed()
        if address is not None and client is not None:
            raise ValueError("engine='distributed' takes address= or client=, not both")
        if client is not None and not isinstance(client, distributed.Client):
            raise TypeError("client must be a distributed.Client, got %r" % (client,))
        if address is not None and not isinstance(address, str):
            raise TypeError("address must be a scheduler address string, got %r" % (address,))
        self._distributed = distributed
        self._address = address
        self._given_client = client
        self._max_workers = max_workers
        self._security = security
        self._client: Any = None
        self._cluster: Any = None
        # Keys name the atom and the attempt; the token keeps two engines
        # (or two runs) sharing one cluster from ever reusing a key, which
        # Dask would answer with the earlier task's result.
        self._token = uuid.uuid4().hex[:12]
        self._attempts: collections.Counter[str] = collections.Counter()
        # Futures Dask reported done, waiting for their results to be fetched.
        self._lock = threading.Lock()
        self._done: list[tuple[Any, concurrent.futures.Future[Any]]] = []
        self._fetch_scheduled = False
        self.max_in_flight = max_workers or 32

    # -- lifecycle -------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` of the current run (None outside a run)."""
        return self._client

    def check_atom(self, atom: Any) -> None:
        _check_cloudpickle(atom)

    def cancel_flag(self) -> DaskFlag:
        return DaskFlag("flowkit-cancel-%s" % (uuid.uuid4().hex,), self._client)

    def heartbeat_channel(self) -> DaskChannel:
        return DaskChannel("flowkit-heartbeat-%s" % (uuid.uuid4().hex,), self._client)

    def abandon(self, future: concurrent.futures.Future[Any]) -> None:
        dask_future = getattr(future, "flowkit_dask_future", None)
        if dask_future is not None and self._client is not None and self._client.status == "running":
            # The scheduler releases the task; a worker thread still inside it
            # finishes on its own, and its result is dropped.
            dask_future.cancel()

    def start(self) -> None:
        if self._client is not None:
            return
        distributed = self._distributed
        if self._given_client is not None:
            self._client = self._given_client
        elif self._address is not None:
            try:
                self._client = distributed.Client(self._address, security=self._security, set_as_default=False)
            except OSError as error:
                raise exc.ExecutorLost("cannot reach the Dask scheduler at %s: %s" % (self._address, error)) from error
        else:
            self._cluster = distributed.LocalCluster(**local_cluster_options(self._max_workers))
            self._client = distributed.Client(self._cluster, set_as_default=False)
        if self._max_workers is None:
            threads = sum(self._client.nthreads().values()) if self._client.status == "running" else 0
            self.max_in_flight = max(32, 8 * threads)

    def stop(self) -> None:
        client, self._client = self._client, None
        cluster, self._cluster = self._cluster, None
        if client is not None and client is not self._given_client:
            client.close(timeout=_CLOSE_TIMEOUT)
        if cluster is not None:
            cluster.close(timeout=_CLOSE_TIMEOUT)

    # -- running atoms ----------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        if self._client is None:
            self.start()
        client = self._client
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if client.status not in ("running", "newly-created"):
            result.set_exception(self._lost("its client is %s" % (client.status,)))
            return result
        name = str(getattr(args[0], "name", fn.__name__)) if args else fn.__name__
        what = "%s-%s" % (fn.__name__, name)
        self._attempts[what] += 1
        key = "flowkit-%s-%d-%s" % (what, self._attempts[what], self._token)
        try:
            future = client.submit(fn, *args, pure=False, key=key)
        except Exception as error:
            if client.status not in ("running", "newly-created"):
                result.set_exception(self._lost("%s: %s" % (type(error).__name__, error)))
                return result
            raise
        future.add_done_callback(functools.partial(self._finished, client, result))
        result.flowkit_dask_future = future  # type: ignore[attr-defined]  # for abandon()
        return result

    def _finished(self, client: Any, result: concurrent.futures.Future[Any], future: Any) -> None:
        """Dask's callback (in its callback thread): queue the outcome to be fetched."""
        with self._lock:
            self._done.append((future, result))
            if self._fetch_scheduled:
                return
            self._fetch_scheduled = True
        client.loop.add_callback(self._fetch, client)

    async def _fetch(self, client: Any) -> None:
        """Hand every finished future's outcome to its engine future (on the client's loop).

        One fetch runs at a time and takes everything that finished while the
        previous one was in flight, gathering the results in one request, as
        raw Dask code gathering a batch would: a request per atom would double
        the scheduler's work on a wide flow.  When idle, a result is fetched at
        once, so a chain pays no extra latency.
        """
        while True:
            with self._lock:
                batch, self._done = self._done, []
                if not batch:
                    self._fetch_scheduled = False
                    return
            finished = [(f, r) for f, r in batch if f.status == "finished"]
            others = [(f, r) for f, r in batch if f.status != "finished"]
            if len(finished) > 1:
                try:
                    values = await client.gather([f for f, _ in finished], asynchronous=True)
                except BaseException:  # one of them went missing: fetch each on its own
                    others += finished
                else:
                    for (_, result), value in zip(finished, values):
                        result.set_result(value)
            else:
                others += finished
            for future, result in others:
                await self._relay(client, future, result)

    def _lost(self, why: str) -> exc.ExecutorLost:
        where = self._address or ("a LocalCluster" if self._cluster is not None else "the client's scheduler")
        return exc.ExecutorLost(
            "lost the Dask scheduler (%s): %s; the flow is suspended, run it again to resume" % (where, why)
        )

    async def _relay(self, client: Any, future: Any, result: concurrent.futures.Future[Any]) -> None:
        """Fetch ``future``'s outcome on the client's loop and hand it to ``result``."""
        try:
            value = await client.gather(future, asynchronous=True)
        except (concurrent.futures.CancelledError, asyncio.CancelledError) as error:
            # Dask cancels every future when it loses the scheduler (or the
            # client closes); nobody knows whether the atom ran.
            result.set_exception(self._lost(str(error) or type(error).__name__))
            return
        except BaseException as error:  # KilledWorker, a task that would not unpickle, ...
            if client.status not in ("running", "newly-created"):
                result.set_exception(self._lost("%s: %s" % (type(error).__name__, error)))
            else:
                result.set_exception(error)
            return
        result.set_result(value)
