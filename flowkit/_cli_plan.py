"""``flowkit plan UUID [--json]`` and the migration options of ``flowkit resume``.

``flowkit plan`` prints what resuming a flow detail would do (see
:mod:`flowkit.plan`): it opens the database read-only, takes no lock and
writes nothing.  ``flowkit resume`` takes ``--rename OLD=NEW``, ``--drop NAME``
and ``--rerun NAME`` (a :class:`~flowkit.versioning.Migration`) and
``--dry-run``, which prints the plan of that resume instead of running it
(read-only too).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from flowkit._cli_common import CommandError, Handler, factory_options, prepare_factories, table
from flowkit._cli_flows import flow_uuid
from flowkit.engines._plan import Action, Plan
from flowkit.persistence.backends import fetch
from flowkit.persistence.models import FlowDetail

__all__ = ["add_commands", "add_resume_options", "migration_from_args", "print_plan", "format_plan"]

_SHOWN = {
    Action.SKIP: "skip",
    Action.RERUN: "RUN AGAIN",
    Action.RUN: "run",
    Action.REVERT: "revert",
    Action.REVERT_AND_RUN: "revert, run",
    Action.WAIT: "wait",
    Action.DECIDE: "decide",
    Action.NONE: "-",
}


def format_plan(plan: Plan) -> str:
    """The plan as text: the structural changes, one row per atom, the at-least-once atoms, the outcome."""
    lines = ["plan for flow %r (%s), now %s" % (plan.flow_name, plan.flow_uuid, plan.flow_state)]
    if plan.changes:
        lines.append("")
        lines.append("changes since the logbook was written:")
        for change in plan.changes:
            lines.append("  %s  %s" % ("ok     " if change.compatible else "REFUSED", change.text))
    lines.append("")
    rows = []
    for step in plan.steps:
        version = "" if step.version is None else "%d.%d" % step.version
        rows.append([step.atom, step.kind, step.state, version, _SHOWN[step.action], step.note])
    lines.append(table(["ATOM", "TYPE", "STATE", "VERSION", "ACTION", "NOTE"], rows))
    again = [s.atom for s in plan.steps if s.at_least_once]
    lines.append("")
    if again:
        lines.append(
            "at least once: %s %s in flight when the run stopped, and run%s again"
            % (", ".join(repr(a) for a in again), "was" if len(again) == 1 else "were", "s" if len(again) == 1 else "")
        )
    for note in plan.notes:
        lines.append("note: %s" % (note,))
    lines.append("outcome if nothing fails: %s" % (plan.outcome,))
    return "\n".join(lines) + "\n"


def _pair(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError("expected OLD=NEW, got %r" % (text,))
    return old, new


def add_resume_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--dry-run`` and the migration options to ``flowkit resume``."""
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the resume would do (the plan) and stop; opens the database read-only",
    )
    _add_migration_options(parser)


def _add_migration_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rename",
        type=_pair,
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="the atom OLD of the logbook is the atom NEW of the code: keep its state and result (repeatable)",
    )
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="NAME",
        help="the code no longer has atom NAME: leave its record as it is, never run or revert it (repeatable)",
    )
    parser.add_argument(
        "--rerun",
        action="append",
        default=[],
        metavar="NAME",
        help="run atom NAME again even if it finished (repeatable)",
    )


def migration_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~flowkit.versioning.Migration` the options ask for, or None."""
    from flowkit.versioning import Migration

    rename = dict(getattr(args, "rename", None) or [])
    drop = getattr(args, "drop", None) or []
    rerun = getattr(args, "rerun", None) or []
    if not (rename or drop or rerun):
        return None
    try:
        return Migration(rename=rename, drop=drop, rerun=rerun)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from error


def print_plan(fd: FlowDetail, args: argparse.Namespace, allowed: tuple[str, ...], out: TextIO) -> int:
    """Print the plan of resuming ``fd`` (as JSON with ``args.json``); exit status 0, or 1 if it would be refused."""
    from flowkit.plan import plan_flow_detail

    plan = plan_flow_detail(fd, allowed_modules=allowed, migrate=migration_from_args(args))
    if getattr(args, "json", False):
        out.write(json.dumps(plan.to_data(), indent=2, sort_keys=True) + "\n")
    else:
        out.write(format_plan(plan))
    return 1 if plan.refused else 0


def _cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    from flowkit.exceptions import NotFound

    allowed = prepare_factories(args)
    # Read-only: a plan writes nothing and takes no lock, even by mistake.
    with fetch({"connection": args.backend, "read_only": True}) as backend:
        uuid = flow_uuid(backend, args.flow_detail)
        with backend.get_connection() as conn:
            try:
                fd = conn.get_flow_details(uuid)
            except NotFound:  # deleted since it was found
                raise CommandError("no flow detail %r in this backend (try 'flowkit flows')" % (uuid,)) from None
        return print_plan(fd, args, allowed, out)


def add_commands(commands: Any, common: argparse.ArgumentParser) -> dict[str, Handler]:
    """Add ``flowkit plan`` to the command's subparsers."""
    plan = commands.add_parser(
        "plan",
        parents=[common, factory_options()],
        help="say what resuming a flow would do, without running or writing anything",
    )
    plan.add_argument("--backend", default=argparse.SUPPRESS, metavar="URL", help="logbook backend URL")
    plan.add_argument("flow_detail", metavar="FLOW_DETAIL_UUID", help="its uuid, or a unique start of it")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    _add_migration_options(plan)
    return {"plan": _cmd_plan}
