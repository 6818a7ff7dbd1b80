"""Start a flow under a key, and get its outcome later, from any process.

::

    handle = flowkit.start(make_order, key="order-42", factory_args=[42], backend=url)
    ...
    results = flowkit.result(url, "order-42", timeout=60)    # here, or in another process

**One flow per key.**  The flow detail's uuid (and its logbook's) is derived
from the key (:func:`flow_uuid`: ``uuid5`` over :data:`NAMESPACE`), so every
caller of :func:`start` with that key names the same record, and creating it
is :meth:`~flowkit.persistence.base.Connection.create_logbook`: an insert
that exactly one caller wins, whatever the backend (memory, SQLite,
PostgreSQL, MySQL/MariaDB) and however many threads or processes start the
key at once.  The winner runs the flow; every other caller gets a handle to
the same flow and runs nothing.  The flow detail records the factory's name
and arguments (as :func:`flowkit.engines.load_from_factory` does), so a
crash mid-run leaves it resumable by ``flowkit resume``, like any other.

**Where it runs.**  In the process that created it, in a background thread
that is not a daemon: a script that starts a flow and returns does not exit
until the flow has ended (the interpreter waits for the thread at exit), and
the run is the ordinary engine run, checkpointed write-ahead.  A process that
is killed instead leaves the flow where the logbook says it is.

**The outcome.**  :meth:`FlowHandle.result` (and :func:`result`) waits for
the flow to end SUCCESS, REVERTED or FAILURE -- a WAITING or SUSPENDED flow
has not ended -- reading the backend again after 10 ms, then twice as long
each time up to 0.5 s (:data:`FIRST_POLL`, :data:`MAX_POLL`), and at once
when the run in this process ends or the ``clock`` jumps.  On SUCCESS it
returns what the flow's atoms provided and the store held, as
``engine.storage.fetch_all()`` would; on REVERTED or FAILURE it raises what
``engine.run()`` raised, rebuilt from the logbook (see :func:`FlowHandle.result`).
"""

from __future__ import annotations

import builtins
import math
import threading
import uuid as uuid_module
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from flowkit import exceptions as exc
from flowkit import states
from flowkit._names import check_name, shorten
from flowkit.clock import Clock, as_clock
from flowkit.engines import _compiler, _loading, helpers
from flowkit.engines._state import ENGINE_FAILURES_KEY
from flowkit.engines.engine import Engine
from flowkit.factories import FactoryRegistry
from flowkit.persistence._sql import DEFAULT_SQLITE_URL
from flowkit.persistence.backends import fetch as fetch_backend
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.storage import extract_result, provided_result
from flowkit.types.failure import Failure

__all__ = [
    # starting
    "start",
    "flow_uuid",
    "NAMESPACE",
    # the outcome
    "FlowHandle",
    "result",
    "FINAL_STATES",
    "FIRST_POLL",
    "MAX_POLL",
]

#: The namespace of the ``uuid5`` that turns a key into a flow detail uuid; fixed for good,
#: since changing it would give every key a second flow.
NAMESPACE = uuid_module.UUID("8c6f1d52-4b0e-5a7d-9f3c-2e41b7d09a65")
_BOOK_NAMESPACE = uuid_module.uuid5(NAMESPACE, "logbook")

#: The states in which a flow has ended: :meth:`FlowHandle.result` waits for one of them.
FINAL_STATES = frozenset({states.SUCCESS, states.REVERTED, states.FAILURE})

#: Seconds :meth:`FlowHandle.result` waits before it reads the backend a second time.
FIRST_POLL = 0.01
#: The longest it waits between two reads (the wait doubles from :data:`FIRST_POLL` to this).
MAX_POLL = 0.5

# The key of FlowDetail.meta recording the start: {"key": ..., "provides": [[symbol, atom, where], ...]}.
_START_KEY = "start"
_STORE_KEY = "store"
_SHOWN = 120

# Exceptions rebuilt from a logbook: only these modules' own classes, looked up by name.
_REBUILDABLE: dict[str, dict[str, Any]] = {
    "builtins": vars(builtins),
    exc.__name__: {name: getattr(exc, name) for name in exc.__all__},
}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 4] + "...'"


def flow_uuid(key: str) -> str:
    """The uuid of the flow detail that :func:`start` creates for ``key``.

    ``key`` is checked like a name that is stored (TypeError unless it is a
    non-empty str; :class:`~flowkit.exceptions.InvalidName` when it is longer
    than 255 characters, holds a NUL or is not valid Unicode).
    """
    check_name(key, "start key")
    return str(uuid_module.uuid5(NAMESPACE, key))


def _backend_from(backend: Any) -> Backend:
    if backend is None:
        return fetch_backend(DEFAULT_SQLITE_URL)
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, (str, Mapping)):
        return fetch_backend(backend)
    raise TypeError("backend must be a Backend, a URL or a conf dict, got %r" % (backend,))


def _read(backend: Backend, fd_uuid: str, *, lazy: bool) -> FlowDetail | None:
    with backend.get_connection() as conn:
        try:
            return conn.get_flow_details(fd_uuid, lazy=lazy)
        except exc.NotFound:
            return None


# -- the run in this process ---------------------------------------------------------------


class _Run:
    """The engine run of a flow this process created, in its own (non-daemon) thread."""

    def __init__(self, engine: Engine, key: str) -> None:
        self.engine = engine
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._callbacks: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="flowkit-start %s" % (key[:60],), daemon=False)

    def start(self) -> None:
        self._thread.start()

    def on_finished(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` once the run is over (now, if it is); returns the unsubscriber."""
        with self._lock:
            if not self.finished.is_set():
                self._callbacks.append(callback)

                def unsubscribe() -> None:
                    with self._lock:
                        if callback in self._callbacks:
                            self._callbacks.remove(callback)

                return unsubscribe
        callback()
        return lambda: None

    def _main(self) -> None:
        try:
            self.engine.run()
        except BaseException as error:
            # What a reverted flow raises is its outcome, and is read back from
            # the logbook; kept for a run that stopped before the flow ended.
            self.error = error
        finally:
            try:
                self.engine.close()
            except Exception as error:
                if self.error is None:
                    self.error = error
            with _RUNS_LOCK:
                if _RUNS.get(self.ident) is self:
                    del _RUNS[self.ident]
            with self._lock:
                self.finished.set()
                callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                callback()

    @property
    def ident(self) -> tuple[int, str]:
        return id(self.engine.backend), self.engine.flow_detail.uuid


_RUNS: dict[tuple[int, str], _Run] = {}
_RUNS_LOCK = threading.Lock()


def _local_run(backend: Backend, fd_uuid: str) -> _Run | None:
    with _RUNS_LOCK:
        return _RUNS.get((id(backend), fd_uuid))


# -- starting -------------------------------------------------------------------------------


def _check_started_as(fd: FlowDetail, key: str, factory: str) -> None:
    record = fd.meta.get(_START_KEY)
    if not isinstance(record, Mapping) or record.get("key") != key:
        raise exc.InvalidState(
            "flow detail %s (%s), whose uuid is that of start key %s, was not started with that key by "
            "flowkit.start(); it cannot be started again" % (_shown(fd.name), fd.uuid, shorten(key))
        )
    stored = fd.meta.get(helpers.FACTORY_KEY)
    name = stored.get("name") if isinstance(stored, Mapping) else None
    if name != factory:
        raise exc.InvalidState(
            "start key %s was started with flow factory %s (flow detail %s); it cannot be started with "
            "flow factory %r: use another key for another flow" % (shorten(key), _shown(name), fd.uuid, factory)
        )


def _provides(compilation: _compiler.Compilation) -> list[list[Any]]:
    """``[[symbol, atom name, where], ...]``: who provides what, in the order ``fetch_all()`` looks."""
    return [
        [symbol, compilation.atoms[index].name, where]
        for symbol, providers in compilation.providers.items()
        for index, where in providers
    ]


def start(
    factory: Callable[..., Any],
    *,
    key: str,
    store: Mapping[str, Any] | None = None,
    backend: Any = None,
    engine: str = "serial",
    factory_args: Sequence[Any] = (),
    factory_kwargs: Mapping[str, Any] | None = None,
    factories: FactoryRegistry | None = None,
    **engine_options: Any,
) -> FlowHandle:
    """Start the flow ``factory(*factory_args, **factory_kwargs)`` under ``key``, once; return its handle.

    The first caller for ``key`` (in any thread or process sharing the
    backend) creates the flow detail and runs the flow in a background thread
    of its process (see the module docstring); its handle says
    ``created``.  Every later or concurrent caller gets a handle to the same
    flow and runs nothing; its ``store``, arguments and engine options are not
    used (the first caller's are recorded).  A key started with another
    factory raises :class:`~flowkit.exceptions.InvalidState` naming the key
    and both factories.

    ``backend`` is a :class:`~flowkit.persistence.base.Backend`, a URL or a
    conf dict (default: the embedded SQLite file ``sqlite:///flowkit.db`` in
    the current directory, as the SQL job board's); the memory backend works
    too, within one process.  ``factory`` is registered in ``factories``
    (default :data:`flowkit.factories.default_registry`) and must be
    importable by its name, and the arguments and ``store`` must be JSON data,
    as for :func:`flowkit.engines.load_from_factory`; ``engine`` and
    ``engine_options`` (``executor``, ``max_workers``, ``address``,
    ``client``, ``security``, ``defer_reverts``) are as for
    :func:`flowkit.engines.load`.  The flow is built and validated
    (requirements, the executor's checks) before anything is written, so a
    bad flow raises here and records nothing.
    """
    fd_uuid = flow_uuid(key)
    persistence = _backend_from(backend)
    name = helpers._registered_name(factory, factories)
    if isinstance(factory_args, (str, bytes)) or not isinstance(factory_args, Sequence):
        raise TypeError("factory_args of %r must be a list or tuple, got %r" % (name, factory_args))
    args = helpers._json_copy(list(factory_args), "factory_args of %r" % (name,))
    kwargs = helpers._json_copy(dict(factory_kwargs or {}), "factory_kwargs of %r" % (name,))
    if store is not None and not isinstance(store, Mapping):
        raise TypeError("store of start key %s must be a dict of injected values, got %r" % (shorten(key), store))
    values = helpers._json_copy(dict(store), "store of start key %s" % (shorten(key),)) if store else None

    existing = _read(persistence, fd_uuid, lazy=True)
    if existing is not None:
        _check_started_as(existing, key, name)
        return FlowHandle(persistence, fd_uuid, key=key, _run=_local_run(persistence, fd_uuid))

    flow = helpers._build(factory, tuple(factory_args), dict(factory_kwargs or {}), name)
    fd = FlowDetail(name=flow.name, uuid=fd_uuid, state=states.PENDING)
    fd.meta[helpers.FACTORY_KEY] = {"name": name, "args": args, "kwargs": kwargs}
    book = LogBook(name=key, uuid=str(uuid_module.uuid5(_BOOK_NAMESPACE, key)))
    eng = _loading.load_unsaved(flow, book, fd, persistence, store=values, engine=engine, **engine_options)
    try:
        eng.validate()
        fd.meta[_START_KEY] = {"key": key, "provides": _provides(eng.compilation)}
        created = eng.storage.connection.create_logbook(book)
    except BaseException:
        eng.close()
        raise
    if not created:
        # Another caller created it between our look and our insert.
        eng.close()
        existing = _read(persistence, fd_uuid, lazy=True)
        if existing is not None:
            _check_started_as(existing, key, name)
        return FlowHandle(persistence, fd_uuid, key=key, _run=_local_run(persistence, fd_uuid))
    run = _Run(eng, key)
    with _RUNS_LOCK:
        _RUNS[run.ident] = run
    run.start()
    return FlowHandle(persistence, fd_uuid, key=key, _run=run, _created=True)


# -- the outcome ------------------------------------------------------------------------------


def _check_provides(fd: FlowDetail, provides: Any) -> list[tuple[str, str, Any]]:
    checked: list[tuple[str, str, Any]] = []
    ok = isinstance(provides, list)
    for entry in provides if ok else ():
        if (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], str)
            and (entry[2] is None or isinstance(entry[2], (str, int)))
            and not isinstance(entry[2], bool)
        ):
            checked.append((entry[0], entry[1], entry[2]))
        else:
            ok = False
            break
    if not ok:
        raise exc.CorruptLogbook(
            'meta[%r]["provides"] is not a list of [symbol, atom name, result key] entries' % (_START_KEY,),
            uuid=fd.uuid,
            column="meta",
        )
    return checked


def _provided_by(fd: FlowDetail) -> list[tuple[str, str, Any]]:
    record = fd.meta.get(_START_KEY)
    if isinstance(record, Mapping) and "provides" in record:
        return _check_provides(fd, record["provides"])
    # Not started by start(): who provides what is in the flow, rebuilt from its factory record.
    compilation = _compiler.compile_flow(helpers.flow_from_detail(fd))
    return [(symbol, atom, where) for symbol, atom, where in _provides(compilation)]


def _results(fd: FlowDetail) -> dict[str, Any]:
    """What ``engine.storage.fetch_all()`` returns for ``fd``, from the logbook alone."""
    store = fd.meta.get(_STORE_KEY) or {}
    if not isinstance(store, Mapping):
        raise exc.CorruptLogbook("meta[%r] is not a JSON object" % (_STORE_KEY,), uuid=fd.uuid, column="meta")
    values: dict[str, list[Any]] = {name: [value] for name, value in store.items()}
    by_name = {ad.name: ad for ad in fd}
    for symbol, atom, where in _provided_by(fd):
        detail = by_name.get(atom)
        if detail is None:
            continue
        found, result = provided_result(detail)
        if not found:
            continue
        try:
            value = extract_result(result, where)
        except (LookupError, TypeError):
            continue
        values.setdefault(symbol, []).append(value)
    return {name: found[0] if len(found) == 1 else found for name, found in values.items() if found}


def _type_names(cls: type) -> tuple[str, ...]:
    return tuple("%s.%s" % (c.__module__, c.__qualname__) for c in cls.__mro__ if c is not object)


def _rebuilt(failure: Failure, atom: str | None, fd: FlowDetail) -> BaseException | None:
    """The exception ``failure`` describes, if it is a builtin or flowkit one that rebuilds exactly; else None.

    The names come from the logbook, so they are looked up among those two
    modules' own classes only, never imported; the class found must have the
    stored class hierarchy and, built from the stored message, show that
    message again.
    """
    module, _, qualname = failure.exception_type_name.rpartition(".")
    cls = _REBUILDABLE.get(module, {}).get(qualname)
    if not isinstance(cls, type) or not issubclass(cls, Exception) or cls is exc.WrappedFailure:
        return None
    if _type_names(cls) != failure.exc_type_names:
        return None
    try:
        error = cls(failure.exception_str)
    except Exception:
        return None
    if str(error) != failure.exception_str:
        return None
    where = (
        "atom %r of flow %r (%s)" % (atom, fd.name, fd.uuid)
        if atom is not None
        else "flow %r (%s)"
        % (
            fd.name,
            fd.uuid,
        )
    )
    note = "Raised in %s; rebuilt from the logbook." % (where,)
    if failure.traceback_str:
        note += " Original traceback (most recent call last):\n" + failure.traceback_str.rstrip()
    add_note = getattr(error, "add_note", None)
    if add_note is not None:
        add_note(note)
    else:  # Python 3.10: the attribute later Pythons show, set by hand
        error.__notes__ = [note]  # type: ignore[attr-defined]
    return error


def _engine_failures(fd: FlowDetail) -> list[Failure]:
    records = fd.meta.get(ENGINE_FAILURES_KEY) or []
    found = []
    for data in records if isinstance(records, list) else [records]:
        try:
            found.append(Failure.from_dict(data))
        except (ValueError, TypeError, AttributeError) as error:
            raise exc.CorruptLogbook(
                "meta[%r] holds something that is not a failure: %s" % (ENGINE_FAILURES_KEY, error),
                uuid=fd.uuid,
                column="meta",
            ) from error
    return found


def _failures(fd: FlowDetail) -> list[tuple[str | None, Failure]]:
    """The failures ``engine.run()`` raises for ``fd``, which ended REVERTED or FAILURE, with their atoms."""
    if fd.state == states.FAILURE:
        # A failed revert stopped the flow: that is what is raised (TaskFlow's rule).
        named: list[tuple[str | None, Failure]] = [
            (ad.name, ad.revert_failure) for ad in fd if ad.revert_failure is not None
        ]
        if named:
            return named
    named = [(None, failure) for failure in _engine_failures(fd)]
    named += [(ad.name, ad.failure) for ad in fd if ad.failure is not None and ad.state != states.SUCCESS]
    return named


def _raise_outcome(fd: FlowDetail, named: list[tuple[str | None, Failure]]) -> NoReturn:
    if len(named) == 1:
        if named[0][1].exception is not None:
            # A backend in this process (memory) keeps the exception object: raise it, as the engine does.
            named[0][1].reraise()
        error = _rebuilt(named[0][1], named[0][0], fd)
        if error is not None:
            raise error
    raise exc.WrappedFailure(
        [failure for _name, failure in named], atom_names=[name for name, _failure in named], flow_name=fd.name
    )


class FlowHandle:
    """A flow in a backend, by uuid: its state now, and its outcome once it has ended.

    Returned by :func:`start`; ``FlowHandle(backend, uuid)`` makes one for
    any flow detail (``backend`` a Backend, URL or conf dict).  Every method
    reads the backend afresh, so a handle in one process follows a flow run
    by another.
    """

    def __init__(
        self,
        backend: Any,
        uuid: str,
        *,
        key: str | None = None,
        _run: _Run | None = None,
        _created: bool = False,
    ) -> None:
        if not isinstance(uuid, str) or not uuid:
            raise TypeError("a flow handle needs the flow detail's uuid as a str, got %r" % (uuid,))
        self._backend = _backend_from(backend)
        self._uuid = uuid
        self._key = key
        self._run = _run
        self._created = _created

    @property
    def uuid(self) -> str:
        """The flow detail's uuid (for ``flowkit show``, ``flowkit resume``)."""
        return self._uuid

    @property
    def key(self) -> str | None:
        """The key the flow was started under (None for a handle made from a uuid alone)."""
        return self._key

    @property
    def backend(self) -> Backend:
        """The backend the flow detail is in."""
        return self._backend

    @property
    def created(self) -> bool:
        """Whether the :func:`start` call that returned this handle created the flow (and runs it here)."""
        return self._created

    def _detail(self, *, lazy: bool) -> FlowDetail:
        fd = _read(self._backend, self._uuid, lazy=lazy)
        if fd is None:
            raise exc.NotStarted(
                "no flow %s(uuid %s) in %s"
                % (
                    "started under key %s " % (shorten(self._key),) if self._key is not None else "",
                    self._uuid,
                    _describe(self._backend),
                )
            )
        return fd

    def state(self) -> states.State:
        """The flow's state, read from the backend now (PENDING before it first ran)."""
        state = self._detail(lazy=True).state
        return states.State(state) if state else states.PENDING

    def done(self) -> bool:
        """Whether the flow has ended (SUCCESS, REVERTED or FAILURE)."""
        return self.state() in FINAL_STATES

    def result(
        self, timeout: float | None = None, *, clock: Clock | Callable[[], float] | None = None
    ) -> dict[str, Any]:
        """Wait until the flow has ended; return its results or raise its failure.

        SUCCESS: ``{symbol: value}`` of what the flow's atoms provided and
        its store held, as ``engine.storage.fetch_all()`` (and
        :func:`flowkit.engines.run`) returns.  REVERTED or FAILURE: what
        ``engine.run()`` raised, rebuilt from the logbook: one failure is
        raised as itself where the backend kept the exception object (the
        memory backend), else, if its exception is a builtin or a flowkit
        exception that rebuilds exactly, as that type
        (with a note naming the atom and holding the original traceback);
        anything else -- several failures, or a user's exception type, which a
        logbook can only name, never import -- is a
        :class:`~flowkit.exceptions.WrappedFailure` of the stored
        :class:`~flowkit.types.failure.Failure` values (``check(MyError)``
        matches them by type name).

        ``timeout`` is in seconds of ``clock`` (default the real clock; a
        :class:`flowkit.testing.clock.VirtualClock` in tests): once it is over
        with the flow not ended, TimeoutError naming the flow is raised.  A
        flow started here whose run stopped before the flow ended (the
        database went away, say) raises
        :class:`~flowkit.exceptions.ExecutionFailure` from what stopped it;
        ``flowkit resume`` continues such a flow.
        """
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout < 0
        ):
            raise ValueError("timeout must be None or a finite number of seconds >= 0, got %r" % (timeout,))
        time = as_clock(clock)
        deadline = None if timeout is None else time.now() + timeout
        run = self._run if self._run is not None else _local_run(self._backend, self._uuid)
        wake = threading.Event()
        unsubscribers = [time.on_change(wake.set)]
        if run is not None:
            unsubscribers.append(run.on_finished(wake.set))
        pause = FIRST_POLL
        try:
            while True:
                wake.clear()
                fd = self._detail(lazy=True)
                if fd.state in FINAL_STATES:
                    return self._outcome()
                if run is not None and run.finished.is_set():
                    fd = self._detail(lazy=True)
                    if fd.state in FINAL_STATES:
                        return self._outcome()
                    if fd.state != states.WAITING:
                        raise exc.ExecutionFailure(
                            "the run of %s in this process stopped before the flow ended (it is %s in the "
                            "logbook): %s; continue it with `flowkit resume %s`"
                            % (self._what(fd), fd.state, _error_text(run.error), self._uuid)
                        ) from run.error
                block: float | None = pause
                if deadline is not None:
                    if time.now() >= deadline:
                        raise TimeoutError(
                            "%s did not end within %s seconds: it is %s" % (self._what(fd), timeout, fd.state)
                        )
                    left = time.timeout(deadline)
                    if left is not None:
                        block = min(pause, left)
                wake.wait(block)
                pause = min(2 * pause, MAX_POLL)
        finally:
            for unsubscribe in unsubscribers:
                unsubscribe()

    def _outcome(self) -> dict[str, Any]:
        fd = self._detail(lazy=False)
        if fd.state != states.SUCCESS:
            named = _failures(fd)
            if named:
                _raise_outcome(fd, named)
            # A reverted flow with no failure recorded: engine.run() returns, and so does this.
        return _results(fd)

    def _what(self, fd: FlowDetail) -> str:
        key = " (key %s)" % (shorten(self._key),) if self._key is not None else ""
        return "flow %s%s, flow detail %s," % (_shown(fd.name), key, self._uuid)

    def __repr__(self) -> str:
        return "<FlowHandle %s key=%r>" % (self._uuid, self._key)


def _error_text(error: BaseException | None) -> str:
    if error is None:
        return "it returned without an error"
    return "%s: %s" % (type(error).__name__, error)


def _describe(backend: Backend) -> str:
    describe = getattr(backend, "describe_url", None)
    return describe() if callable(describe) else type(backend).__name__


def result(
    backend: Any,
    flow_uuid_or_key: str,
    timeout: float | None = None,
    *,
    clock: Clock | Callable[[], float] | None = None,
) -> dict[str, Any]:
    """The outcome of a flow, by its flow detail uuid or the key it was started under.

    Waits and returns or raises as :meth:`FlowHandle.result`.  A string that
    is the uuid of a flow detail in ``backend`` names that one; otherwise it is
    a start key.  Neither raises :class:`~flowkit.exceptions.NotStarted`
    naming it.
    """
    return _handle_for(_backend_from(backend), flow_uuid_or_key).result(timeout, clock=clock)


def _handle_for(backend: Backend, flow_uuid_or_key: str) -> FlowHandle:
    if not isinstance(flow_uuid_or_key, str) or not flow_uuid_or_key:
        raise TypeError("a flow uuid or start key must be a non-empty str, got %r" % (flow_uuid_or_key,))
    try:
        as_uuid = str(uuid_module.UUID(flow_uuid_or_key))
    except ValueError:
        as_uuid = None
    if as_uuid == flow_uuid_or_key:
        fd = _read(backend, as_uuid, lazy=True)
        if fd is not None:
            record = fd.meta.get(_START_KEY)
            key = record.get("key") if isinstance(record, Mapping) else None
            return FlowHandle(backend, as_uuid, key=key if isinstance(key, str) else None)
    try:
        fd_uuid = flow_uuid(flow_uuid_or_key)
    except (TypeError, exc.InvalidName):
        fd_uuid = None
    if fd_uuid is not None and _read(backend, fd_uuid, lazy=True) is not None:
        return FlowHandle(backend, fd_uuid, key=flow_uuid_or_key)
    what = "flow detail with uuid %s and no flow started under that key" if as_uuid else "flow started under key %s"
    raise exc.NotStarted(("no " + what + " in %s") % (shorten(flow_uuid_or_key), _describe(backend)))
