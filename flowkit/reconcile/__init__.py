"""Reconciling resources toward a target state: a service sets targets, the engine moves resources there.

A service keeps resources with a **current** and a **target** state.  Each
API call only records a new target (inside the service's own transaction) and
returns; the driver works out which operation moves each resource toward its
target, runs it as a job, and records the result.  Cancelling is changing the
target; an operation's failures are counted and reset on success; past a
limit the resource is BROKEN, or driven to its rollback state.

- ``flowkit.reconcile._values``: :class:`ResourceStatus`, :class:`Resource`, :class:`Operation`.
- ``flowkit.reconcile._rules``: :class:`Rule`, :class:`Reconciler` (rules checked when built)
  and the registry of reconcilers by kind.
- ``flowkit.reconcile._store``: :class:`Resources`, the service side (create, set_target, get).
- ``flowkit.reconcile._driver``: :class:`Driver`, the engine side (one job per resource, results recorded).

See ``doc/reconcile.rst``.
"""

from __future__ import annotations

from flowkit.reconcile._driver import DEFAULT_BATCH, DEFAULT_POLL, RESOURCE_KEY, Driver, lock_key
from flowkit.reconcile._rules import (
    DEFAULT_MAX_ERRORS,
    Reconciler,
    ReconcilerRegistry,
    Rule,
    default_reconcilers,
    register,
)
from flowkit.reconcile._store import DEFAULT_MAX_FACTS_BYTES, KEEP, Resources
from flowkit.reconcile._values import STATUS_TRANSITIONS, Operation, Resource, ResourceStatus

__all__ = [
    # the rules
    "Rule",
    "Reconciler",
    "ReconcilerRegistry",
    "default_reconcilers",
    "register",
    "DEFAULT_MAX_ERRORS",
    # the service side
    "Resources",
    "KEEP",
    "DEFAULT_MAX_FACTS_BYTES",
    # the engine side
    "Driver",
    "lock_key",
    "RESOURCE_KEY",
    "DEFAULT_POLL",
    "DEFAULT_BATCH",
    # values
    "Resource",
    "ResourceStatus",
    "STATUS_TRANSITIONS",
    "Operation",
]
