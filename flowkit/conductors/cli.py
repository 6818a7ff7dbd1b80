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
``--recover`` first resumes the flows on its persistence backend whose engine
died and that no job of the board owns (as ``flowkit recover --once``);
``--recover-interval S`` looks for them again every S seconds while it runs.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from flowkit import _imports
from flowkit._cli_common import (
    ENGINE_MODES,
    CommandError,
    Handler,
    board_conf,
    cut,
    factory_options,
    prepare_factories,
    table,
)
from flowkit._cli_metrics import add_metrics_options, serving_metrics
from flowkit.conductors.base import DEFAULT_BACKOFF, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_CONDUCTOR_FAILURES
from flowkit.jobs.base import JobState
from flowkit.persistence.base import Backend

__all__ = ["add_commands", "board_conf", "DEFAULT_BOARD_NAME"]

#: The board name the commands use unless ``--board-name`` says otherwise.
DEFAULT_BOARD_NAME = "flowkit"


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


def add_commands(commands: Any, common: argparse.ArgumentParser) -> dict[str, Handler]:
    """Add ``conductor`` and ``jobs`` to the ``flowkit`` command's subparsers."""
    conductor = commands.add_parser(
        "conductor", parents=[common, factory_options()], help="claim jobs from a board and run them"
    )
    _board_options(conductor)
    conductor.add_argument("--name", default=None, help="owner name of its claims (default: host-pid)")
    conductor.add_argument("--kind", choices=("blocking", "nonblocking"), default="blocking")
    conductor.add_argument("--engine", choices=ENGINE_MODES, default="serial", help="engine mode (default: serial)")
    conductor.add_argument("--max-simultaneous-jobs", type=int, default=None, help="jobs at once (nonblocking)")
    conductor.add_argument(
        "--ttl", type=float, default=None, metavar="S",
        help="claim lease in seconds, renewed every S/3 (default: the board's, 30)",
    )  # fmt: skip
    conductor.add_argument("--max-dispatches", type=int, default=None, help="stop after this many jobs")
    conductor.add_argument(
        "--recover", action="store_true",
        help="first resume the flows without a job on this board whose engine died (as 'flowkit recover --once')",
    )  # fmt: skip
    conductor.add_argument(
        "--recover-interval", type=float, default=None, metavar="S",
        help="with --recover: look for such flows again every S seconds while the conductor runs",
    )  # fmt: skip
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
    listing.add_argument(
        "--state", action="append", default=[], metavar="STATE",
        help="only jobs in this state (repeatable, or comma-separated; finished states included)",
    )  # fmt: skip
    listing.add_argument("--json", action="store_true", help="print the jobs as JSON (schema: doc/command_line.rst)")
    show = actions.add_parser("show", help="one job: its state, owner, lease, attempts, last error")
    _board_options(show)
    show.add_argument("job", metavar="JOB_UUID", help="its uuid, or a unique start of it")
    show.add_argument("--json", action="store_true", help="print it as JSON")
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
    return fetch(args.board_name, conf, persistence=persistence).connect()


# -- flowkit conductor ------------------------------------------------------------------------


def _cmd_conductor(args: argparse.Namespace, out: TextIO) -> int:
    from flowkit.conductors import fetch

    if args.recover_interval is not None:
        if not args.recover:
            raise CommandError("--recover-interval needs --recover")
        if not args.recover_interval > 0:
            raise CommandError("--recover-interval must be positive, got %r" % (args.recover_interval,))
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
            _report_events(conductor, out)
            if args.recover:
                found = _recover(board, persistence, args, allowed, out)
                out.write("conductor %s: %d interrupted flow(s) without a job found and resumed\n" % (name, found))
                out.flush()
            signals = _install_signals(conductor.stop, out)
            out.write("conductor %s working board %r (pid %d)\n" % (name, board.name, os.getpid()))
            out.flush()
            looking = None
            if args.recover_interval is not None:
                looking = _RecoverLoop(name, board, persistence, args, allowed, out)
            try:
                conductor.run(max_dispatches=args.max_dispatches)
            finally:
                if looking is not None:
                    looking.stop()
                _restore_signals(signals)
            out.write("conductor %s stopped\n" % (name,))
            out.flush()
        finally:
            board.close()
    return 0


def _recover(
    board: Any, persistence: Backend, args: argparse.Namespace, allowed: Any, out: TextIO, stop: Any = None
) -> int:
    """Resume the interrupted flows that no job of ``board`` owns (those its conductors resume as jobs); how many."""
    from flowkit._cli_recover import recover_pass

    # Read at each look: a flow whose book a job names is that job's, even if the job is not due yet.
    jobs = frozenset(job.book_uuid for job in board.iterjobs() if job.book_uuid)
    options: dict[str, Any] = {"engine": args.engine}
    found, _ = recover_pass(persistence, skip_books=jobs, options=options, allowed=allowed, out=out, stop=stop)
    return found


class _RecoverLoop:
    """``--recover-interval``: a thread that looks for interrupted flows without a job while the conductor runs.

    A flow it is resuming when the conductor stops is suspended (it stays
    resumable, and the next look of any recovering process resumes it).
    """

    def __init__(
        self, name: str, board: Any, persistence: Backend, args: argparse.Namespace, allowed: Any, out: TextIO
    ) -> None:
        from flowkit._cli_recover import Stop

        self._stopping = Stop(out)
        self._look = functools.partial(_recover, board, persistence, args, allowed, out, self._stopping)
        self._name = name
        self._interval = float(args.recover_interval)
        self._out = out
        self._thread = threading.Thread(target=self._run, name="flowkit-conductor-recover", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.event.wait(self._interval):
            try:
                found = self._look()
            except Exception as error:  # a store that is down now may be up at the next look
                self._out.write("conductor %s: looking for interrupted flows failed: %s\n" % (self._name, error))
                self._out.flush()
                continue
            if found:
                self._out.write("conductor %s: %d interrupted flow(s) without a job resumed\n" % (self._name, found))
                self._out.flush()

    def stop(self) -> None:
        """Stop looking; suspend the flow being resumed, if any; wait for the thread."""
        self._stopping.event.set()
        told = None
        while self._thread.is_alive():
            # Asked again until the thread ends: an engine built, or started, after one ask would miss it.
            engine = self._stopping.engine
            if engine is not None:
                engine.suspend()
                if engine is not told:
                    told = engine
                    self._out.write(
                        "conductor %s: suspending flow %s it was recovering\n" % (self._name, engine.flow_detail.uuid)
                    )
                    self._out.flush()
            self._thread.join(0.05)


def _report_events(conductor: Any, out: TextIO) -> None:
    """Print a line on ``out`` for each of the conductor's job events (event, job uuid, name, state or reason)."""
    from flowkit.conductors import EVENTS

    def report(event: str, details: Mapping[str, Any]) -> None:
        job = details["job"]
        extra = details.get("state") or details.get("reason") or ""
        out.write("%s %s %s %s\n" % (event, job.uuid, job.name, extra))
        out.flush()

    for event in EVENTS:
        conductor.notifier.register(event, report)


def _install_signals(stop: Callable[..., None], out: TextIO) -> dict[int, Any]:
    """First SIGTERM/SIGINT drains the conductor, a second suspends its running jobs; each is said in the log."""
    received = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        first = len(received) == 1
        what = (
            "draining: no new claims, running jobs finish (send it again to suspend them)"
            if first
            else "suspending the running jobs and giving them back to the board"
        )
        try:
            out.write("received %s: %s\n" % (signal.Signals(signum).name, what))
            out.flush()
        except (OSError, ValueError):  # a closed log must not stop the conductor from stopping
            pass
        stop(drain=first)

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
    with _persistence(args, read_only=args.jobs_command in ("list", "show")) as persistence:
        board = _board(args, persistence)
        try:
            action: Callable[[argparse.Namespace, Any, TextIO], int] = {
                "list": _jobs_list,
                "show": _jobs_show,
                "post": _jobs_post,
                "cancel": _jobs_cancel,
                "retry": _jobs_retry,
            }[args.jobs_command]
            return action(args, board, out)
        finally:
            board.close()


def _jobs_list(args: argparse.Namespace, board: Any, out: TextIO) -> int:
    from flowkit.web._model import jobs_view

    wanted = {part.strip().upper() for text in args.state for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - {str(s.value) for s in JobState})
    if unknown:
        known = ", ".join(str(s.value) for s in JobState)
        raise ValueError("--state %s: not a job state (known: %s)" % (", ".join(unknown), known))
    view = jobs_view(board)
    final = {str(s.value) for s in (JobState.COMPLETE, JobState.CANCELLED, JobState.TRASHED)}
    jobs = [
        job for job in view["jobs"] if (job["state"] in wanted if wanted else (args.all or job["state"] not in final))
    ]
    if args.json:
        out.write(json.dumps({"board": view["board"], "jobs": jobs}, indent=2, sort_keys=True) + "\n")
        return 0
    now = board.clock.now()
    rows = []
    for job in jobs:
        status = board.status_of(job["uuid"])
        rows.append(
            [
                job["uuid"],
                cut(job["name"], 32),
                job["state"],
                status.owner or "-",
                _lease_text(status, now),
                job["priority"],
                _when(job["posted"]),
                _due_text(status, now),
                str(job["attempts"]),
                job["outcome"] or "-",
                cut(job["last_error"] or "-", _ERROR_WIDTH),
            ]
        )
    if not rows:
        out.write("no jobs\n" if (args.all or wanted) else "no unfinished jobs (--all lists finished ones too)\n")
        return 0
    headers = ["JOB", "NAME", "STATE", "OWNER", "LEASE", "PRIORITY", "POSTED", "DUE", "ATTEMPTS", "OUTCOME"]
    out.write(table([*headers, "LAST ERROR"], rows) + "\n")
    return 0


def _when(iso: str | None) -> str:
    return iso.replace("T", " ").replace("+00:00", "") if iso else "-"


def _lease_text(status: Any, now: float) -> str:
    """The claim's lease: "until T" while its owner renews it, "expired T (owner gone)" once it ran out."""
    if status.lease_expires_at is None:
        return "-"
    when = datetime.datetime.fromtimestamp(status.lease_expires_at, datetime.timezone.utc).strftime("%H:%M:%S")
    if status.lease_expired:
        return "expired %s, %ds ago (owner gone)" % (when, max(0, int(now - status.lease_expires_at)))
    return "until %s (owner alive)" % (when,)


def _jobs_show(args: argparse.Namespace, board: Any, out: TextIO) -> int:
    from flowkit.web._model import jobs_view

    matches = [job for job in jobs_view(board)["jobs"] if job["uuid"].startswith(args.job.strip().lower())]
    if len(matches) != 1:
        what = "no job" if not matches else "%d jobs whose ids start with" % (len(matches),)
        raise ValueError("%s %r on board %r (try 'flowkit jobs list --all')" % (what, args.job, board.name))
    job = matches[0]
    if args.json:
        out.write(json.dumps(job, indent=2, sort_keys=True) + "\n")
        return 0
    status = board.status_of(job["uuid"])
    now = board.clock.now()
    failed_by = " (failed by %s)" % (", ".join(job["failed_by"]),) if job["failed_by"] else ""
    lines = [
        ("job", job["uuid"]),
        ("name", job["name"]),
        ("state", job["state"]),
        ("owner", status.owner or "-"),
        ("lease", _lease_text(status, now)),
        ("priority", job["priority"]),
        ("posted", _when(job["posted"])),
        ("due", _due_text(status, now)),
        ("attempts", "%d%s" % (job["attempts"], failed_by)),
        ("outcome", job["outcome"] or "-"),
        ("logbook", job["logbook"] or "-"),
    ]
    if job["reason"]:
        lines.append(("parked", job["reason"]))
    width = max(len(key) for key, _ in lines) + 1
    out.write("".join("%s %s\n" % ((key + ":").ljust(width), value) for key, value in lines))
    if job["last_error"]:
        out.write("last error:\n%s\n" % ("\n".join("  " + line for line in job["last_error"].splitlines()),))
    if job["logbook"]:
        out.write("its flow: flowkit flows (logbook %s), then flowkit show ID\n" % (job["logbook"],))
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
