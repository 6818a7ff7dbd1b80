"""The ``flowkit reconcile`` and ``flowkit resources`` commands.

::

    flowkit reconcile --kind KIND [--kind ...] --import MODULE [--board URL] [--board-name NAME]
                      [--persistence URL] [--name NAME] [--engine serial|parallel]
                      [--max-simultaneous-jobs N] [--ttl S] [--poll S]
    flowkit resources list       [--kind KIND] [--state converging|converged|broken|unreachable] [--json]
    flowkit resources show       KIND ID [--json]
    flowkit resources set-target KIND ID STATE --import MODULE
    flowkit resources retry      KIND ID --import MODULE

``reconcile`` runs a conductor with a :class:`~flowkit.reconcile.Driver`
attached: it works the resources of each ``--kind`` (their reconcilers and
flow factories registered by the ``--import`` modules) through jobs on the
SQL board in the persistence database, printing one line per conductor event,
until SIGTERM or SIGINT (which drain it, as for ``flowkit conductor``).
``resources list`` and ``show`` only read (the database is opened
read-only); ``show`` prints the resource and the history of its operations
with their jobs and flow details (``flowkit show FLOW`` shows one).
``set-target`` and ``retry`` check the kind and the state against its
reconciler, so they need the module that registers it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
from typing import Any, TextIO

from flowkit._cli_common import CommandError, Handler, cut, factory_options, prepare_factories, table

# The signal handling is the conductor command's own: SIGTERM/SIGINT drain, a second one suspends.
from flowkit.conductors.cli import DEFAULT_BOARD_NAME, _install_signals, _report_events, _restore_signals, board_conf
from flowkit.persistence.base import Backend

__all__ = ["add_commands"]

_STATES = ("converging", "converged", "broken", "unreachable")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> dict[str, Handler]:
    """Add ``reconcile`` and ``resources`` to the ``flowkit`` command's subparsers."""
    # Also after the command (the global --backend is taken before it); SUPPRESS keeps that one.
    common = argparse.ArgumentParser(add_help=False, parents=[common])
    common.add_argument("--backend", default=argparse.SUPPRESS, metavar="URL", help="logbook backend URL")
    reconcile = commands.add_parser(
        "reconcile", parents=[common, factory_options()], help="drive resources of a kind toward their targets"
    )
    reconcile.add_argument("--kind", action="append", required=True, help="kind of resource to work on (repeatable)")
    reconcile.add_argument("--board", default="sql", metavar="URL", help="SQL job board (default: the persistence db)")
    reconcile.add_argument("--board-name", default=DEFAULT_BOARD_NAME, help="board name (default %(default)s)")
    reconcile.add_argument("--persistence", default=None, metavar="URL", help="logbook backend (default: --backend)")
    reconcile.add_argument("--name", default=None, help="owner name of its claims (default: host-pid)")
    reconcile.add_argument("--engine", choices=("serial", "parallel"), default="serial", help="engine mode")
    reconcile.add_argument("--max-simultaneous-jobs", type=int, default=1, metavar="N", help="operations at once")
    reconcile.add_argument("--ttl", type=float, default=None, help="claim lease in seconds (default: the board's)")
    reconcile.add_argument("--poll", type=float, default=None, metavar="S", help="longest wait between looks")

    resources = commands.add_parser("resources", parents=[common], help="list, show and steer reconciled resources")
    actions = resources.add_subparsers(dest="resources_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="resources, by kind and id")
    listing.add_argument("--kind", default=None, help="only this kind")
    listing.add_argument("--state", choices=_STATES, default=None, help="only resources in this status")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    show = actions.add_parser("show", parents=[common], help="one resource and the history of its operations")
    show.add_argument("kind", metavar="KIND")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="JSON instead of text")
    target = actions.add_parser("set-target", parents=[common, factory_options()], help="set a resource's target state")
    target.add_argument("kind", metavar="KIND")
    target.add_argument("id", metavar="ID")
    target.add_argument("state", metavar="STATE")
    retry = actions.add_parser(
        "retry", parents=[common, factory_options()], help="clear BROKEN: try the operations again"
    )
    retry.add_argument("kind", metavar="KIND")
    retry.add_argument("id", metavar="ID")
    return {"reconcile": _cmd_reconcile, "resources": _cmd_resources}


def _open(url: str, *, read_only: bool) -> Backend:
    from flowkit.persistence.backends import fetch

    return fetch({"connection": url, "read_only": read_only})


# -- flowkit reconcile ---------------------------------------------------------------------------


def _cmd_reconcile(args: argparse.Namespace, out: TextIO) -> int:
    from flowkit.conductors import fetch as fetch_conductor
    from flowkit.jobs.backends import fetch as fetch_board
    from flowkit.jobs.backends.impl_sql import SQLJobBoard
    from flowkit.reconcile import DEFAULT_POLL, Driver

    allowed = prepare_factories(args)
    name = args.name or "%s-%d" % (socket.gethostname(), os.getpid())
    conf = board_conf(args.board)
    if conf.get("board") != "sql":
        raise CommandError("flowkit reconcile needs the SQL job board (the resources live in its database)")
    with _open(args.persistence or args.backend, read_only=False) as persistence:
        board = fetch_board(args.board_name, conf, persistence=persistence).connect()
        try:
            assert isinstance(board, SQLJobBoard)
            driver = Driver(board, args.kind, poll=args.poll or DEFAULT_POLL)
            conductor = fetch_conductor(
                "blocking" if args.max_simultaneous_jobs == 1 else "nonblocking",
                name,
                board,
                persistence=persistence,
                engine=args.engine,
                max_simultaneous_jobs=args.max_simultaneous_jobs,
                ttl=args.ttl,
                allowed_modules=allowed,
            )
            _report_events(conductor, out)
            signals = _install_signals(conductor.stop, out)
            out.write(
                "reconciling %s on board %r as %s (pid %d)\n" % (", ".join(args.kind), board.name, name, os.getpid())
            )
            out.flush()
            try:
                driver.run(conductor)
            finally:
                _restore_signals(signals)
            out.write("reconciler %s stopped\n" % (name,))
            out.flush()
        finally:
            board.close()
    return 0


# -- flowkit resources -------------------------------------------------------------------------------


def _cmd_resources(args: argparse.Namespace, out: TextIO) -> int:
    from flowkit.reconcile import Resources

    writes = args.resources_command in ("set-target", "retry")
    if writes:
        prepare_factories(args)
    with _open(args.backend, read_only=not writes) as backend:
        from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend

        if not isinstance(backend, SQLAlchemyBackend):
            raise CommandError("resources are kept in a SQL database; %s is not one" % (args.backend,))
        store = Resources(backend)
        if args.resources_command == "list":
            return _list(store, args, out)
        if args.resources_command == "show":
            return _show(store, args, out)
        if args.resources_command == "set-target":
            found = store.set_target(args.kind, args.id, args.state)
        else:
            found = store.retry(args.kind, args.id)
        out.write(
            "%s/%s: %s -> %s, %s (generation %d)\n"
            % (found.kind, found.id, found.current, found.target, found.status, found.generation)
        )
        return 0


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _list(store: Any, args: argparse.Namespace, out: TextIO) -> int:
    from flowkit.reconcile._values import resource_json

    found = store.list(kind=args.kind, status=args.state)
    if args.json:
        out.write(json.dumps([resource_json(r) for r in found], indent=2, sort_keys=True) + "\n")
        return 0
    if not found:
        out.write("no resources\n")
        return 0
    rows = [
        [
            r.kind,
            cut(r.id),
            r.current,
            r.target,
            r.status.value,
            "%d/%d" % (r.observed_generation, r.generation),
            r.operation or "-",
            ",".join("%s=%d" % item for item in sorted(r.errors.items())) or "-",
            cut(r.reason or r.last_error or "-", 60),
        ]
        for r in found
    ]
    out.write(table(["KIND", "ID", "CURRENT", "TARGET", "STATUS", "OBSERVED", "RUNNING", "ERRORS", "REASON"], rows))
    out.write("\n")
    return 0


def _show(store: Any, args: argparse.Namespace, out: TextIO) -> int:
    from flowkit.reconcile._values import operation_json, resource_json

    found = store.get(args.kind, args.id)
    history = store.operations(args.kind, args.id)
    if args.json:
        data = resource_json(found)
        data["operations"] = [operation_json(op) for op in history]
        out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return 0
    lines = [
        "resource %s/%s" % (found.kind, found.id),
        "  current     %s" % found.current,
        "  target      %s (generation %d, observed %d)" % (found.target, found.generation, found.observed_generation),
        "  rollback    %s" % (found.rollback or "-"),
        "  status      %s%s" % (found.status.value, " (%s)" % found.reason if found.reason else ""),
        "  running     %s" % ("%s, job %s" % (found.operation, found.job) if found.job else "-"),
        "  errors      %s" % (", ".join("%s=%d" % item for item in sorted(found.errors.items())) or "-"),
        "  last error  %s" % (cut(found.last_error, 200) if found.last_error else "-"),
        "  facts       %s" % cut(json.dumps(found.facts, sort_keys=True), 200),
    ]
    out.write("\n".join(lines) + "\n")
    if not history:
        out.write("no operations\n")
        return 0
    rows = [
        [
            str(op.seq),
            op.rule,
            "%s -> %s" % (op.current, op.leads_to),
            op.target,
            str(op.generation),
            _when(op.started_at),
            op.outcome or "running",
            op.flow or "-",
            cut(op.error or "-", 60),
        ]
        for op in history
    ]
    out.write("operations:\n")
    out.write(table(["SEQ", "RULE", "STEP", "TARGET", "GEN", "STARTED", "OUTCOME", "FLOW", "ERROR"], rows) + "\n")
    return 0
