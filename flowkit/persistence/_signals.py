"""What every backend answers for a signal that is already stored (internal).

A flow detail holds one signal per name; a second send of that name is a
no-op when both carry the same idempotency key and an error otherwise.  The
memory and SQL backends both decide it here, so the rule and its message are
the same everywhere.
"""

from __future__ import annotations

import datetime

from flowkit.exceptions import SignalAlreadySent

__all__ = ["resend", "describe_time"]


def describe_time(seconds: float | None) -> str:
    """Clock seconds as an ISO-8601 UTC time, for messages ("an unknown time" if None or out of range)."""
    if seconds is None:
        return "an unknown time"
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "%r (clock seconds)" % (seconds,)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def resend(
    flow_uuid: str, name: str, idempotency_key: str | None, stored_key: str | None, stored_at: float | None
) -> bool:
    """False if sending (``flow_uuid``, ``name``) again is the no-op of an equal key; else raise SignalAlreadySent."""
    if idempotency_key is not None and idempotency_key == stored_key:
        return False
    if idempotency_key is None:
        why = "send it with the idempotency key it was sent with to make a repeat a no-op"
    elif stored_key is None:
        why = "it was sent without an idempotency key, so no key makes a repeat a no-op"
    else:
        why = "it was sent with another idempotency key"
    raise SignalAlreadySent(
        "flow detail %s already got signal %r (sent at %s); a signal is delivered once per flow detail and "
        "name (%s)" % (flow_uuid, name, describe_time(stored_at), why)
    )
