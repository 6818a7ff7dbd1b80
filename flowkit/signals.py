"""Signals: durable messages to a flow, delivered once per flow detail and name.

A signal is a named JSON value sent to a flow detail, e.g. ``"approved"``
with ``{"by": "ann"}``; a ``WaitFor`` atom waiting for that name completes
with the value as its result.  The logbook keeps it, so it is delivered
whether it arrives before the flow reaches its wait or while the flow is
parked with no process running it, and exactly once: a flow detail holds at
most one signal per name.

::

    from flowkit import signals

    signals.send(backend, flow_uuid, "approved", {"by": "ann"})
    signals.send(backend, flow_uuid, "approved", {"by": "ann"}, idempotency_key="ticket-7")  # repeatable

From a shell: ``flowkit signal FLOW_DETAIL_UUID approved --value '{"by": "ann"}'``.

:func:`send` checks everything before it stores anything: the name (as an
atom name is checked), the value (plain JSON data: dicts with ``str`` keys,
lists, ``str``, finite ``int``/``float``, ``bool``, ``None``; at most
:data:`MAX_SIGNAL_BYTES` as JSON, or the backend's ``result_limit`` if that
is smaller) and the idempotency key.  Sending a name the flow detail already
got raises :class:`~flowkit.exceptions.SignalAlreadySent`, unless both sends
carry the same idempotency key: then the second is a no-op that returns
False, so a sender that does not know whether its first attempt got through
may simply send again.

Waking a waiting engine: an engine waiting in this process subscribes to its
flow detail (:func:`subscribe`) and :func:`send` wakes it as soon as the
signal is stored; an engine in another process looks for signals every
:data:`DEFAULT_SIGNAL_POLL` seconds (one query,
:meth:`~flowkit.persistence.base.Connection.get_signals`), and a conductor
finds the parked flows that got one with
:meth:`~flowkit.persistence.base.Connection.signals_after`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flowkit._names import check_name
from flowkit.clock import Clock, as_clock
from flowkit.exceptions import ResultNotStorable
from flowkit.persistence import codec
from flowkit.persistence.base import Backend

__all__ = [
    # sending and reading
    "send",
    "get",
    # waking waiters in this process
    "subscribe",
    # limits
    "MAX_SIGNAL_BYTES",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "DEFAULT_SIGNAL_POLL",
]

#: The largest signal value, in bytes of JSON: a signal says what happened, it does not carry data sets.
MAX_SIGNAL_BYTES = 1024 * 1024

#: The longest idempotency key, in characters (the SQL column holds 255).
MAX_IDEMPOTENCY_KEY_LENGTH = 255

#: Seconds between two looks for signals sent by other processes, by an engine
#: that waits for one in a script (``engine.run()`` without ``park``).  A signal
#: sent in the same process wakes it at once (:func:`subscribe`).
DEFAULT_SIGNAL_POLL = 1.0

#: This module's logger (TaskFlow code configures or patches a module's ``LOG``).
LOG = logging.getLogger(__name__)


# -- checks --------------------------------------------------------------------------


class _NotPlain(Exception):
    """A part of a value that is not plain JSON data; the path to it is collected on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _plain(value: Any, depth: int) -> None:
    """Raise _NotPlain unless ``value`` is plain JSON data (no Failures, no registered types)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if depth >= codec.MAX_DEPTH:
        raise _NotPlain("is nested more than %d levels deep" % (codec.MAX_DEPTH,))
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            try:
                _plain(item, depth + 1)
            except _NotPlain as refused:
                refused.path.append("[%d]" % (index,))
                raise
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotPlain("has a key %r of type %s (only str keys are JSON)" % (key, type(key).__qualname__))
            try:
                _plain(item, depth + 1)
            except _NotPlain as refused:
                refused.path.append("[%r]" % (key,))
                raise
        return
    kind = type(value)
    raise _NotPlain(
        "is a %s.%s, which is not JSON data (a signal carries dicts with str keys, lists, str, finite "
        "numbers, bool and None)" % (kind.__module__, kind.__qualname__)
    )


def _checked_value(value: Any, what: str, limit: int) -> Any:
    """``value`` as the canonical JSON data it is stored as; TypeError or ValueError saying what is wrong."""
    try:
        _plain(value, 0)
    except _NotPlain as refused:
        where = "value" + "".join(reversed(refused.path))
        if "nested" in refused.reason:
            raise ValueError("%s: %s %s" % (what, where, refused.reason)) from None
        raise TypeError("%s: %s %s" % (what, where, refused.reason)) from None
    try:
        data = codec.canonical(value, what="value")
    except ResultNotStorable as refused:
        # Plain data the codec still refuses: NaN or an infinity, or a dict
        # that would read back as a tagged value.
        raise ValueError("%s: %s" % (what, refused)) from None
    size = codec.encoded_size(data)
    if size > limit:
        raise ValueError(
            "%s: value is %d bytes as JSON, more than the %d a signal may carry; send where the data is instead"
            % (what, size, limit)
        )
    return data


def _checked_key(key: Any, what: str) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise TypeError("%s: idempotency_key must be None or a non-empty str, got %r" % (what, key))
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(
            "%s: idempotency_key is %d characters long, more than the %d that can be stored"
            % (what, len(key), MAX_IDEMPOTENCY_KEY_LENGTH)
        )
    check_name(key, "the idempotency key of %s" % (what,))
    return key


def _limit(backend: Backend) -> int:
    storable = backend.result_limit
    return MAX_SIGNAL_BYTES if storable is None else min(MAX_SIGNAL_BYTES, storable)


# -- sending and reading ----------------------------------------------------------------


def send(
    backend: Backend,
    flow_uuid: str,
    name: str,
    value: Any = None,
    *,
    idempotency_key: str | None = None,
    clock: Clock | Callable[[], float] | None = None,
) -> bool:
    """Send signal ``name`` with ``value`` to flow detail ``flow_uuid``; True once stored, False if a no-op.

    Checked before anything is stored: ``name`` like an atom name (TypeError
    or :class:`~flowkit.exceptions.InvalidName`), ``value`` plain JSON data
    of at most :data:`MAX_SIGNAL_BYTES` (or the backend's ``result_limit``)
    as JSON (TypeError for a type JSON does not have, ValueError for NaN, an
    infinity, too deep or too large), ``idempotency_key`` None or a non-empty
    ``str`` of at most 255 characters.  Each message names the signal and
    the flow detail.

    Then the signal is committed in its own transaction, with the time
    ``clock`` (default: the system clock) says, and every callback
    :func:`subscribe`\\ d to ``flow_uuid`` in this process is called.  Raises
    :class:`~flowkit.exceptions.NotFound` for a flow detail the backend does
    not hold and :class:`~flowkit.exceptions.SignalAlreadySent` when it got
    ``name`` already; returns False, storing nothing, when it got ``name``
    with this same ``idempotency_key``.
    """
    if not isinstance(flow_uuid, str) or not flow_uuid:
        raise TypeError("a signal goes to a flow detail uuid (a non-empty str), got %r" % (flow_uuid,))
    check_name(name, "signal name")
    what = "signal %r for flow detail %s" % (name, flow_uuid)
    key = _checked_key(idempotency_key, what)
    data = _checked_value(value, what, _limit(backend))
    sent_at = as_clock(clock).now()
    with backend.get_connection() as conn:
        stored = conn.send_signal(flow_uuid, name, data, key, sent_at)
    if stored:
        _wake(flow_uuid)
    return stored


def get(backend: Backend, flow_uuid: str, names: Iterable[str] | None = None) -> dict[str, Any]:
    """``{name: value}`` of the signals flow detail ``flow_uuid`` got (only ``names``, if given)."""
    if isinstance(names, str):
        raise TypeError("names must be an iterable of signal names, not one str (%r): pass [%r]" % (names, names))
    with backend.get_connection() as conn:
        return conn.get_signals(flow_uuid, names)


# -- waking waiters in this process -------------------------------------------------------

_subscribers_lock = threading.Lock()
_subscribers: dict[str, dict[int, Callable[[], Any]]] = {}
_next_token = 0


def subscribe(flow_uuid: str, callback: Callable[[], Any]) -> Callable[[], None]:
    """Call ``callback()`` whenever :func:`send` in this process stores a signal for ``flow_uuid``.

    Returns the function that unsubscribes (idempotent).  The callback runs
    in the sender's thread, after the signal is committed, so it should only
    wake a waiter (set an event), which then reads the signals itself.  What
    it raises is logged and never reaches the sender.  Signals sent by other
    processes call nothing here: a waiter polls for those.
    """
    global _next_token
    if not callable(callback):
        raise TypeError("subscribe() needs a callable, got %r" % (callback,))
    with _subscribers_lock:
        _next_token += 1
        token = _next_token
        _subscribers.setdefault(flow_uuid, {})[token] = callback

    def unsubscribe() -> None:
        with _subscribers_lock:
            callbacks = _subscribers.get(flow_uuid)
            if callbacks is not None:
                callbacks.pop(token, None)
                if not callbacks:
                    del _subscribers[flow_uuid]

    return unsubscribe


def _wake(flow_uuid: str) -> None:
    with _subscribers_lock:
        callbacks = list(_subscribers.get(flow_uuid, {}).values())
    for callback in callbacks:
        try:
            callback()
        except Exception:
            LOG.exception("a subscriber to the signals of flow detail %s failed", flow_uuid)
