"""Tasks: atoms that do work (``execute``) and can undo it (``revert``).

While a task's ``execute`` or ``revert`` runs, ``self.context`` is its
:class:`TaskContext`: which atom of which flow detail this is, and where
``update_progress()`` goes.  It is set for that call only, in the thread (or
process, or Dask worker) that runs it, and is None anywhere else.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flowkit import _imports
from flowkit.atom import Atom, ProvidesSpec, RebindSpec, RequiresSpec, signature_of
from flowkit.policies import RetryPolicy
from flowkit.types.cancellation import CancelToken
from flowkit.types.heartbeat import Pulse
from flowkit.types.notifier import RestrictedNotifier

__all__ = [
    "Task",
    "FunctorTask",
    "MapFunctorTask",
    "ReduceFunctorTask",
    "TaskContext",
    "EVENT_UPDATE_PROGRESS",
    "heartbeat",
    "current_context",
]

#: This module's logger: a progress outside [0.0, 1.0] is a warning here (TaskFlow's ``task.LOG``).
LOG = logging.getLogger(__name__)

#: Event published on ``task.notifier`` when a task reports progress.
EVENT_UPDATE_PROGRESS = "update_progress"


@dataclasses.dataclass(frozen=True, slots=True, init=False)
class TaskContext:
    """What a running task knows about its run; read it as ``self.context`` in ``execute``/``revert``.

    The engine makes one per task and run.  Where the task runs in another
    process or on a Dask worker, the context travels with the call (it
    pickles: the engine-side sink is left behind, and the worker collects
    the progress the task reports, which the engine then replays).

    This is the place for whatever else a running task will need to know
    about its run: add a field here, and the engine fills it in
    (``flowkit/engines/_scheduler.py`` builds the contexts).
    """

    #: The task's name in its flow.
    atom_name: str
    #: The uuid of the flow detail (the logbook record) of the run.
    flow_uuid: str
    #: Where reported progress goes, called with the atom name and a float in
    #: [0.0, 1.0] (``None``: nowhere yet; a remote run fills it in on the worker).
    progress_sink: Callable[[str, float], None] | None = dataclasses.field(repr=False, compare=False)
    #: A key for de-duplicating side effects: the same for every run of this
    #: attempt of this atom in this flow detail (a crash and resume, a second
    #: process), another one for each new attempt (a retry controller ran the
    #: atom's scope again, ``engine.reset()``).  Pass it to a payment or
    #: provisioning API that accepts idempotency keys.  At most 48 characters.
    idempotency_key: str
    #: Set when the run is being stopped: the flow is cancelled or suspended,
    #: or its conductor stops without draining.  Poll it (``is_set()``,
    #: ``wait(timeout)``) in a long task and raise
    #: :class:`~flowkit.exceptions.Cancelled` to stop early: the attempt then
    #: counts as interrupted (the atom is PENDING again and runs again on
    #: resume), not as a failure, and it is not reverted.  It works wherever the
    #: task runs (see :mod:`flowkit.types.cancellation`).
    cancelled: CancelToken = dataclasses.field(repr=False, compare=False)
    #: The details of the last heartbeat of this atom that the engine stored
    #: (``self.heartbeat(details)`` in an earlier attempt, or in this one's
    #: ``execute`` when this is ``revert``); None if there were none.  A task
    #: made with ``heartbeat_timeout=`` reads it to continue where its last
    #: attempt stopped.
    heartbeat_details: Any = dataclasses.field(repr=False, compare=False)
    #: What ``self.heartbeat()`` beats (None: the task has no ``heartbeat_timeout``).
    pulse: Pulse | None = dataclasses.field(repr=False, compare=False)
    #: The W3C trace-context headers (``traceparent``, maybe ``tracestate``) of
    #: the span of this attempt, when the flow is traced
    #: (:func:`flowkit.tracing.enable_tracing`); None otherwise.  The run
    #: makes it the current OpenTelemetry context wherever the task runs, so
    #: spans the task starts are children of the attempt's span.
    trace_context: Mapping[str, str] | None = dataclasses.field(default=None, repr=False, compare=False)

    def __init__(
        self,
        atom_name: str,
        flow_uuid: str,
        progress_sink: Callable[[str, float], None] | None = None,
        idempotency_key: str = "",
        cancelled: CancelToken | None = None,
        heartbeat_details: Any = None,
        pulse: Pulse | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> None:
        # The engine makes one per atom run: setting the slots directly costs
        # half of what the generated frozen __init__ does.  A new field needs
        # its parameter and line here too.
        _set_atom_name(self, atom_name)
        _set_flow_uuid(self, flow_uuid)
        _set_progress_sink(self, progress_sink)
        _set_idempotency_key(self, idempotency_key)
        _set_cancelled(self, CancelToken() if cancelled is None else cancelled)
        _set_heartbeat_details(self, heartbeat_details)
        _set_pulse(self, pulse)
        _set_trace_context(self, trace_context)

    def report_progress(self, progress: float) -> None:
        """Hand ``progress`` (already in [0.0, 1.0]) to the engine; ``Task.update_progress`` calls it."""
        sink = self.progress_sink
        if sink is not None:
            sink(self.atom_name, progress)

    def activate(self) -> contextvars.Token[Any]:
        """Make this the current context (of this thread); the executor calls it around ``execute``/``revert``.

        Give the token back to :meth:`deactivate` when the call is over.
        """
        return _CURRENT_CONTEXT.set(self)

    @staticmethod
    def activate_later(make: Callable[[int], TaskContext], arg: int) -> contextvars.Token[Any]:
        """Make ``make(arg)`` the current context, calling ``make`` only when something first asks for it.

        For the serial engine, whose atoms run in its own thread: most never
        look at their context, and making one costs more than the rest of
        starting them.  What asks for it (``self.context``,
        :func:`current_context`, progress, a context copied meanwhile) gets
        that one context, made once.  Give the token back to :meth:`deactivate`.
        """
        return _CURRENT_CONTEXT.set(_Deferred(make, arg))

    @staticmethod
    def deactivate(token: contextvars.Token[Any]) -> None:
        """End what :meth:`activate` (or :meth:`activate_later`) returned ``token`` for."""
        _CURRENT_CONTEXT.reset(token)


class _Deferred:
    """A :class:`TaskContext` to be made by ``make(arg)`` when first asked for (see TaskContext.activate_later)."""

    __slots__ = ("make", "arg", "made")

    def __init__(self, make: Callable[[int], TaskContext], arg: int) -> None:
        self.make: Callable[[int], TaskContext] | None = make
        self.arg = arg
        self.made: TaskContext | None = None

    def get(self) -> TaskContext:
        made = self.made
        if made is None:
            assert self.make is not None
            made = self.made = self.make(self.arg)
            self.make = None  # what made it (an engine's scheduler) is not kept alive by a copied context
        return made


# The slots' own setters: they bypass the frozen __setattr__, which is what
# makes a context read-only once built.
_set_atom_name = TaskContext.__dict__["atom_name"].__set__
_set_flow_uuid = TaskContext.__dict__["flow_uuid"].__set__
_set_progress_sink = TaskContext.__dict__["progress_sink"].__set__
_set_idempotency_key = TaskContext.__dict__["idempotency_key"].__set__
_set_cancelled = TaskContext.__dict__["cancelled"].__set__
_set_heartbeat_details = TaskContext.__dict__["heartbeat_details"].__set__
_set_pulse = TaskContext.__dict__["pulse"].__set__
_set_trace_context = TaskContext.__dict__["trace_context"].__set__

# A context variable, not an attribute the engine sets on the task: the task
# object is the user's (and may be shared by two engines), and a context
# variable is per thread, so two runs never see each other's context.
_CURRENT_CONTEXT: contextvars.ContextVar[TaskContext | _Deferred | None] = contextvars.ContextVar(
    "flowkit_task_context", default=None
)


def _current() -> TaskContext | None:
    found = _CURRENT_CONTEXT.get()
    if found is None or type(found) is TaskContext:
        return found
    return found.get()  # type: ignore[union-attr]


def current_context() -> TaskContext | None:
    """The :class:`TaskContext` of the ``execute``/``revert`` running in this thread (None outside one).

    A function made into a task (``@as_task``, :class:`FunctorTask`) has no
    ``self``: this is its ``self.context``.
    """
    return _current()


def heartbeat(details: Any = None) -> None:
    """:meth:`Task.heartbeat` of the task running in this thread, for functions made into tasks."""
    context = _current()
    if context is not None:
        pulse = context.pulse
        if pulse is not None:
            pulse.beat(details)


class _ContextOfTask:
    """``Task.context``: the current :class:`TaskContext`, if it is this task's.

    A non-data descriptor, so a task class written before ``context``
    existed may still assign ``self.context`` for its own use (the engine
    never reads the attribute).
    """

    def __get__(self, task: Any, owner: Any = None) -> TaskContext | None:
        context = _current()
        if task is None or context is None or context.atom_name != task.name:
            return None  # outside a call, or another task's (this one was called from inside it)
        return context


class Task(Atom):
    """A unit of work.

    Subclass it and define ``execute(self, <args>)``; the arguments are filled
    by name from the flow's storage and the return value is stored under
    ``provides``.  Define ``revert(self, <args>, result, flow_failures)`` to
    undo the work when the flow fails: ``result`` is what ``execute`` returned
    (or the :class:`~flowkit.types.failure.Failure` if this task failed) and
    ``flow_failures`` maps atom names to the failures that caused the revert.
    Both should be idempotent: after a crash the engine may call them again.
    """

    #: The :class:`TaskContext` of the ``execute``/``revert`` call running
    #: now; None outside one.  It is set in the thread that runs the call (a
    #: thread the task starts sees it if started through
    #: ``contextvars.copy_context().run``).
    context = _ContextOfTask()

    def __init__(
        self,
        name: str | None = None,
        provides: ProvidesSpec = None,
        requires: RequiresSpec = None,
        auto_extract: bool = True,
        rebind: RebindSpec = None,
        inject: Mapping[str, Any] | None = None,
        ignore_list: Iterable[str] | None = None,
        revert_rebind: RebindSpec = None,
        revert_requires: RequiresSpec = None,
        priority: int = 0,
        retry_policy: RetryPolicy | None = None,
        heartbeat_timeout: float | None = None,
    ) -> None:
        super().__init__(
            name=name,
            provides=provides,
            requires=requires,
            auto_extract=auto_extract,
            rebind=rebind,
            inject=inject,
            ignore_list=ignore_list,
            priority=priority,
        )
        #: Seconds an attempt of ``execute`` may go without calling
        #: :meth:`heartbeat` before the engine fails it with
        #: :class:`~flowkit.exceptions.HeartbeatTimeout` (None: never).
        self.heartbeat_timeout = _check_heartbeat_timeout(heartbeat_timeout, self.name)
        # Created on first use: most tasks are never watched, and a notifier
        # per atom would dominate memory in large flows.
        self._notifier: RestrictedNotifier | None = None
        #: This task's own retry policy (None: its flow's, or the engine's, if any).
        self.retry_policy = RetryPolicy.check(retry_policy, "atom %r" % (self.name,))

    @property
    def notifier(self) -> RestrictedNotifier:
        """Task-level events (``EVENT_UPDATE_PROGRESS``)."""
        if self._notifier is None:
            self._notifier = RestrictedNotifier([EVENT_UPDATE_PROGRESS])
        return self._notifier

    def update_progress(self, progress: float) -> None:
        """Report progress in [0.0, 1.0]; values outside are clamped (with a warning on ``flowkit.task.LOG``)."""
        given = progress = float(progress)
        if progress > 1.0:
            progress = 1.0
        elif progress < 0.0 or progress != progress:  # NaN counts as no progress
            progress = 0.0
        if progress != given:
            LOG.warning("task %r reported progress %r, outside [0.0, 1.0]: clamped to %s", self.name, given, progress)
        context = _current()
        if context is not None and context.atom_name == self.name:
            # To the engine: into storage, or collected on a worker and replayed.
            context.report_progress(progress)
        if self._notifier is not None:
            self._notifier.notify(EVENT_UPDATE_PROGRESS, {"progress": progress})

    def heartbeat(self, details: Any = None) -> None:
        """Tell the engine this attempt is alive; ``details`` (JSON data, unless None) records how far it got.

        Call it from ``execute`` (or ``revert``) of a task made with
        ``heartbeat_timeout=``, more often than that timeout.  The last
        details given are stored in the atom's detail (at most every
        :data:`~flowkit.types.heartbeat.SAVE_EVERY` seconds while the
        attempt runs, and when it ends), and the next attempt, or the
        revert, reads them as ``self.context.heartbeat_details``.  Elsewhere
        (outside a run, or a task with no ``heartbeat_timeout``) it does
        nothing.
        """
        context = _current()
        if context is not None and context.atom_name == self.name:
            pulse = context.pulse
            if pulse is not None:
                pulse.beat(details)

    def revert(self, *args: Any, **kwargs: Any) -> Any:
        """Undo ``execute``; the default does nothing."""
        return None

    def pre_execute(self) -> None:
        """Called just before ``execute`` (where it runs)."""

    def post_execute(self) -> None:
        """Called just after ``execute`` (where it runs), even if it failed."""

    def pre_revert(self) -> None:
        """Called just before ``revert``."""

    def post_revert(self) -> None:
        """Called just after ``revert``, even if it failed."""

    def __getstate__(self) -> dict[str, Any]:
        # Listeners live in the engine's process; a copy shipped to a worker
        # reports progress back through the executor instead.
        state = self.__dict__.copy()
        state["_notifier"] = None
        # The engine applies the policy; its retry_if need not be picklable.
        state["retry_policy"] = None
        return state


def _check_heartbeat_timeout(timeout: object, name: str) -> float | None:
    """``timeout`` as seconds, or ValueError naming atom ``name``."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("atom %r: heartbeat_timeout must be seconds (a number), got %r" % (name, timeout))
    seconds = float(timeout)
    if not 0.0 < seconds < float("inf"):
        raise ValueError(
            "atom %r: heartbeat_timeout must be a positive, finite number of seconds, got %r" % (name, timeout)
        )
    return seconds


def _qualified_name(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    if qualname is None:
        qualname = type(function).__name__
    return "%s.%s" % (module, qualname) if module else qualname


class _FunctionRef:
    """Pickles a function that a decorator replaced at its import path.

    ``@as_task`` rebinds the function's module-level name to a factory, so
    pickle's lookup by name would find the factory, not the function.  This
    reference records where the factory lives and unwraps it on load.
    """

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def resolve(self) -> Callable[..., Any]:
        obj: Any = _imports.resolve("%s:%s" % (self.module, self.qualname))
        return getattr(obj, "fn", obj)


def _function_for_pickle(function: Callable[..., Any] | None) -> Any:
    if function is None:
        return None
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if module and qualname and "<locals>" not in qualname:
        try:
            obj: Any = _imports.resolve("%s:%s" % (module, qualname))
        except ImportError:
            return function
        if obj is not function and getattr(obj, "fn", None) is function:
            return _FunctionRef(module, qualname)
    return function


def _function_from_pickle(value: Any) -> Any:
    if isinstance(value, _FunctionRef):
        return value.resolve()
    return value


class FunctorTask(Task):
    """A task made from plain functions: ``FunctorTask(execute=fn, revert=undo)``.

    The name defaults to the execute function's qualified name.  ``revert``
    receives the same arguments as ``execute`` plus ``result`` and
    ``flow_failures`` when its signature accepts them (or ``**kwargs``).
    """

    def __init__(
        self,
        execute: Callable[..., Any],
        name: str | None = None,
        provides: ProvidesSpec = None,
        requires: RequiresSpec = None,
        auto_extract: bool = True,
        rebind: RebindSpec = None,
        revert: Callable[..., Any] | None = None,
        version: tuple[int, int] | None = None,
        inject: Mapping[str, Any] | None = None,
        priority: int = 0,
        retry_policy: RetryPolicy | None = None,
        heartbeat_timeout: float | None = None,
    ) -> None:
        if not callable(execute):
            raise ValueError("FunctorTask execute must be callable, got %r" % (execute,))
        if revert is not None and not callable(revert):
            raise ValueError("FunctorTask revert must be callable, got %r" % (revert,))
        self._execute = execute
        self._revert = revert
        if version is not None:
            self.version = version  # type: ignore[misc]
        super().__init__(
            name=name if name is not None else _qualified_name(execute),
            provides=provides,
            requires=requires,
            auto_extract=auto_extract,
            rebind=rebind,
            inject=inject,
            priority=priority,
            retry_policy=retry_policy,
            heartbeat_timeout=heartbeat_timeout,
        )

    def _arg_source(self) -> Callable[..., Any]:
        return self._execute

    @property
    def execute_function(self) -> Callable[..., Any]:
        """The function run as ``execute``."""
        return self._execute

    @property
    def revert_function(self) -> Callable[..., Any] | None:
        """The function run as ``revert`` (None: nothing to undo)."""
        return self._revert

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._execute(*args, **kwargs)

    def revert(self, *args: Any, **kwargs: Any) -> Any:
        if self._revert is None:
            return None
        sig = signature_of(self._revert)
        if not sig.var_kwargs:
            kwargs = {k: v for k, v in kwargs.items() if k in sig.all_args}
        return self._revert(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_execute"] = _function_for_pickle(self._execute)
        state["_revert"] = _function_for_pickle(self._revert)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_execute"] = _function_from_pickle(state["_execute"])
        state["_revert"] = _function_from_pickle(state["_revert"])
        self.__dict__.update(state)


class _OverInputs(Task):
    """A task applying one function over its inputs, in the order ``requires`` names them."""

    _KIND = ""
    _ARITY = 0
    _MIN_INPUTS = 0

    def __init__(
        self,
        functor: Callable[..., Any],
        requires: Iterable[str],
        name: str | None = None,
        provides: ProvidesSpec = None,
        auto_extract: bool = True,
        rebind: RebindSpec = None,
        inject: Mapping[str, Any] | None = None,
        priority: int = 0,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        kind = type(self).__name__
        if not callable(functor):
            raise ValueError("%s: the function to %s with must be callable, got %r" % (kind, self._KIND, functor))
        signature = signature_of(functor)
        arity = len(signature.required) + len(signature.optional)
        if arity != self._ARITY:
            raise ValueError(
                "%s: the function %s takes %d argument(s); to %s with it, it must take exactly %d"
                % (kind, _qualified_name(functor), arity, self._KIND, self._ARITY)
            )
        if isinstance(requires, (str, bytes, Mapping)) or not isinstance(requires, Iterable):
            raise TypeError("%s: requires must be a list of names, got %s" % (kind, type(requires).__name__))
        inputs = list(requires)
        if len(inputs) < self._MIN_INPUTS:
            raise ValueError(
                "%s: requires names %d input(s); it needs at least %d" % (kind, len(inputs), self._MIN_INPUTS)
            )
        self._functor = functor
        self._inputs = tuple(inputs)
        super().__init__(
            name=name if name is not None else _qualified_name(functor),
            provides=provides,
            requires=inputs,
            auto_extract=auto_extract,
            rebind=rebind,
            inject=inject,
            priority=priority,
            retry_policy=retry_policy,
        )

    @property
    def functor(self) -> Callable[..., Any]:
        """The function applied to the inputs."""
        return self._functor

    def _values(self, kwargs: Mapping[str, Any]) -> list[Any]:
        return [kwargs[name] for name in self._inputs]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_functor"] = _function_for_pickle(self._functor)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_functor"] = _function_from_pickle(state["_functor"])
        self.__dict__.update(state)


class MapFunctorTask(_OverInputs):
    """Applies a one-argument function to each input: ``MapFunctorTask(fn, requires=["a", "b"])``.

    Returns ``[fn(a), fn(b)]``, in the order of ``requires``; ``provides``
    may name each element (``provides=("fa", "fb")``).  The name defaults
    to the function's qualified name (TaskFlow's task of that name).
    """

    _KIND = "map"
    _ARITY = 1

    def execute(self, *args: Any, **kwargs: Any) -> list[Any]:
        return [self._functor(value) for value in self._values(kwargs)]


class ReduceFunctorTask(_OverInputs):
    """Folds its inputs with a two-argument function: ``ReduceFunctorTask(fn, requires=["a", "b", "c"])``.

    Returns ``fn(fn(a, b), c)``, in the order of ``requires`` (at least two
    inputs), like :func:`functools.reduce` (TaskFlow's task of that name).
    """

    _KIND = "reduce"
    _ARITY = 2
    _MIN_INPUTS = 2

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return functools.reduce(self._functor, self._values(kwargs))
