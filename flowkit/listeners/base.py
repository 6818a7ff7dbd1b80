"""The base classes every listener builds on.

A listener watches one engine through its two notifiers: ``engine.notifier``
(flow states) and ``engine.atom_notifier`` (task and retry states).  It is a
context manager, so watching a run is one line::

    with LoggingListener(engine):
        engine.run()

Entering registers the listener's callbacks, leaving removes them (also when
``run()`` raises).  Watching must never break a flow: a listener whose hook
raises is logged once and disabled, and receives no more events.

Subclasses override :meth:`Listener.on_flow_event`, :meth:`Listener.on_task_event`
and :meth:`Listener.on_retry_event`.  Those hooks are called in the thread that
published the event: atom events and final flow states come from the thread
running ``engine.run()``; ``SUSPENDING`` comes from whichever thread called
``engine.suspend()``.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flowkit.types.failure import Failure
from flowkit.types.notifier import Notifier

if TYPE_CHECKING:
    from flowkit.engines.engine import Engine

__all__ = [
    # what every listener is
    "Listener",
    "ANY",
    # listeners that turn events into text
    "DumpingListener",
    "Event",
    "format_event",
    "mask_values",
    "MASK",
]

LOG = logging.getLogger(__name__)

#: Listen for every state (the notifiers' wildcard topic).
ANY = Notifier.ANY

#: What :func:`mask_values` puts in place of a hidden value.
MASK = "***"

Hook = Callable[[Any, Mapping[str, Any]], None]


def _topics(events: Collection[Any]) -> tuple[Any, ...]:
    """The notifier topics to register for ``events`` (just ``ANY`` if it is among them)."""
    if ANY in events:
        return (ANY,)
    return tuple(sorted(set(events), key=str))


def _wants(events: Collection[Any], state: Any) -> bool:
    return ANY in events or state in events


class Listener:
    """Watches an engine's flow, task and retry events; a context manager.

    ``task_listen_for``, ``flow_listen_for`` and ``retry_listen_for`` are the
    states each hook is called for (default: every state).  Registering twice
    or deregistering an unregistered listener does nothing.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        task_listen_for: Iterable[Any] = (ANY,),
        flow_listen_for: Iterable[Any] = (ANY,),
        retry_listen_for: Iterable[Any] = (ANY,),
    ) -> None:
        self._engine = engine
        self._task_events = frozenset(task_listen_for)
        self._flow_events = frozenset(flow_listen_for)
        self._retry_events = frozenset(retry_listen_for)
        self._flow_topics = _topics(self._flow_events)
        self._atom_topics = _topics(self._task_events | self._retry_events)
        self._registered = False
        self._disabled = False

    # -- what it watches ---------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine this listener watches."""
        return self._engine

    @property
    def registered(self) -> bool:
        """True between :meth:`register` and :meth:`deregister`."""
        return self._registered

    @property
    def disabled(self) -> bool:
        """True once a hook raised: the listener receives no more events."""
        return self._disabled

    # -- registration ------------------------------------------------------------

    def register(self) -> None:
        """Start receiving the engine's events."""
        if self._registered:
            return
        for topic in self._flow_topics:
            self._engine.notifier.register(topic, self._on_flow)
        for topic in self._atom_topics:
            self._engine.atom_notifier.register(topic, self._on_atom)
        self._registered = True

    def deregister(self) -> None:
        """Stop receiving events (safe to call from inside a hook)."""
        if not self._registered:
            return
        self._registered = False
        for topic in self._flow_topics:
            self._engine.notifier.deregister(topic, self._on_flow)
        for topic in self._atom_topics:
            self._engine.atom_notifier.deregister(topic, self._on_atom)

    def __enter__(self) -> Listener:
        self.register()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.deregister()

    # -- hooks (override these) ------------------------------------------------------

    def on_flow_event(self, state: Any, details: Mapping[str, Any]) -> None:
        """A flow changed state; ``details`` has ``flow_name``, ``flow_uuid``, ``old_state``."""

    def on_task_event(self, state: Any, details: Mapping[str, Any]) -> None:
        """A task changed state; ``details`` has ``task_name``, ``atom_uuid``, ``old_state``, maybe ``result``."""

    def on_retry_event(self, state: Any, details: Mapping[str, Any]) -> None:
        """A retry controller changed state; ``details`` as for tasks, with ``retry_name``."""

    # -- dispatch ----------------------------------------------------------------------

    def _on_flow(self, state: Any, details: Mapping[str, Any]) -> None:
        if _wants(self._flow_events, state):
            self._call(self.on_flow_event, state, details)

    def _on_atom(self, state: Any, details: Mapping[str, Any]) -> None:
        if "retry_name" in details:
            if _wants(self._retry_events, state):
                self._call(self.on_retry_event, state, details)
        elif _wants(self._task_events, state):
            self._call(self.on_task_event, state, details)

    def _call(self, hook: Hook, state: Any, details: Mapping[str, Any]) -> None:
        if self._disabled:
            return
        try:
            hook(state, details)
        except Exception:
            # Disable before logging, so a second event racing in from another
            # thread does not log the same broken listener again.
            self._disabled = True
            LOG.warning(
                "listener %r failed on %s event (atom or flow %r); it is disabled and receives no more events",
                self,
                state,
                details.get("atom_name", details.get("flow_name")),
                exc_info=True,
            )
            self.deregister()

    def __repr__(self) -> str:
        return "<%s engine=%r%s>" % (type(self).__name__, self._engine, " disabled" if self._disabled else "")


# -- turning events into text ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event:
    """One notification, as the dumping listeners see it."""

    kind: str
    """``"flow"``, ``"task"`` or ``"retry"``."""
    name: str
    uuid: str | None
    state: str
    old_state: str | None
    has_result: bool = False
    result: Any = None

    @property
    def failure(self) -> Failure | None:
        """The failure carried by this event (a FAILURE or REVERT_FAILURE result), if any."""
        return self.result if isinstance(self.result, Failure) else None

    @classmethod
    def from_details(cls, kind: str, state: Any, details: Mapping[str, Any]) -> Event:
        """Build an event from a notifier's ``details``."""
        if kind == "flow":
            name, uuid = details.get("flow_name"), details.get("flow_uuid")
        else:
            name, uuid = details.get("atom_name"), details.get("atom_uuid")
        old = details.get("old_state")
        return cls(
            kind=kind,
            name=str(name),
            uuid=uuid,
            state=str(state),
            old_state=str(old) if old is not None else None,
            has_result="result" in details,
            result=details.get("result"),
        )


def mask_values(value: Any, keys: Collection[str], mask: str = MASK) -> Any:
    """A copy of ``value`` with the values of ``keys`` replaced by ``mask``, at any depth.

    Dicts are searched recursively, through lists and tuples too; anything
    else is returned as it is.
    """
    if not keys:
        return value
    if isinstance(value, Mapping):
        return {k: (mask if k in keys else mask_values(v, keys, mask)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_values(v, keys, mask) for v in value]
    if isinstance(value, tuple):
        return tuple(mask_values(v, keys, mask) for v in value)
    return value


def _short_failure(failure: Failure) -> str:
    return "%s: %s" % (failure.exception_type_name.rsplit(".", 1)[-1], failure.exception_str)


def format_event(event: Event, *, mask_keys: Collection[str] = (), show_uuid: bool = True) -> str:
    """One line describing ``event``, e.g. ``task 'charge' (uuid): RUNNING -> SUCCESS, result: 42``.

    Values under any of ``mask_keys`` in a dict result are shown as ``***``.
    """
    who = "%s %r" % (event.kind, event.name)
    if show_uuid and event.uuid:
        who += " (%s)" % (event.uuid,)
    text = "%s: %s -> %s" % (who, event.old_state or "-", event.state)
    failure = event.failure
    if failure is not None:
        text += ", failure: %s" % (_short_failure(failure),)
    elif event.has_result:
        text += ", result: %r" % (mask_values(event.result, mask_keys),)
    return text


class DumpingListener(Listener, abc.ABC):
    """A listener that turns every event into one line of text and hands it to :meth:`dump`.

    ``mask_keys`` names dict keys whose values never appear: in results (at
    any depth) and in the flow's inputs, which are shown when the flow starts
    running (``show_inputs``).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        mask_keys: Iterable[str] = (),
        show_inputs: bool = True,
        show_uuids: bool = True,
        task_listen_for: Iterable[Any] = (ANY,),
        flow_listen_for: Iterable[Any] = (ANY,),
        retry_listen_for: Iterable[Any] = (ANY,),
    ) -> None:
        super().__init__(
            engine, task_listen_for=task_listen_for, flow_listen_for=flow_listen_for, retry_listen_for=retry_listen_for
        )
        self.mask_keys = frozenset(mask_keys)
        self.show_inputs = show_inputs
        self.show_uuids = show_uuids

    @abc.abstractmethod
    def dump(self, message: str, event: Event) -> None:
        """Write ``message``, the text of ``event``, wherever this listener writes."""

    def format(self, event: Event) -> str:
        """The text of ``event`` (masked); override to change the wording."""
        text = format_event(event, mask_keys=self.mask_keys, show_uuid=self.show_uuids)
        if self.show_inputs and event.kind == "flow" and event.state == "RUNNING":
            inputs = self._engine.storage.injected
            if inputs:
                text += ", inputs: %r" % (mask_values(dict(inputs), self.mask_keys),)
        return text

    def _dump_event(self, kind: str, state: Any, details: Mapping[str, Any]) -> None:
        event = Event.from_details(kind, state, details)
        self.dump(self.format(event), event)

    def on_flow_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._dump_event("flow", state, details)

    def on_task_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._dump_event("task", state, details)

    def on_retry_event(self, state: Any, details: Mapping[str, Any]) -> None:
        self._dump_event("retry", state, details)
