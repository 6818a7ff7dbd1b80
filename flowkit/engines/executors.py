"""Where atoms run: one small contract, one implementation per engine mode.

An :class:`AtomExecutor` submits one module-level function with positional
arguments and returns a ``concurrent.futures.Future``.  The engine modes
differ only here: serial calls it inline, in the engine's thread (no
future, no lock: :meth:`AtomExecutor.call`), parallel on a futurist thread, process or green-thread pool, or any
``concurrent.futures``-style executor the user passes, distributed on a Dask
cluster (:mod:`flowkit.engines.distributed`, imported only when asked for;
it finds the contract in ``_atom_executor``, so the two modules do not
import each other).  What runs on the other side is :func:`run_execute` /
:func:`run_revert`: they never raise, they return an :class:`Outcome`, so a
failure crosses a thread or process as a
:class:`~flowkit.types.failure.Failure` with its traceback text.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from flowkit.engines._atom_executor import AtomExecutor
from flowkit.task import TaskContext
from flowkit.types.failure import Failure

__all__ = [
    "AtomExecutor",
    "Outcome",
    "SerialExecutor",
    "ThreadExecutor",
    "ProcessExecutor",
    "GreenThreadExecutor",
    "WrappedExecutor",
    "FileFlag",
    "FileChannel",
    "run_execute",
    "run_revert",
    "make_executor",
]

#: This module's logger (TaskFlow's modules each have a ``LOG``).
LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True, init=False)
class Outcome:
    """What running an atom's ``execute`` or ``revert`` came to, wherever it ran.

    It travels back from a worker thread, process or Dask worker as it is,
    so it holds data only.
    """

    #: Whether the function returned (True) or raised (False).
    ok: bool
    #: What it returned, or the :class:`~flowkit.types.failure.Failure` of what it raised.
    value: Any
    #: The progress the task reported where the engine could not hear it live
    #: (another process or machine), in order; the engine replays it.
    progress: tuple[float, ...]

    def __init__(self, ok: bool, value: Any, progress: tuple[float, ...] = ()) -> None:
        # One is made per atom run: setting the slots directly costs half of
        # what the generated frozen __init__ does (object.__setattr__ per field).
        _set_ok(self, ok)
        _set_value(self, value)
        _set_progress(self, progress)


# The slots' own setters: they bypass the frozen __setattr__, which is what
# makes an Outcome read-only once built.
_set_ok = Outcome.__dict__["ok"].__set__
_set_value = Outcome.__dict__["value"].__set__
_set_progress = Outcome.__dict__["progress"].__set__


def run_execute(task: Any, kwargs: dict[str, Any], context: TaskContext) -> Outcome:
    """Run ``task.execute(**kwargs)`` with its hooks, ``context`` current; never raises."""
    # (run_revert is the same with the revert hooks: one copy each, as this
    # runs once per atom and a shared helper would add a call to every run.)
    if context.trace_context is not None:
        from flowkit.engines._trace_context import run_traced

        return run_traced(run_execute, "execute", task, kwargs, context)
    events, context = _progress_collector(context)
    token = context.activate()
    try:
        task.pre_execute()
        try:
            result = task.execute(**kwargs)
        finally:
            task.post_execute()
    except Exception:
        return Outcome(False, Failure(), tuple(events) if events else ())
    finally:
        TaskContext.deactivate(token)
        if context.pulse is not None:
            _flush_pulse(context)
    return Outcome(True, result, tuple(events) if events else ())


def _flush_pulse(context: TaskContext) -> None:
    """Send the last heartbeat of an attempt in another process (its details reach the engine)."""
    try:
        context.pulse.flush()  # type: ignore[union-attr]
    except Exception:  # the engine then keeps the details it has; the outcome matters more
        LOG.warning("atom %r: sending its last heartbeat failed", context.atom_name, exc_info=True)


def run_revert(task: Any, kwargs: dict[str, Any], context: TaskContext) -> Outcome:
    """Run ``task.revert(**kwargs)`` with its hooks, ``context`` current; never raises."""
    if context.trace_context is not None:
        from flowkit.engines._trace_context import run_traced

        return run_traced(run_revert, "revert", task, kwargs, context)
    events, context = _progress_collector(context)
    token = context.activate()
    try:
        task.pre_revert()
        try:
            result = task.revert(**kwargs)
        finally:
            task.post_revert()
    except Exception:
        return Outcome(False, Failure(), tuple(events) if events else ())
    finally:
        TaskContext.deactivate(token)
    return Outcome(True, result, tuple(events) if events else ())


def _progress_collector(context: TaskContext) -> tuple[list[float] | None, TaskContext]:
    """``context`` as it is in the engine's process; elsewhere, one that collects the progress to send back."""
    if context.progress_sink is not None:
        return None, context
    # Away from the engine (another process or machine): keep what the task
    # reports, and send it back with the outcome.
    events: list[float] = []
    return events, dataclasses.replace(context, progress_sink=lambda _name, progress: events.append(progress))


class FileFlag:
    """A stop flag that processes on this machine read: a file that exists once the flag is raised.

    A process pool's workers share the engine's file system, so a look costs
    one ``stat`` and needs no server, manager process or pipe.  The file lives
    in a directory of its own, made for the run and removed by ``close()``.
    """

    __slots__ = ("path",)

    def __init__(self, path: str | None = None) -> None:
        if path is None:
            import tempfile

            path = os.path.join(tempfile.mkdtemp(prefix="flowkit-cancel-"), "cancelled")
        self.path = path

    def set(self) -> None:
        with open(self.path, "a"):
            pass

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def close(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        try:
            os.rmdir(os.path.dirname(self.path))
        except OSError:
            pass

    def __reduce__(self) -> tuple[Any, ...]:
        return (FileFlag, (self.path,))


class FileChannel:
    """A heartbeat channel that processes on this machine share: a small file, replaced whole on each send.

    Made per attempt, in a directory of its own, removed by ``close()``.
    """

    __slots__ = ("path",)

    def __init__(self, path: str | None = None) -> None:
        if path is None:
            import tempfile

            path = os.path.join(tempfile.mkdtemp(prefix="flowkit-heartbeat-"), "pulse")
        self.path = path

    def send(self, state: str) -> None:
        staging = "%s.%d" % (self.path, os.getpid())
        with open(staging, "w", encoding="utf-8") as handle:
            handle.write(state)
        os.replace(staging, self.path)  # a reader sees the old state or the new one, never half

    def read(self) -> str | None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return handle.read(_MAX_CHANNEL_STATE + 1)
        except FileNotFoundError:
            return None

    def close(self) -> None:
        directory = os.path.dirname(self.path)
        try:
            for entry in os.listdir(directory):
                os.remove(os.path.join(directory, entry))
            os.rmdir(directory)
        except OSError:
            pass

    def __reduce__(self) -> tuple[Any, ...]:
        return (FileChannel, (self.path,))


#: The most of a channel file that is read: heartbeat details are small (a larger state is ignored).
_MAX_CHANNEL_STATE = 1 << 20


class SerialExecutor(AtomExecutor):
    """Runs each atom inline, in the engine's thread.

    Every atom that is ready is started in the same round (as TaskFlow's
    serial engine does), so independent atoms that fail are all seen and
    reported together, as they would be on a parallel engine.
    """

    max_in_flight = sys.maxsize
    inline = True

    def __init__(self) -> None:
        self._executor: Any = None

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        # The engine's own path: the function is run_execute/run_revert,
        # which never raise, so a Future around it would only cost time.
        return fn(*args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        if self._executor is None:
            import futurist

            self._executor = futurist.SynchronousExecutor()
        return self._executor.submit(fn, *args)


class _OwnedPool(AtomExecutor):
    """A pool created when a run starts and shut down when it ends."""

    #: Whether ``stop()`` waits for the workers to exit.
    _join_on_stop = False

    def __init__(self, max_workers: int) -> None:
        self.max_in_flight = max_workers
        self._pool: Any = None

    def _make_pool(self) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        if self._pool is None:
            self._pool = self._make_pool()

    def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=self._join_on_stop)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        if self._pool is None:
            self.start()
        return self._pool.submit(fn, *args)


class ThreadExecutor(_OwnedPool):
    """A futurist thread pool, created for the run and released after it.

    Every atom has completed when the run stops the pool, so it does not join
    the idle workers: they notice the shutdown on their own.  Joining them
    would cost up to a second per run (futurist workers poll their queue once
    a second), which is what TaskFlow's parallel engine pays.

    More atoms than workers are handed to the pool (``max_in_flight``: four
    per worker, at least 32), so a worker that finishes one takes up the
    next at once instead of waiting for the engine's loop to hear of it and
    submit another (see :attr:`~flowkit.engines.executors.AtomExecutor.workers`).
    """

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(max_workers or min(32, (os.cpu_count() or 1) + 4))
        self.workers = self.max_in_flight
        self.max_in_flight = max(_QUEUED_AT_LEAST, _QUEUED_PER_WORKER * self.workers)

    def _make_pool(self) -> Any:
        import futurist

        return futurist.ThreadPoolExecutor(max_workers=self.workers)


# How many atoms a thread pool is handed at once: the thread fan-out of python -m benchmarks.floors
# (1,000 no-op tasks, 2 threads) runs faster up to about 32 in flight, and no faster past it.
_QUEUED_PER_WORKER = 4
_QUEUED_AT_LEAST = 32


def _check_picklable(atom: Any) -> None:
    import pickle

    from flowkit.exceptions import AtomNotPicklable

    try:
        pickle.dumps(atom)
    except Exception as error:
        raise AtomNotPicklable(
            "atom %r cannot run on a process executor: it does not pickle (%s: %s); define the "
            "task class and the functions it uses at module level and keep no locks, sockets or "
            "lambdas on it" % (getattr(atom, "name", atom), type(error).__name__, error)
        ) from error


class ProcessExecutor(_OwnedPool):
    """A futurist process pool: for CPU-bound tasks; tasks and results must pickle."""

    local = False
    _join_on_stop = True  # worker processes must not outlive the run

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(max_workers or (os.cpu_count() or 1))
        self._abandoned = False  # an attempt was abandoned: its worker may never return

    def check_atom(self, atom: Any) -> None:
        _check_picklable(atom)

    def cancel_flag(self) -> FileFlag:
        return FileFlag()

    def heartbeat_channel(self) -> FileChannel:
        return FileChannel()

    def abandon(self, future: concurrent.futures.Future[Any]) -> None:
        # Killing the worker now would break the pool for every other atom
        # in flight; it is killed when the run ends instead (see stop()),
        # which would otherwise wait for it for ever.
        self._abandoned = True

    def stop(self) -> None:
        pool = self._pool
        if pool is not None and self._abandoned:
            self._abandoned = False
            # The pool's own record of its worker processes (concurrent.futures).
            for process in list(getattr(pool, "_processes", {}).values()):
                if process.is_alive():
                    process.kill()
        super().stop()

    def _make_pool(self) -> Any:
        import futurist

        return futurist.ProcessPoolExecutor(max_workers=self.max_in_flight)


def _waits_green() -> bool:
    """Whether the engine's own waiting lets green threads run: eventlet monkey-patched threading."""
    import eventlet.patcher

    return bool(eventlet.patcher.is_monkey_patched("thread"))


def _is_green(executor: Any) -> bool:
    if "eventlet" not in sys.modules:
        return False  # no green pool can exist without eventlet loaded
    import futurist

    return isinstance(executor, futurist.GreenThreadPoolExecutor)


class GreenThreadExecutor(_OwnedPool):
    """A futurist green-thread pool (eventlet), created for the run: TaskFlow's ``executor="greenthreaded"``.

    Green threads run only while the thread that started them waits in a way
    eventlet sees.  When eventlet has monkey-patched threading
    (``eventlet.monkey_patch()``), the engine's waits are such waits, and the
    atoms run at once, up to ``max_workers``.  Otherwise the engine waits on
    each atom in turn (it runs them one at a time, as the serial engine does),
    since its own waiting would never let a green thread run.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(max_workers or 1000)
        self.inline = not _waits_green()
        self._workers = self.max_in_flight
        if self.inline:
            self.max_in_flight = sys.maxsize

    def _make_pool(self) -> Any:
        import futurist

        return futurist.GreenThreadPoolExecutor(max_workers=self._workers)


class WrappedExecutor(AtomExecutor):
    """A ``concurrent.futures``-style executor owned by the caller (never shut down here).

    Anything with ``submit(fn, *args)`` returning a future will do.  A futurist
    ``GreenThreadPoolExecutor`` is waited on as :class:`GreenThreadExecutor` says.
    """

    def __init__(self, executor: Any, max_workers: int | None = None) -> None:
        self._executor = executor
        self.local = not isinstance(executor, concurrent.futures.ProcessPoolExecutor)
        workers = max_workers or getattr(executor, "_max_workers", None) or getattr(executor, "max_workers", None)
        self.max_in_flight = int(workers) if isinstance(workers, int) and workers > 0 else 64
        if _is_green(executor) and not _waits_green():
            self.inline = True
            self.max_in_flight = sys.maxsize

    def check_atom(self, atom: Any) -> None:
        if not self.local:
            _check_picklable(atom)

    def cancel_flag(self) -> FileFlag | None:
        return None if self.local else FileFlag()

    def heartbeat_channel(self) -> FileChannel | None:
        return None if self.local else FileChannel()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future = self._executor.submit(fn, *args)
        if not (callable(getattr(future, "add_done_callback", None)) and callable(getattr(future, "result", None))):
            raise TypeError(
                "%s.submit() returned %s, not a future (with result() and add_done_callback())"
                % (type(self._executor).__name__, type(future).__name__)
            )
        return future


_THREADS = ("threads", "thread", "threaded")
_PROCESSES = ("processes", "process")
_GREEN_THREADS = ("greenthreads", "greenthread", "greenthreaded")


def make_executor(
    mode: str,
    executor: Any = None,
    max_workers: int | None = None,
    *,
    address: str | None = None,
    client: Any = None,
    security: Any = None,
) -> AtomExecutor:
    """The executor for an engine mode and the user's ``executor=`` option.

    ``address``, ``client`` and ``security`` pick the Dask cluster of the
    distributed mode (see :class:`flowkit.engines.distributed.DistributedExecutor`).
    """
    if mode != "distributed" and (address is not None or client is not None or security is not None):
        raise ValueError("address=, client= and security= are options of engine='distributed', not %r" % (mode,))
    if isinstance(executor, AtomExecutor):
        return executor
    if mode == "distributed":
        if executor is not None:
            raise ValueError(
                "engine='distributed' runs atoms on a Dask cluster; give address= or client=, not executor=%r"
                % (executor,)
            )
        # Imported here: the engine core never imports Dask.
        from flowkit.engines.distributed import DistributedExecutor

        return DistributedExecutor(address=address, client=client, max_workers=max_workers, security=security)
    if mode == "serial":
        if executor is not None:
            raise ValueError("engine='serial' runs atoms inline; it takes no executor (got %r)" % (executor,))
        return SerialExecutor()
    if mode == "parallel":
        name = executor.lower() if isinstance(executor, str) else None
        if executor is None or name in _THREADS:
            return ThreadExecutor(max_workers)
        if name in _PROCESSES:
            return ProcessExecutor(max_workers)
        if name in _GREEN_THREADS:
            import importlib.util

            if importlib.util.find_spec("eventlet") is None:
                raise ValueError(
                    "engine='parallel' executor=%r runs atoms on green threads, which needs eventlet: "
                    "pip install 'flowkit[greenthreads]'" % (executor,)
                )
            return GreenThreadExecutor(max_workers)
        if name is None and callable(getattr(executor, "submit", None)):
            return WrappedExecutor(executor, max_workers)
        raise ValueError(
            "engine='parallel' executor must be 'threads', 'processes', 'greenthreads' or an executor "
            "(an object whose submit(fn, *args) returns a future, as concurrent.futures executors do), "
            "got %r" % (executor,)
        )
    raise ValueError("unknown engine mode %r (expected 'serial', 'parallel' or 'distributed')" % (mode,))
