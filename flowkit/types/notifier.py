"""Publish/subscribe of events to callbacks.

Engines publish flow and atom state changes through a :class:`Notifier`; tasks
publish progress through their own.  Callbacks are called as
``callback(event_type, *args, details=details, **kwargs)`` (TaskFlow's calling
convention), in the thread that published the event.  A callback that raises
is logged and the other callbacks still run: watching a flow must never break it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["Notifier", "RestrictedNotifier", "Listener"]

LOG = logging.getLogger(__name__)

Callback = Callable[..., Any]
DetailsFilter = Callable[[Mapping[str, Any]], bool]


class Listener:
    """One registered callback, with its extra arguments and optional filter."""

    __slots__ = ("callback", "args", "kwargs", "details_filter")

    def __init__(
        self,
        callback: Callback,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        details_filter: DetailsFilter | None = None,
    ) -> None:
        self.callback = callback
        self.args = tuple(args or ())
        self.kwargs = dict(kwargs or {})
        self.details_filter = details_filter

    def __call__(self, event_type: Any, details: Mapping[str, Any]) -> None:
        if self.details_filter is not None and not self.details_filter(details):
            return
        self.callback(event_type, *self.args, details=details, **self.kwargs)

    def is_equivalent(self, callback: Callback, details_filter: DetailsFilter | None = None) -> bool:
        """True if this listener wraps ``callback`` with the same filter."""
        return self.callback == callback and self.details_filter == details_filter


class Notifier:
    """Maps event types to listeners; ``Notifier.ANY`` (``"*"``) receives every event."""

    ANY = "*"

    def __init__(self) -> None:
        # Copy-on-write tuples: notify() reads without a lock while another
        # thread registers.
        self._topics: dict[Any, tuple[Listener, ...]] = {}

    def __len__(self) -> int:
        return sum(len(listeners) for listeners in self._topics.values())

    @property
    def has_listeners(self) -> bool:
        """True if anything is registered (lets publishers skip building details)."""
        return bool(self._topics)

    def can_be_registered(self, event_type: Any) -> bool:
        """True if listeners may be registered for ``event_type``."""
        return True

    def can_trigger_notification(self, event_type: Any) -> bool:
        """True if ``event_type`` may be published (``ANY`` may not)."""
        return event_type != self.ANY

    def is_registered(self, event_type: Any, callback: Callback, details_filter: DetailsFilter | None = None) -> bool:
        """True if ``callback`` (with ``details_filter``) listens to ``event_type``."""
        return any(listener.is_equivalent(callback, details_filter) for listener in self._topics.get(event_type, ()))

    def register(
        self,
        event_type: Any,
        callback: Callback,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        details_filter: DetailsFilter | None = None,
    ) -> None:
        """Call ``callback`` for every ``event_type`` event (``"*"``: every event)."""
        if not callable(callback):
            raise ValueError("event callback must be callable, got %r" % (callback,))
        if details_filter is not None and not callable(details_filter):
            raise ValueError("details filter must be callable, got %r" % (details_filter,))
        if not self.can_be_registered(event_type):
            raise ValueError("event type %r cannot be registered here" % (event_type,))
        if self.is_registered(event_type, callback, details_filter):
            raise ValueError("%r is already registered for %r" % (callback, event_type))
        listener = Listener(callback, args, kwargs, details_filter)
        self._topics[event_type] = self._topics.get(event_type, ()) + (listener,)

    def deregister(self, event_type: Any, callback: Callback, details_filter: DetailsFilter | None = None) -> bool:
        """Remove ``callback`` from ``event_type``; return whether it was registered."""
        listeners = self._topics.get(event_type, ())
        kept = tuple(lst for lst in listeners if not lst.is_equivalent(callback, details_filter))
        if len(kept) == len(listeners):
            return False
        if kept:
            self._topics[event_type] = kept
        else:
            self._topics.pop(event_type, None)
        return True

    def deregister_event(self, event_type: Any) -> int:
        """Remove every listener of ``event_type``; return how many were removed."""
        return len(self._topics.pop(event_type, ()))

    def reset(self) -> None:
        """Remove every listener."""
        self._topics = {}

    def listeners_iter(self) -> Iterator[tuple[Any, tuple[Listener, ...]]]:
        """Yield ``(event_type, listeners)`` pairs."""
        yield from list(self._topics.items())

    def notify(self, event_type: Any, details: Mapping[str, Any]) -> None:
        """Call every listener of ``event_type`` and of ``ANY`` with ``details``."""
        topics = self._topics
        if not topics:
            return
        listeners = topics.get(event_type, ()) + topics.get(self.ANY, ())
        for listener in listeners:
            try:
                listener(event_type, details)
            except Exception:
                LOG.warning(
                    "Listener %r failed on event %r; other listeners still run",
                    listener.callback,
                    event_type,
                    exc_info=True,
                )


class RestrictedNotifier(Notifier):
    """A notifier that only accepts a fixed set of event types (and ``ANY``)."""

    def __init__(self, watchable_events: Iterable[Any], allow_any: bool = True) -> None:
        super().__init__()
        self._watchable = frozenset(watchable_events)
        self._allow_any = allow_any

    @property
    def events_iter(self) -> Iterator[Any]:
        """The event types this notifier publishes."""
        return iter(self._watchable)

    def can_be_registered(self, event_type: Any) -> bool:
        if event_type == self.ANY:
            return self._allow_any
        return event_type in self._watchable
