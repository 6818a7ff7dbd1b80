"""What the reconciler stores about a resource, as values: its status, the resource, an operation.

:func:`resource_json` and :func:`operation_json` are the one JSON shape of
both, which ``flowkit resources list/show --json`` prints and the
dashboard's ``/api/resources`` answers.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

__all__ = ["ResourceStatus", "STATUS_TRANSITIONS", "Resource", "Operation", "resource_json", "operation_json"]


class ResourceStatus(str, enum.Enum):
    """Where a resource is on its way to its target.

    CONVERGING: current differs from target and the reconciler works on it
    (an operation runs, or waits out its backoff).  CONVERGED: current equals
    target.  BROKEN: an operation failed ``max_errors`` times in a row and
    there was no rollback state to go to: nothing more runs until
    ``retry``.  UNREACHABLE: no rule leads from the current state to the
    target (``reason`` says why); a new target (or new facts) ends it.
    """

    CONVERGING = "converging"
    CONVERGED = "converged"
    BROKEN = "broken"
    UNREACHABLE = "unreachable"

    def __str__(self) -> str:
        return self.value


#: The status changes the store and the driver make (a status may also stay what it is).
STATUS_TRANSITIONS: Mapping[ResourceStatus, frozenset[ResourceStatus]] = {
    ResourceStatus.CONVERGING: frozenset({ResourceStatus.CONVERGED, ResourceStatus.BROKEN, ResourceStatus.UNREACHABLE}),
    ResourceStatus.CONVERGED: frozenset({ResourceStatus.CONVERGING, ResourceStatus.UNREACHABLE}),
    # Only retry() leaves BROKEN.
    ResourceStatus.BROKEN: frozenset({ResourceStatus.CONVERGING, ResourceStatus.CONVERGED, ResourceStatus.UNREACHABLE}),
    ResourceStatus.UNREACHABLE: frozenset({ResourceStatus.CONVERGING, ResourceStatus.CONVERGED}),
}


@dataclasses.dataclass(frozen=True)
class Resource:
    """One resource as stored: its states, generations, error counts, facts and status.

    ``generation`` grows by one with every change of the target (a rollback
    counts); ``observed_generation`` is the generation the reconciler last
    settled: reached (CONVERGED), found UNREACHABLE, or gave up on (BROKEN).
    ``errors`` counts each rule's failures since its last success.
    ``operation`` and ``job`` name the rule and the job of the operation in
    flight (None when none is).  Times are the store clock's epoch seconds.
    """

    kind: str
    id: str
    current: str
    target: str
    rollback: str | None
    generation: int
    observed_generation: int
    errors: Mapping[str, int]
    last_error: str | None
    facts: Any
    status: ResourceStatus
    reason: str | None
    operation: str | None
    job: str | None
    created_at: float
    updated_at: float

    @property
    def converged(self) -> bool:
        """Whether the resource is at its target."""
        return self.status is ResourceStatus.CONVERGED


@dataclasses.dataclass(frozen=True)
class Operation:
    """One operation the reconciler started on a resource, as its history records it.

    ``rule`` is the rule's name, ``job`` and ``flow`` the job and flow
    detail that ran it; it went from ``current`` toward ``target`` and, had
    it succeeded, leads to ``leads_to``; ``generation`` is the resource's
    when it started.  ``outcome`` is how its flow ended (SUCCESS, REVERTED,
    FAILURE, CANCELLED, TRASHED; None while it runs) and ``error`` what
    failed.
    """

    seq: int
    kind: str
    resource_id: str
    rule: str
    job: str
    flow: str | None
    current: str
    target: str
    leads_to: str
    generation: int
    started_at: float
    ended_at: float | None
    outcome: str | None
    error: str | None


def resource_json(resource: Resource) -> dict[str, Any]:
    """``resource`` as a JSON object: its fields by name, the status as its value, times in epoch seconds."""
    return {
        "kind": resource.kind,
        "id": resource.id,
        "current": resource.current,
        "target": resource.target,
        "rollback": resource.rollback,
        "status": resource.status.value,
        "reason": resource.reason,
        "generation": resource.generation,
        "observed_generation": resource.observed_generation,
        "errors": dict(resource.errors),
        "last_error": resource.last_error,
        "operation": resource.operation,
        "job": resource.job,
        "facts": resource.facts,
        "created_at": resource.created_at,
        "updated_at": resource.updated_at,
    }


def operation_json(operation: Operation) -> dict[str, Any]:
    """``operation`` as a JSON object, without the kind and id of its resource (it is listed under it)."""
    return {
        "seq": operation.seq,
        "rule": operation.rule,
        "job": operation.job,
        "flow": operation.flow,
        "current": operation.current,
        "target": operation.target,
        "leads_to": operation.leads_to,
        "generation": operation.generation,
        "started_at": operation.started_at,
        "ended_at": operation.ended_at,
        "outcome": operation.outcome,
        "error": operation.error,
    }
