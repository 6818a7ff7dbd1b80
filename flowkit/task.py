"""Tasks: atoms that do work (``execute``) and can undo it (``revert``).

While a task's ``execute`` or ``revert`` runs, ``self.context`` is its
:class:`TaskContext`: which atom of which flow detail this is, and where
``update_progress()`` goes.  It is set for that call only, in the thread (or
process, or Dask worker) that runs it, and is None anywhere else.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flowkit import _imports
from flowkit.atom import Atom, ProvidesSpec, RebindSpec, RequiresSpec, signature_of
from flowkit.policies import RetryPolicy
from flowkit.types.cancellation import CancelToken
from flowkit.types.notifier import RestrictedNotifier

__all__ = ["Task", "FunctorTask", "TaskContext", "EVENT_UPDATE_PROGRESS"]

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

    def __init__(
        self,
        atom_name: str,
        flow_uuid: str,
        progress_sink: Callable[[str, float], None] | None = None,
        idempotency_key: str = "",
        cancelled: CancelToken | None = None,
    ) -> None:
        # The engine makes one per atom run: setting the slots directly costs
        # half of what the generated frozen __init__ does.  A new field needs
        # its parameter and line here too.
        _set_atom_name(self, atom_name)
        _set_flow_uuid(self, flow_uuid)
        _set_progress_sink(self, progress_sink)
        _set_idempotency_key(self, idempotency_key)
        _set_cancelled(self, CancelToken() if cancelled is None else cancelled)

    def report_progress(self, progress: float) -> None:
        """Hand ``progress`` (already in [0.0, 1.0]) to the engine; ``Task.update_progress`` calls it."""
        sink = self.progress_sink
        if sink is not None:
            sink(self.atom_name, progress)

    def activate(self) -> contextvars.Token[TaskContext | None]:
        """Make this the current context (of this thread); the executor calls it around ``execute``/``revert``.

        Give the token back to :meth:`deactivate` when the call is over.
        """
        return _CURRENT_CONTEXT.set(self)

    @staticmethod
    def deactivate(token: contextvars.Token[TaskContext | None]) -> None:
        """End what :meth:`activate` returned ``token`` for."""
        _CURRENT_CONTEXT.reset(token)


# The slots' own setters: they bypass the frozen __setattr__, which is what
# makes a context read-only once built.
_set_atom_name = TaskContext.__dict__["atom_name"].__set__
_set_flow_uuid = TaskContext.__dict__["flow_uuid"].__set__
_set_progress_sink = TaskContext.__dict__["progress_sink"].__set__
_set_idempotency_key = TaskContext.__dict__["idempotency_key"].__set__
_set_cancelled = TaskContext.__dict__["cancelled"].__set__

# A context variable, not an attribute the engine sets on the task: the task
# object is the user's (and may be shared by two engines), and a context
# variable is per thread, so two runs never see each other's context.
_CURRENT_CONTEXT: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "flowkit_task_context", default=None
)


class _ContextOfTask:
    """``Task.context``: the current :class:`TaskContext`, if it is this task's.

    A non-data descriptor, so a task class written before ``context``
    existed may still assign ``self.context`` for its own use (the engine
    never reads the attribute).
    """

    def __get__(self, task: Any, owner: Any = None) -> TaskContext | None:
        context = _CURRENT_CONTEXT.get()
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
        """Report progress in [0.0, 1.0]; values outside are clamped (with a warning on :data:`LOG`)."""
        given = progress = float(progress)
        if progress > 1.0:
            progress = 1.0
        elif progress < 0.0 or progress != progress:  # NaN counts as no progress
            progress = 0.0
        if progress != given:
            LOG.warning("task %r reported progress %r, outside [0.0, 1.0]: clamped to %s", self.name, given, progress)
        context = _CURRENT_CONTEXT.get()
        if context is not None and context.atom_name == self.name:
            # To the engine: into storage, or collected on a worker and replayed.
            context.report_progress(progress)
        if self._notifier is not None:
            self._notifier.notify(EVENT_UPDATE_PROGRESS, {"progress": progress})

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
