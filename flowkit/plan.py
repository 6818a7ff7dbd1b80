"""A plan before anything runs: what resuming a flow detail would do, atom by atom.

::

    from flowkit.plan import plan_flow_detail

    with backend.get_connection() as conn:
        flow_detail = conn.get_flow_details(uuid)
    plan = plan_flow_detail(flow_detail)
    for step in plan.steps:
        print(step.atom, step.state, step.action.value, step.note)

The plan says which atoms are done and are skipped, which were in flight
when the run stopped and run again (the at-least-once cases), which run for
the first time, which are reverted (a flow or a retry scope that was
reverting), which wait on a timer, a signal or a retry policy's backoff and
until when, and which structural differences between the code and the
logbook apply (:mod:`flowkit.versioning`), with whether the resume would
refuse them.  It assumes nothing fails from here on.

Making a plan has no side effects: the flow is rebuilt from code and
compiled, the flow detail is read (a copy is what a migration is tried on),
and nothing is written or locked.  ``flowkit plan UUID [--json]`` and
``flowkit resume --dry-run UUID`` open the database read-only and print it;
``engine.plan()`` gives the plan of an engine's own flow detail.
"""

from __future__ import annotations

from collections.abc import Iterable

from flowkit.engines._compiler import compile_flow
from flowkit.engines._plan import Action, Plan, PlanStep, plan_run
from flowkit.engines.helpers import flow_from_detail, migration_for_resume
from flowkit.factories import FactoryRegistry
from flowkit.persistence import codec
from flowkit.persistence.models import FlowDetail
from flowkit.versioning import Migration, apply_migration, compare

__all__ = ["Plan", "PlanStep", "Action", "plan_flow_detail"]


def _copy(flow_detail: FlowDetail) -> FlowDetail:
    copied = FlowDetail(
        name=flow_detail.name, uuid=flow_detail.uuid, state=flow_detail.state, meta=codec.copy(flow_detail.meta)
    )
    for detail in flow_detail:
        copied.add(detail.copy())
    return copied


def plan_flow_detail(
    flow_detail: FlowDetail,
    *,
    factories: FactoryRegistry | None = None,
    allowed_modules: Iterable[str] | None = None,
    migrate: Migration | None = None,
) -> Plan:
    """The plan of resuming ``flow_detail`` with the flow its factory builds now (nothing is written).

    ``factories`` and ``allowed_modules`` are as for
    :func:`flowkit.engines.load_from_detail`; ``migrate`` is the migration
    the resume would be given (the factory's declared migrations come first,
    as they would).  ``flow_detail`` itself is not changed.  Raises what
    rebuilding the flow raises (UnknownFactory, ValueError), and ValueError
    for a migration that does not fit.
    """
    flow = flow_from_detail(flow_detail, factories=factories, allowed_modules=allowed_modules)
    compilation = compile_flow(flow)
    copied = _copy(flow_detail)
    migration = migration_for_resume(copied, migrate, factories)
    applied = apply_migration(migration, compilation, copied) if migration else []
    found = compare(compilation, copied)
    refused = any(not d.compatible for d in found)
    return plan_run(compilation, copied, [*applied, *found], refused)
