"""Cancelling any flow that has a logbook, from any process.

::

    from flowkit import cancellation

    cancellation.request(backend, flow_uuid, reason="customer withdrew")   # stop and revert
    cancellation.request(backend, flow_uuid, revert=False)                 # stop and suspend

From a shell: ``flowkit cancel FLOW_DETAIL_UUID [--no-revert] [--reason TEXT]``.

A request is stored in the logbook, in the flow detail's signals (one signal
per request, named ``flowkit.cancel.N``, holding ``{"revert": bool,
"reason": str, "at": seconds}``), so it needs nothing but the backend and
reaches whichever process runs the flow:

- An engine running the flow, in any process, looks for the next request
  every :data:`CANCEL_POLL` seconds (one small query, from a thread of its
  own, so a serial engine that is inside a long task sees it too) and at
  once when the request is made in its own process.  It then acts as
  ``engine.cancel(reason)`` (``revert``) or ``engine.suspend()`` would: no
  atom starts any more, the tasks running see ``self.context.cancelled``
  set, and the flow ends REVERTED (raising
  :class:`~flowkit.exceptions.Cancelled`) or SUSPENDED.
- A flow that no engine runs (suspended, parked, crashed) is cancelled when
  it is next run: before any atom starts, the engine reverts or suspends it
  as the request says.

The engine records the request it acted on in the flow detail's
``meta[CANCEL_KEY]`` (the same fields plus its number ``"seq"``); the next
request gets the next number, so a flow suspended by a request can be
resumed and cancelled again later.  :func:`request` refuses a flow detail
that does not exist (:class:`~flowkit.exceptions.NotFound`) or whose flow
has ended (:class:`~flowkit.exceptions.InvalidState`), and returns False,
storing nothing, while an earlier request is still pending.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from flowkit import signals, states
from flowkit.clock import Clock, as_clock
from flowkit.exceptions import InvalidState, SignalAlreadySent
from flowkit.persistence.base import Backend, Connection

__all__ = [
    "request",
    "CancelRequest",
    "pending_request",
    "CANCEL_KEY",
    "CANCEL_POLL",
    "MAX_REASON_LENGTH",
]

#: The key of ``FlowDetail.meta`` where the engine records the last request it acted on.
CANCEL_KEY = "cancel"

#: Seconds between two looks for a request made by another process, by an engine that runs the flow.
CANCEL_POLL = 0.25

#: The longest reason a request may give, in characters.
MAX_REASON_LENGTH = 1000

#: The states of a flow that has ended: nothing is left to cancel.
_ENDED = frozenset({states.SUCCESS, states.REVERTED, states.FAILURE})

_PREFIX = "flowkit.cancel."


@dataclasses.dataclass(frozen=True)
class CancelRequest:
    """A request to cancel a flow, as stored."""

    #: Its number: the first request of a flow detail is 1.
    seq: int
    #: Revert what ran (True) or suspend (False).
    revert: bool
    #: Why, as the requester said.
    reason: str
    #: When it was made, in clock seconds.
    at: float | None

    def record(self) -> dict[str, Any]:
        """What the engine stores under ``meta[CANCEL_KEY]`` once it acted on the request."""
        return {"seq": self.seq, "revert": self.revert, "reason": self.reason, "at": self.at}


def _last_seq(meta: Mapping[str, Any]) -> int:
    record = meta.get(CANCEL_KEY)
    seq = record.get("seq") if isinstance(record, Mapping) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else 0


def request(
    backend: Backend,
    flow_uuid: str,
    *,
    revert: bool = True,
    reason: str = "cancelled",
    clock: Clock | Callable[[], float] | None = None,
) -> bool:
    """Ask that flow detail ``flow_uuid`` be cancelled; True once stored, False if a request is pending already.

    ``revert`` True reverts what ran (the flow ends REVERTED); False
    suspends it (SUSPENDED; resume it later).  ``reason`` (at most
    :data:`MAX_REASON_LENGTH` characters) ends up in the
    :class:`~flowkit.exceptions.Cancelled` the run raises.  Raises
    :class:`~flowkit.exceptions.NotFound` for an unknown flow detail and
    :class:`~flowkit.exceptions.InvalidState` for a flow that has ended.
    """
    if not isinstance(revert, bool):
        raise TypeError("revert must be a bool, got %r" % (revert,))
    if not isinstance(reason, str):
        raise TypeError("reason must be a str, got %r" % (reason,))
    if len(reason) > MAX_REASON_LENGTH:
        raise ValueError(
            "the reason for cancelling flow detail %s is %d characters long, more than %d"
            % (flow_uuid, len(reason), MAX_REASON_LENGTH)
        )
    at = as_clock(clock).now()
    with backend.get_connection() as conn:
        fd = conn.get_flow_details(flow_uuid, lazy=True)
    if fd.state in _ENDED:
        raise InvalidState(
            "flow %r (flow detail %s) has ended %s; there is nothing to cancel" % (fd.name, flow_uuid, fd.state)
        )
    name = "%s%d" % (_PREFIX, _last_seq(fd.meta) + 1)
    try:
        return signals.send(backend, flow_uuid, name, {"revert": revert, "reason": reason, "at": at}, clock=clock)
    except SignalAlreadySent:
        return False


def pending_request(conn: Connection, flow_uuid: str, meta: Mapping[str, Any]) -> CancelRequest | None:
    """The request flow detail ``flow_uuid`` got and its engine has not acted on yet (``meta``: its meta), or None.

    What is stored is data: a value that is not a request's is read as a
    request to revert, with a reason saying so.
    """
    seq = _last_seq(meta) + 1
    name = "%s%d" % (_PREFIX, seq)
    found = conn.get_signals(flow_uuid, [name])
    if name not in found:
        return None
    value = found[name]
    if not isinstance(value, Mapping):
        return CancelRequest(seq, True, "cancel request %d is not readable, so the flow reverts" % (seq,), None)
    revert = value.get("revert")
    reason = value.get("reason")
    at = value.get("at")
    return CancelRequest(
        seq,
        revert is not False,
        reason[:MAX_REASON_LENGTH] if isinstance(reason, str) else "cancelled",
        float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None,
    )
