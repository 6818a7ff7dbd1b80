"""The ``flowkit conductor`` and ``flowkit jobs`` commands.

::

    flowkit conductor [--board URL] [--persistence URL] [--engine serial|parallel]
                      [--import MODULE] [--allow-module PREFIX] ...
    flowkit jobs list   [--board URL] [--all]
    flowkit jobs post   FACTORY [--args JSON] [--kwargs JSON] [--store JSON]
                        [--delay SECONDS | --not-before ISO8601] ...
    flowkit jobs cancel JOB_UUID [--no-revert]
    flowkit jobs retry  JOB_UUID

``jobs list`` shows the jobs not finished, with when each is due (``at T``
for a delayed job or a backoff, ``parked until T`` or ``parked on signal``
for a parked one; times in UTC), their failed attempts and last error;
``--all`` adds finished ones (COMPLETE, CANCELLED, TRASHED) and the outcome
their flow ended with.  ``jobs post --delay`` or ``--not-before`` (an
ISO 8601 time with its timezone, e.g. ``2030-01-01T09:00:00+00:00``) posts a
job no conductor claims before then.
``jobs retry`` puts a TRASHED job back to UNCLAIMED with a fresh count of
attempts (:meth:`~flowkit.jobs.base.JobBoard.restore`).

``--board`` is a job board URL (``redis://...``, ``postgresql://...``,
``sqlite:///...``, ``memory://``) or just a kind (``sql``, ``redis``); the
default, ``sql``, keeps jobs in the persistence database.  ``--persistence``
defaults to the global ``--backend``.  ``flowkit conductor`` prints one line
per conductor event and runs until SIGTERM or SIGINT, which drain it (no new
claims; running jobs finish); a second signal suspends the running jobs and
gives them back to the board.  Only this command installs signal handlers:
the library never does.  A conductor runs only jobs whose factory it knows:
installed ``flowkit.factories`` entry points, factories registered by the
modules given with ``--import``, and (the escape hatch) factories under a
``--allow-module`` prefix; see :mod:`flowkit.factories`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from flowkit import _imports
from flowkit._cli_common import Handler, factory_options, prepare_factories, table
from flowkit._cli_metrics import add_metrics_options, serving_metrics
from flowkit.conductors.base import DEFAULT_BACKOFF, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_CONDUCTOR_FAILURES
from flowkit.persistence.base import Backend

__all__ = ["add_commands", "board_conf", "DEFAULT_BOARD_NAME"]

#: The board name the commands use unless ``--board-name`` says otherwise.
DEFAULT_BOARD_NAME = "flowkit"

_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def board_conf(board: str) -> dict[str, Any]:
    """The :func:`flowkit.jobs.backends.fetch` conf for a ``--board`` value (a URL or a kind)."""
    if "://" not in board:
        return {"board": board}
    scheme = board.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme == "memory":
        return {"board": "memory"}
    if scheme in ("redis", "rediss", "unix"):
        return {"board": "redis", "url": board}
    if scheme in _SQL_SCHEMES:
        return {"board": "sql", "url": board}
    raise ValueError("no job board for %r (known: redis://..., postgresql://..., sqlite:///..., memory://)" % (board,))


def _json(what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError("%s must be JSON: %s" % (what, error)) from None

    return parse


def _iso_time(text: str) -> datetime.datetime:
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "--not-before must be an ISO 8601 time such as 2030-01-01T09:00:00+00:00, got %r" % (text,)
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            "--not-before %r has no timezone: add one, e.g. %s+00:00 for UTC" % (text, text)
        )
    return when


def _board_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--board",
        default="sql",
        metavar="URL",
        help="job board URL or kind (default: sql, in the persistence database)",
    )
    parser.add_argument("--board-name", default=DEFAULT_BOARD_NAME, help="board name (default %(default)s)")
    parser.add_argument("--persistence", default=None, metavar="URL", help="logbook backend (default: --backend)")
    parser.add_argument("--lease-ttl", type=float, default=None, metavar="S", help="claim lease in seconds")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> dict[str, Handler]:
    """Add ``conductor`` and ``jobs`` to the ``flowkit`` command's subparsers."""
    conductor = commands.add_parser(
        "conductor", parents=[common, factory_options()], help="claim jobs from a board and run them"
    )
    _board_options(conductor)
    conductor.add_argument("--name", default=None, help="owner name of its claims (default: host-pid)")
    conductor.add_argument("--kind", choices=("blocking", "nonblocking"), default="blocking")
    conductor.add_argument("--engine", choices=("serial", "parallel"), default="serial", help="engine mode")
    conductor.add_argument("--max-simultaneous-jobs", type=int, default=None, help="jobs at once (nonblocking)")
    conductor.add_argument("--ttl", type=float, default=None, help="claim lease in seconds (default: the board's)")
    conductor.add_argument("--max-dispatches", type=int, default=None, help="stop after this many jobs")
    conductor.add_argument(
        "--max-conductor-failures",
        type=int,
        default=DEFAULT_MAX_CONDUCTOR_FAILURES,
        metavar="N",
        help="trash a job once N distinct conductors could not build its flow (default %(default)s)",
    )
    conductor.add_argument(
        "--backoff", type=float, default=DEFAULT_BACKOFF, metavar="S",
        help="first wait before such a job is claimable again; doubles each attempt (default %(default)s)",
    )  # fmt: skip
    conductor.add_argument(
        "--max-backoff", type=float, default=DEFAULT_MAX_BACKOFF, metavar="S",
        help="longest such wait (default %(default)s)",
    )  # fmt: skip
    add_metrics_options(conductor)

    jobs = commands.add_parser("jobs", parents=[common], help="list, post and cancel jobs")
    actions = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="jobs that are not finished (--all: every job)")
    _board_options(listing)
    listing.add_argument("--all", action="store_true", help="also finished jobs: COMPLETE, CANCELLED, TRASHED")
    post = actions.add_parser("post", help="post a flow factory as a job; prints the job's uuid")
    _board_options(post)
    post.add_argument("factory", metavar="FACTORY", help="'module:function' returning the flow")
    post.add_argument("--args", type=_json("--args"), default=[], help="JSON list of factory arguments")
    post.add_argument("--kwargs", type=_json("--kwargs"), default={}, help="JSON object of factory keywords")
    post.add_argument("--store", type=_json("--store"), default=None, help="JSON object of injected values")
    post.add_argument("--name", default=None, help="job name (default: the factory's)")
    post.add_argument("--priority", default="NORMAL", help="VERY_HIGH, HIGH, NORMAL, LOW or VERY_LOW")
    post.add_argument("--idempotency-key", default=None, help="post at most one job with this key")
    post.add_argument("--resource", action="append", default=[], help="resource lock key (repeatable)")
    when = post.add_mutually_exclusive_group()
    when.add_argument("--delay", type=float, default=None, metavar="SECONDS", help="claimable only this much later")
    when.add_argument(
        "--not-before", type=_iso_time, default=None, metavar="ISO8601",
        help="claimable only from this time (with a timezone, e.g. 2030-01-01T09:00:00+00:00)",
    )  # fmt: skip
    cancel = actions.add_parser("cancel", help="cancel a job (a running one stops at its next atom)")
    _board_options(cancel)
    cancel.add_argument("job", metavar="JOB_UUID")
    cancel.add_argument("--no-revert", action="store_true", help="suspend the flow instead of reverting it")
    retry = actions.add_parser("retry", help="put a TRASHED job back to UNCLAIMED (attempts start again)")
    _board_options(retry)
    retry.add_argument("job", metavar="JOB_UUID")
    return {"conductor": _cmd_conductor, "jobs": _cmd_jobs}


# -- opening things ---------------------------------------------------------------------


def _persistence(args: argparse.Namespace, *, read_only: bool = False) -> Backend:
    from flowkit.persistence.backends import fetch

    url = args.persistence or args.backend
    return fetch({"connection": url, "read_only": read_only})


def _board(args: argparse.Namespace, persistence: Backend) -> Any:
    from flowkit.jobs.backends import fetch

    conf = board_conf(args.board)
    if args.lease_ttl is not None:
        conf["lease_ttl"] = args.lease_ttl
    return fetch(args.board_name, conf, persistence=persistence).connect()


# -- flowkit conductor ------------------------------------------------------------------------


def _cmd_conductor(args: argparse.Namespace, out: TextIO) -> int:
    from flowkit.conductors import EVENTS, fetch

    allowed = prepare_factories(args)
    name = args.name or "%s-%d" % (socket.gethostname(), os.getpid())
    with serving_metrics(args, out), _persistence(args) as persistence:
        board = _board(args, persistence)
        try:
            conductor = fetch(
                args.kind,
                name,
                board,
                persistence=persistence,
                engine=args.engine,
                max_simultaneous_jobs=args.max_simultaneous_jobs,
                ttl=args.ttl,
                allowed_modules=allowed,
                max_conductor_failures=args.max_conductor_failures,
                backoff=args.backoff,
                max_backoff=args.max_backoff,
            )

            def report(event: str, details: Mapping[str, Any]) -> None:
                job = details["job"]
                extra = details.get("state") or details.get("reason") or ""
                out.write("%s %s %s %s\n" % (event, job.uuid, job.name, extra))
                out.flush()

            for event in EVENTS:
                conductor.notifier.register(event, report)
            signals = _install_signals(conductor.stop)
            out.write("conductor %s working board %r (pid %d)\n" % (name, board.name, os.getpid()))
            out.flush()
            try:
                conductor.run(max_dispatches=args.max_dispatches)
            finally:
                _restore_signals(signals)
            out.write("conductor %s stopped\n" % (name,))
            out.flush()
        finally:
            board.close()
    return 0


def _install_signals(stop: Callable[..., None]) -> dict[int, Any]:
    """First SIGTERM/SIGINT drains the conductor, a second suspends its running jobs."""
    received = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        stop(drain=len(received) == 1)

    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, on_signal)
    return previous


def _restore_signals(previous: Mapping[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


# -- flowkit jobs ----------------------------------------------------------------------------


def _cmd_jobs(args: argparse.Namespace, out: TextIO) -> int:
    # Listing only reads: it must not create a database (or tables) where there was none.
    with _persistence(args, read_only=args.jobs_command == "list") as persistence:
        board = _board(args, persistence)
        try:
            action: Callable[[argparse.Namespace, Any, TextIO], int] = {
                "list": _jobs_list,
                "post": _jobs_post,
                "cancel": _jobs_cancel,
                "retry": _jobs_retry,
            }[args.jobs_command]
            return action(args, board, out)
        finally:
            board.close()


def _jobs_list(args: argparse.Namespace, board: Any, out: TextIO) -> int:
    rows = []
    now = board.clock.now()
    for job in board.iterjobs(include_final=args.all):
        failures = board.failures_of(job)
        status = board.status_of(job)
        error = " ".join((failures.last_error or "-").split())  # one line per job
        if len(error) > _ERROR_WIDTH:
            error = error[: _ERROR_WIDTH - 3] + "..."
        row = [
            job.uuid,
            job.name,
            str(status.state),
            board.find_owner(job) or "-",
            str(job.priority),
            job.created_on.strftime("%Y-%m-%d %H:%M:%S"),
            _due_text(status, now),
            str(failures.attempts),
        ]
        if args.all:
            row.append(status.outcome or "-")
        rows.append([*row, error])
    if not rows:
        out.write("no jobs\n" if args.all else "no unfinished jobs (--all lists finished ones too)\n")
        return 0
    headers = ["JOB", "NAME", "STATE", "OWNER", "PRIORITY", "POSTED", "DUE", "ATTEMPTS"]
    if args.all:
        headers.append("OUTCOME")
    out.write(table([*headers, "LAST ERROR"], rows) + "\n")
    return 0


def _due_text(status: Any, now: float) -> str:
    """When an unclaimed job is claimable: "-" (now), "at T", "parked until T" or "parked on signal"."""
    if status.on_signal:
        return "parked on signal"
    if status.due_at is None or status.due_at <= now:
        return "parked, due now" if status.parked else "-"
    when = datetime.datetime.fromtimestamp(status.due_at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return ("parked until %s" if status.parked else "at %s") % (when,)


# How much of a job's last error ``jobs list`` shows (``board.failures_of`` has all of it).
_ERROR_WIDTH = 100


def _resolve_factory(name: str) -> Any:
    try:
        return _imports.resolve(name)
    except _imports.ResolveError as error:
        raise ValueError("factory %r cannot be imported: %s" % (name, error.reason)) from error
    except ValueError as error:
        raise ValueError("factory %r is not a 'module:function' name" % (name,)) from error


def _jobs_post(args: argparse.Namespace, board: Any, out: TextIO) -> int:
    from flowkit.conductors.posting import post_flow

    if not isinstance(args.args, list):
        raise ValueError("--args must be a JSON list, got %r" % (args.args,))
    if not isinstance(args.kwargs, dict):
        raise ValueError("--kwargs must be a JSON object, got %r" % (args.kwargs,))
    if args.store is not None and not isinstance(args.store, dict):
        raise ValueError("--store must be a JSON object, got %r" % (args.store,))
    job = post_flow(
        board,
        _resolve_factory(args.factory),
        args.args,
        args.kwargs,
        store=args.store,
        name=args.name,
        priority=args.priority,
        idempotency_key=args.idempotency_key,
        resources=args.resource,
        delay=args.delay,
        not_before=args.not_before,
    )
    out.write("%s\n" % (job.uuid,))
    return 0


def _jobs_cancel(args: argparse.Namespace, board: Any, out: TextIO) -> int:
    state = board.cancel(args.job, revert=not args.no_revert)
    out.write("%s %s\n" % (args.job, state))
    return 0


def _jobs_retry(args: argparse.Namespace, board: Any, out: TextIO) -> int:
    state = board.restore(args.job)
    out.write("%s %s\n" % (args.job, state))
    return 0
