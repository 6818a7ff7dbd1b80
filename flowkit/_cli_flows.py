"""The ``flowkit flows`` command, and what ``flowkit show`` adds to its table: JSON and full failures.

::

    flowkit flows [--state S ...] [--since DURATION|DATE] [--name GLOB] [--limit N] [--json]

lists flow details newest first, with the state their owner's liveness gives
them: a RUNNING or REVERTING flow whose lock no engine holds is INTERRUPTED
(its engine died; ``flowkit resume ID`` or ``flowkit recover`` goes on with
it), a WAITING one shows when it is due or the signals it waits for.
``--json`` prints the same document as the dashboard's ``GET /api/flows``
(see ``doc/web.rst``); ``flowkit show ID --json`` the one of
``GET /api/flows/ID``.  The view is built by :mod:`flowkit.web._model`, so
the command and the dashboard say the same thing of every flow.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Sequence
from typing import Any, TextIO

from flowkit import states
from flowkit._cli_common import STATE_STYLES, CommandError, Handler, cut, table, wants_colour
from flowkit.exceptions import NotFound
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.web import _model

__all__ = ["add_commands", "resolve_flow_id", "flow_uuid", "flow_json", "print_failures", "SHOWN_STATES"]

#: What ``--state`` accepts: the stored flow states and INTERRUPTED.
SHOWN_STATES = tuple(sorted({str(s) for s in states.State} | {_model.INTERRUPTED}))


def add_commands(commands: Any, common: argparse.ArgumentParser) -> dict[str, Handler]:
    """Add ``flows`` to the ``flowkit`` command's subparsers."""
    flows = commands.add_parser("flows", parents=[common], help="list flow details, newest first, with filters")
    flows.add_argument("--backend", default=argparse.SUPPRESS, metavar="URL", help="logbook backend URL")
    flows.add_argument(
        "--state", action="append", default=[], metavar="STATE",
        help="only flows in this state (repeatable, or comma-separated; INTERRUPTED: an engine died running it)",
    )  # fmt: skip
    flows.add_argument(
        "--since", default=None, metavar="DURATION|DATE",
        help="only flows created since: 30m, 2h, 7d, or an ISO 8601 date or time (UTC unless it says)",
    )  # fmt: skip
    flows.add_argument("--name", default=None, metavar="GLOB", help="only flows whose name matches, e.g. 'order-*'")
    flows.add_argument("--limit", type=int, default=50, metavar="N", help="at most N rows (default %(default)s)")
    flows.add_argument("--json", action="store_true", help="print the listing as JSON (schema: doc/command_line.rst)")
    return {"flows": _cmd_flows}


def _states(wanted: Sequence[str]) -> frozenset[str]:
    found = {part.strip().upper() for text in wanted for part in text.split(",") if part.strip()}
    unknown = sorted(found - set(SHOWN_STATES))
    if unknown:
        raise CommandError("--state %s: not a flow state (known: %s)" % (", ".join(unknown), ", ".join(SHOWN_STATES)))
    return frozenset(found)


def _open(args: argparse.Namespace) -> Backend:
    from flowkit.persistence.backends import fetch

    return fetch({"connection": args.backend, "read_only": True})


def _cmd_flows(args: argparse.Namespace, out: TextIO) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1, got %d" % (args.limit,))
    since = None
    if args.since:
        since = _model.parse_since(args.since, datetime.datetime.now(datetime.timezone.utc))
    which = _model.FlowFilter(states=_states(args.state), name=args.name, since=since, limit=args.limit)
    with _open(args) as backend:
        listing = _model.list_flows(backend, which)
    if args.json:
        out.write(json.dumps(listing, indent=2, sort_keys=True) + "\n")
        return 1 if listing["problems"] else 0
    rows = [
        [flow["uuid"], cut(flow["name"], 32), flow["state"], _when(flow["created"]), _note(flow)]
        for flow in listing["flows"]
    ]
    if rows:
        colour = wants_colour(out)

        def style(column: int, cell: str) -> str | None:
            return STATE_STYLES.get(cell) if column == 2 else None

        out.write(table(["FLOW DETAIL", "NAME", "STATE", "CREATED", "NOTE"], rows, style, colour=colour) + "\n")
    else:
        filtered = bool(args.state or args.name or args.since)
        out.write("no flow details match the filters\n" if filtered else "no flow details\n")
    counts = ", ".join("%s %d" % (state, n) for state, n in listing["counts"].items())
    out.write("%d shown of %d%s\n" % (listing["shown"], listing["total"], " (%s)" % counts if counts else ""))
    if listing["problems"]:
        out.write("\nproblems:\n" + "".join("  %s\n" % (p,) for p in listing["problems"]))
        return 1
    return 0


def _when(iso: str | None) -> str:
    return iso.replace("T", " ").replace("+00:00", "") if iso else "-"


def _note(flow: dict[str, Any]) -> str:
    """What to know of a flow at a glance, and what to run next when it needs a hand."""
    state, uuid = flow["state"], flow["uuid"]
    if state == _model.INTERRUPTED:
        return "resume with: flowkit resume %s" % (uuid,)
    if state == states.WAITING:
        wake = flow.get("wake") or {}
        parts = []
        if wake.get("due"):
            parts.append("due %s" % (_when(wake["due"]),))
        if wake.get("signals"):
            parts.append("on signal %s" % (", ".join(wake["signals"]),))
        if flow.get("engine_alive") is True:
            parts.append("in a running engine")
        return cut("; ".join(parts) or "waiting", 80)
    if state == states.BROKEN:
        return "a retry policy gave up: flowkit retry %s (or revert)" % (uuid,)
    if state == states.FAILURE:
        return "a revert failed: flowkit show %s --traceback" % (uuid,)
    if state in (states.RUNNING, states.REVERTING) and flow.get("engine_alive") is True:
        return "an engine runs it"
    if state == states.SUSPENDED:
        return "resume with: flowkit resume %s" % (uuid,)
    return ""


# -- what flowkit show adds ---------------------------------------------------------------


def resolve_flow_id(backend: Backend, ident: str) -> tuple[LogBook, FlowDetail]:
    """The logbook and lazy flow detail ``ident`` names: a whole uuid or a unique start of one."""
    try:
        return _model.match_flow(backend, ident)
    except NotFound as missing:
        raise CommandError("%s (try 'flowkit flows')" % (missing,)) from None


def flow_uuid(backend: Backend, ident: str) -> str:
    """The whole uuid of the flow detail ``ident`` names (itself, or the one whose uuid starts with it)."""
    with backend.get_connection() as conn:
        if conn.has_flow_detail(ident):
            return ident
    return resolve_flow_id(backend, ident)[1].uuid


def flow_json(backend: Backend, book: LogBook, fd: FlowDetail) -> str:
    """``flowkit show --json``: the dashboard's ``GET /api/flows/ID`` document, without its graph link."""
    return json.dumps(_model.flow_view(backend, book, fd), indent=2, sort_keys=True) + "\n"


def print_failures(backend: Backend, book: LogBook, fd: FlowDetail, out: TextIO) -> None:
    """Every failure of the flow in full: type, message, traceback, causes; then each failed attempt's."""
    view = _model.flow_view(backend, book, fd)
    shown = 0
    for failure in view["failures"]:
        shown += 1
        out.write("\n%s failed during %s:\n" % (failure["atom"], failure["during"]))
        _write_failure(failure, out, "  ")
    for atom in view["atoms"]:
        for attempt in atom["attempts"]:
            if attempt["failure"] is None:
                continue
            shown += 1
            out.write(
                "\n%s attempt %s (ended %s) failed:\n" % (atom["name"], attempt["attempt"], _when(attempt["ended"]))
            )
            _write_failure(attempt["failure"], out, "  ")
    if not shown:
        out.write("\nno failures recorded\n")


def _write_failure(failure: dict[str, Any], out: TextIO, indent: str) -> None:
    out.write("%s%s: %s\n" % (indent, failure["type"], failure["message"]))
    for line in (failure["traceback"] or "").rstrip().splitlines():
        out.write("%s  %s\n" % (indent, line))
    if failure["cause"] is not None:
        out.write("%scaused by:\n" % (indent,))
        _write_failure(failure["cause"], out, indent + "  ")
