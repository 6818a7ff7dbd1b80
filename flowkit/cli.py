"""The ``flowkit`` command: look into logbooks and resume flows from them.

::

    flowkit flows [--state S] [--since 2h] [--name GLOB] [--limit N] [--json]
                                     flow details newest first; INTERRUPTED when their engine died
    flowkit logbooks                 every logbook and its flow details
    flowkit show FLOW_DETAIL_UUID    a flow detail's atoms: states, results, failures, timings
                                     (a unique start of the uuid will do; --traceback, --json)
    flowkit recover [--once]         resume the flows whose engine died
    flowkit resume FLOW_DETAIL_UUID  rebuild the flow and run it to its end
                                     (--retry-reverts: revert again after a failed revert;
                                     --repair: re-run atoms whose records are lost or unreadable)
    flowkit graph module:factory     draw a flow (Graphviz DOT, SVG or PNG)
    flowkit signal FLOW_DETAIL_UUID NAME [--value JSON] [--key KEY]
                                     send a flow detail a signal (flowkit.signals.send)
    flowkit retry FLOW_DETAIL_UUID [ATOM]
                                     a BROKEN flow: run its broken atoms (or ATOM) again
    flowkit revert FLOW_DETAIL_UUID  a BROKEN flow: revert it instead
    flowkit cancel FLOW_DETAIL_UUID [--no-revert] [--reason TEXT]
                                     cancel a flow, running or not (flowkit.cancellation.request)

``flowkit --version`` and ``python -m flowkit`` work too; ``doc/command_line.rst``
describes every command and the JSON that ``--json`` prints.
Every command takes ``--backend URL``; the default is ``$FLOWKIT_BACKEND`` or,
when that is unset, the SQLite file ``flowkit.db`` in the current directory.
``logbooks``, ``show`` and ``graph --flow-detail`` open the backend read-only:
they never create a database or a schema ("no database at PATH", "not a
flowkit database (schema version none)" instead) and never write.
``resume`` exits 0 when the flow ends SUCCESS, 1 when it ends REVERTED or
FAILURE, 3 when it ends SUSPENDED, 4 when it ends BROKEN (a retry policy gave
up: ``retry`` and ``revert`` are the ways on, and exit the same way); usage
errors and missing records exit 2.
``graph`` needs no backend unless ``--flow-detail`` asks for a run's states.
``signal`` exits 0 once the signal is stored, and also when the flow detail
already got it with the same ``--key`` (it says so; nothing changes), 1 when
it already got that signal otherwise, 2 for a value that is not JSON or a
flow detail that does not exist.
``cancel`` exits 0 once the request is stored (the engine running the flow,
in any process, stops it within a second; a flow no engine runs is cancelled
when it is next run), and also when a request is pending already (it says
so), 1 when the flow has ended, 2 for a flow detail that does not exist.

``resume``, ``graph`` and ``conductor`` rebuild flows from what a logbook
records, which is data: the factory it names must be registered in this
process (see :mod:`flowkit.factories`).  Installed ``flowkit.factories`` entry
points are known; ``--import MODULE`` (repeatable) imports a module of yours
whose factories register themselves with ``@flow_factory``; ``--allow-module
PREFIX`` (repeatable) lets factories under that module be imported by name.
What is given on the command line is trusted; what the logbook says is not.

``logbooks`` and ``show`` exit 1 when they found rows they could not read
(listed after the table).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from flowkit import _cli_plan, cancellation, signals, states
from flowkit._cli_common import (
    STATE_STYLES,
    CommandError,
    Handler,
    cut,
    engine_option,
    engine_options,
    factory_arguments,
    factory_options,
    import_factory,
    on_closed_pipe,
    paint,
    prepare_factories,
    put_cwd_on_path,
    table,
    wants_colour,
)
from flowkit._cli_flows import add_commands as flows_commands
from flowkit._cli_flows import flow_json, flow_uuid, print_failures, resolve_flow_id
from flowkit._cli_recover import add_commands as recover_commands
from flowkit._cli_resources import add_commands as resources_commands
from flowkit.conductors.cli import add_commands as conductor_commands
from flowkit.exceptions import CorruptLogbook, FlowkitError, InvalidState, NotFound, SignalAlreadySent
from flowkit.persistence._integrity import ATOM_COUNT_KEY, REPAIRS_KEY, UNREADABLE_KEY, unreadable_problems
from flowkit.persistence.backends import fetch
from flowkit.persistence.base import Backend
from flowkit.persistence.models import AtomDetail, FlowDetail
from flowkit.policies import ATTEMPTS_KEY, ERRORS_KEY
from flowkit.types.failure import Failure
from flowkit.waits import WAIT_KEY
from flowkit.web._liveness import holder_alive
from flowkit.web._model import INTERRUPTED
from flowkit.web.cli import add_commands as web_commands

__all__ = ["main", "DEFAULT_BACKEND", "BACKEND_ENV", "EXIT_CODES"]

#: The backend used when neither ``--backend`` nor ``$FLOWKIT_BACKEND`` is given.
DEFAULT_BACKEND = "sqlite:///flowkit.db"
#: The environment variable that overrides :data:`DEFAULT_BACKEND`.
BACKEND_ENV = "FLOWKIT_BACKEND"

#: ``flowkit resume``'s exit status for each final flow state.
EXIT_CODES = {
    states.SUCCESS: 0,
    states.REVERTED: 1,
    states.FAILURE: 1,
    states.SUSPENDED: 3,
    states.BROKEN: 4,
}
_EXIT_USAGE = 2

# -- formatting -------------------------------------------------------------------


def _value(value: Any) -> str:
    if value is None:
        return "-"
    try:
        return cut(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        return cut(repr(value))


def _failure(failure: Failure | None) -> str:
    if failure is None:
        return "-"
    return cut("%s: %s" % (failure.exception_type_name.rsplit(".", 1)[-1], failure.exception_str))


def _was_cut(failure: Failure | None) -> bool:
    """Whether the table's one line of ``failure`` leaves part of its message out."""
    if failure is None:
        return False
    whole = "%s: %s" % (failure.exception_type_name.rsplit(".", 1)[-1], failure.exception_str)
    return _failure(failure) != whole


def _duration(detail: AtomDetail) -> str:
    # Timing listeners record seconds under "duration" (TaskFlow's key).
    duration = detail.meta.get("duration")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        return "%.3fs" % duration
    return "-"


_TIMELINE_WIDTH = 24


def _seconds(detail: AtomDetail | FlowDetail, key: str) -> float | None:
    value = detail.meta.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _timeline(fd: FlowDetail) -> list[str]:
    """A bar per timed atom: where it started and how long it ran, on one scale."""
    spans = []
    for ad in fd:
        duration = _seconds(ad, "duration")
        if duration is not None:
            spans.append((ad.name, _seconds(ad, "start_offset"), duration))
    if not spans:
        return []
    # Without start offsets (timed by another tool) every bar starts at zero.
    end = max((start or 0.0) + duration for _, start, duration in spans)
    total = max(end, _seconds(fd, "duration") or 0.0) or 1.0
    name_width = max(len(name) for name, _, _ in spans)
    lines = ["timeline (%.3fs)" % (total,)]
    for name, start, duration in spans:
        first = int(_TIMELINE_WIDTH * (start or 0.0) / total)
        length = max(1, round(_TIMELINE_WIDTH * duration / total))
        length = min(length, _TIMELINE_WIDTH - first) or 1
        bar = " " * first + "=" * length
        lines.append("  %s |%s| %.3fs" % (name.ljust(name_width), bar.ljust(_TIMELINE_WIDTH), duration))
    return lines


def _attempt_history(fd: FlowDetail) -> list[str]:
    """One line per recorded failed attempt of each atom with a retry policy (stored data: checked)."""
    lines: list[str] = []
    for ad in fd:
        attempts = ad.meta.get(ATTEMPTS_KEY)
        if not isinstance(attempts, list) or not attempts:
            continue
        errors = ad.meta.get(ERRORS_KEY)
        lines.append("  %s (errors since last success: %s)" % (ad.name, errors if isinstance(errors, int) else "?"))
        for record in attempts:
            if not isinstance(record, dict):
                continue
            data = record.get("failure")
            try:
                failure = _failure(Failure.from_dict(data)) if isinstance(data, dict) else "?"
            except (ValueError, TypeError):
                failure = "?"
            started, ended = record.get("started"), record.get("ended")
            took = (
                "%.3fs" % (ended - started)
                if isinstance(started, (int, float)) and isinstance(ended, (int, float))
                else "?"
            )
            lines.append("    attempt %s  ended %s  took %s  %s" % (record.get("attempt"), _when(ended), took, failure))
        wait = ad.meta.get(WAIT_KEY) if ad.state == states.WAITING else None
        if isinstance(wait, dict) and "retry" in wait:
            lines.append("    attempt %s due %s" % (wait.get("retry"), _when(wait.get("until"))))
    return lines


def _when(seconds: Any) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return "?"
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "?"


def _state(value: Any) -> str:
    return str(value) if value else str(states.PENDING)


# -- commands ---------------------------------------------------------------------


def _open(url: str, *, read_only: bool) -> Backend:
    return fetch({"connection": url, "read_only": read_only})


def _find_flow_detail(backend: Backend, uuid: str, *, salvage: bool = False) -> FlowDetail:
    """The flow detail ``uuid`` (or the one whose uuid starts with it); with ``salvage``,
    undecodable atom rows come back as marked stand-ins (SQL only)."""
    import inspect

    uuid = flow_uuid(backend, uuid)
    with backend.get_connection() as conn:
        try:
            if salvage and "salvage" in inspect.signature(conn.get_flow_details).parameters:
                found: FlowDetail = conn.get_flow_details(uuid, salvage=True)  # type: ignore[call-arg]
                return found
            return conn.get_flow_details(uuid)
        except NotFound:
            raise CommandError("no flow detail %r in this backend (try 'flowkit flows')" % (uuid,)) from None


def _cmd_logbooks(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    rows = []
    problems: list[str] = []
    with backend.get_connection() as conn:
        # Lazily: the listing needs no atom details, so an unreadable one does not hide it.
        books = sorted(conn.get_logbooks(lazy=True), key=lambda book: book.created_at)
        for book in books:
            try:
                flows: list[FlowDetail | None] = [*conn.get_flows_for_book(book.uuid, lazy=True)] or [None]
            except CorruptLogbook as bad:
                problems.append(str(bad))
                created = book.created_at.strftime("%Y-%m-%d %H:%M:%S")
                rows.append([book.uuid, cut(book.name, 32), created, "?", "?", "UNREADABLE"])
                continue
            for fd in flows:
                rows.append(
                    [
                        book.uuid,
                        cut(book.name, 32),
                        book.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                        fd.uuid if fd is not None else "-",
                        cut(fd.name, 32) if fd is not None else "-",
                        _state(fd.state) if fd is not None else "-",
                    ]
                )
    if not rows:
        out.write("no logbooks\n")
        return 0
    out.write(table(["LOGBOOK", "NAME", "CREATED", "FLOW DETAIL", "FLOW", "STATE"], rows) + "\n")
    return _report_problems(problems, out)


def _report_problems(problems: Sequence[str], out: TextIO) -> int:
    if not problems:
        return 0
    out.write("\nproblems:\n")
    for problem in problems:
        out.write("  %s\n" % (problem,))
    return 1


def _cmd_show(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    book, lazy = resolve_flow_id(backend, args.flow_detail)
    fd = _find_flow_detail(backend, lazy.uuid, salvage=True)
    unreadable = unreadable_problems(fd)
    unreadable_uuids = {p.uuid for p in unreadable}
    fd.meta.pop(UNREADABLE_KEY, None)
    if args.json:
        out.write(flow_json(backend, book, fd))
        return 1 if unreadable else 0
    factory = fd.meta.get("factory")
    out.write("flow detail %s\n" % (fd.uuid,))
    out.write("  flow:    %s\n" % (fd.name,))
    colour = wants_colour(out)
    flow_state = _state(fd.state)
    liveness = ""
    if flow_state in (states.RUNNING, states.REVERTING) and holder_alive(backend, fd.uuid) is False:
        liveness = "  %s: no engine runs it (resume with: flowkit resume %s)" % (
            paint(INTERRUPTED, STATE_STYLES[INTERRUPTED], colour),
            fd.uuid,
        )
    out.write("  state:   %s%s\n" % (paint(flow_state, STATE_STYLES.get(flow_state), colour), liveness))
    flow_duration = _seconds(fd, "duration")
    if flow_duration is not None:
        out.write("  took:    %.3fs\n" % (flow_duration,))
    if isinstance(factory, dict):
        out.write("  factory: %s\n" % (factory.get("name"),))
    rows = []
    for ad in fd:
        failure = ad.failure if ad.failure is not None else ad.revert_failure
        result = ad.results
        if ad.atom_type == "retry" and isinstance(result, list):
            # A controller's results are [result, failures] per attempt; show the latest.
            result = result[-1][0] if result else None
        rows.append(
            [
                ad.name,
                ad.atom_type,
                "" if ad.version is None else "%s.%s" % tuple(ad.version[:2]),
                "UNREADABLE" if ad.uuid in unreadable_uuids else _state(ad.state),
                str(ad.intention),
                _value(result),
                _failure(failure),
                _duration(ad),
            ]
        )
    out.write("\n")

    def style(column: int, cell: str) -> str | None:
        return STATE_STYLES.get(cell) if column == 3 else None

    headers = ["ATOM", "TYPE", "VERSION", "STATE", "INTENTION", "RESULT", "FAILURE", "DURATION"]
    out.write(table(headers, rows, style, colour=colour) + "\n")
    timeline = _timeline(fd)
    if timeline:
        out.write("\n" + "\n".join(timeline) + "\n")
    history = _attempt_history(fd)
    if history:
        out.write("\nfailed attempts (retry policies):\n" + "\n".join(history) + "\n")
    if args.traceback:
        print_failures(backend, book, fd, out)
    elif any(_was_cut(ad.failure) or _was_cut(ad.revert_failure) for ad in fd):
        out.write("\n(failures are cut: 'flowkit show %s --traceback' prints them whole)\n" % (fd.uuid,))
    problems = [str(p) for p in unreadable]
    recorded = fd.meta.get(ATOM_COUNT_KEY)
    if isinstance(recorded, int) and recorded > len(fd):
        problems.append(
            "flow detail %s recorded %d atom details but has %d: %d lost (resuming it is refused "
            "unless 'flowkit resume --repair')" % (fd.uuid, recorded, len(fd), recorded - len(fd))
        )
    return _report_problems(problems, out)


def _cmd_graph(args: argparse.Namespace, out: TextIO) -> int:
    from flowkit import graphs

    fmt = args.format
    if fmt is None:
        suffix = os.path.splitext(args.output or "")[1].lstrip(".").lower()
        fmt = suffix if suffix in graphs.FORMATS else "dot"
    allowed = prepare_factories(args)
    fd: FlowDetail | None = None
    if args.flow_detail is not None:
        with _open(args.backend, read_only=True) as backend:
            fd = _find_flow_detail(backend, args.flow_detail)
    if args.factory is not None:
        factory = import_factory(args.factory)
        try:
            flow = factory(**factory_arguments(args.arg))
        except Exception as error:
            raise CommandError("factory %r failed: %s: %s" % (args.factory, type(error).__name__, error)) from error
    elif fd is not None:
        from flowkit.engines import flow_from_detail

        flow = flow_from_detail(fd, allowed_modules=allowed)
    else:
        raise CommandError("give a flow factory ('module:factory') or --flow-detail UUID")
    text = graphs.to_dot(flow, flow_detail=fd)
    if fmt == "dot":
        if args.output:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            out.write(text)
        return 0
    picture = graphs.render(text, fmt)
    if args.output:
        with open(args.output, "wb") as handle:
            handle.write(picture)
    elif fmt == "svg":
        out.write(picture.decode("utf-8"))
    else:
        if wants_colour(out):
            raise CommandError("not writing PNG to a terminal; use --output FILE or a pipe")
        out.flush()
        binary: Any = getattr(out, "buffer", out)
        binary.write(picture)
    return 0


def _repairs(fd: FlowDetail) -> list[dict[str, Any]]:
    found = fd.meta.get(REPAIRS_KEY)
    return list(found) if isinstance(found, list) else []


def _cmd_resume(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    from flowkit.engines import load_from_detail

    allowed = prepare_factories(args)
    # Salvaged: an unreadable atom row is then one of the problems the check
    # before resuming names (and --repair re-runs), not a bare decoding error.
    fd = _find_flow_detail(backend, args.flow_detail, salvage=True)
    retry_reverts = bool(args.retry_reverts)
    if fd.state in (states.SUCCESS, states.REVERTED, states.FAILURE) and not retry_reverts:
        # Running a finished flow again would start it over; that is not a resume.
        hint = ""
        if fd.state == states.FAILURE and any(ad.state == states.REVERT_FAILURE for ad in fd):
            hint = " (a revert failed: 'flowkit resume --retry-reverts %s' tries the reverts again)" % (fd.uuid,)
        out.write("flow %r (%s) already ended %s; nothing to resume%s\n" % (fd.name, fd.uuid, fd.state, hint))
        return EXIT_CODES[states.State(fd.state)]
    if args.dry_run:
        return _cli_plan.print_plan(fd, args, allowed, out)
    options = engine_options(args)
    migrate = _cli_plan.migration_from_args(args)
    before = _repairs(fd)
    try:
        engine = load_from_detail(
            fd, backend=backend, allowed_modules=allowed, repair=args.repair, migrate=migrate, **options
        )
    except ValueError as problem:
        raise CommandError(str(problem)) from problem
    for record in _repairs(fd)[len(before) :]:
        out.write("repairing flow %r (%s): re-running %s\n" % (fd.name, fd.uuid, ", ".join(map(repr, record["atoms"]))))
        for text in record["problems"]:
            out.write("  %s\n" % (text,))
    if retry_reverts:
        engine.retry_reverts()  # InvalidState (exit 2) unless a revert failed
        out.write("retrying the failed reverts of flow %r (%s)\n" % (fd.name, fd.uuid))
    out.write("resuming flow %r (%s) from %s\n" % (fd.name, fd.uuid, _state(fd.state)))
    return _run_and_report(engine, fd, out)


def _cmd_retry_or_revert(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    from flowkit.engines import load_from_detail

    allowed = prepare_factories(args)
    fd = _find_flow_detail(backend, args.flow_detail)
    if fd.state != states.BROKEN:
        raise CommandError(
            "flow %r (%s) is %s, not BROKEN: 'flowkit %s' is for a flow whose retry policy gave up"
            % (fd.name, fd.uuid, fd.state, args.command)
        )
    engine = load_from_detail(fd, backend=backend, allowed_modules=allowed, **engine_options(args))
    if args.command == "retry":
        engine.retry(args.atom)  # InvalidState (exit 2) when that atom is not BROKEN
        out.write(
            "retrying %s of flow %r (%s)\n"
            % ("atom %r" % args.atom if args.atom else "the broken atoms", fd.name, fd.uuid)
        )
    else:
        engine.revert()
        out.write("reverting flow %r (%s)\n" % (fd.name, fd.uuid))
    return _run_and_report(engine, fd, out)


def _run_and_report(engine: Any, fd: FlowDetail, out: TextIO) -> int:

    def report(state: Any, details: dict[str, Any]) -> None:
        if state in (states.SUCCESS, states.FAILURE, states.REVERTED, states.REVERT_FAILURE, states.BROKEN):
            out.write("  %s: %s\n" % (details["atom_name"], state))

    engine.atom_notifier.register("*", report)
    failure: str | None = None
    try:
        engine.run()
    except Exception as raised:  # the flow's own failure: reported, not a crash of the command
        failure = "%s: %s" % (type(raised).__name__, cut(str(raised), 200))
    final = engine.storage.get_flow_state()
    out.write("flow %r (%s): %s\n" % (fd.name, fd.uuid, final))
    if failure is not None:
        out.write("  failure: %s\n" % (failure,))
    return EXIT_CODES.get(final, 1)


def _refuse_constant(name: str) -> Any:
    raise ValueError("%s is not a JSON number" % (name,))


def _cmd_signal(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    value = None
    if args.value is not None:
        try:
            value = json.loads(args.value, parse_constant=_refuse_constant)
        except ValueError as error:
            raise CommandError("--value is not JSON: %s" % (error,)) from None
    uuid = flow_uuid(backend, args.flow_detail)
    try:
        stored = signals.send(backend, uuid, args.name, value, idempotency_key=args.key)
    except NotFound:  # deleted since it was found
        raise CommandError("no flow detail %r in this backend (try 'flowkit flows')" % (uuid,)) from None
    except TypeError as error:
        raise CommandError(str(error)) from None
    except SignalAlreadySent as error:
        sys.stderr.write("flowkit: %s\n" % (error,))
        return 1
    if stored:
        out.write("sent signal %r to flow detail %s\n" % (args.name, uuid))
    else:
        out.write(
            "signal %r was already sent to flow detail %s with key %r; nothing changed\n"
            % (args.name, uuid, args.key)
        )
    return 0


def _cmd_cancel(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    revert = not args.no_revert
    uuid = flow_uuid(backend, args.flow_detail)
    try:
        stored = cancellation.request(backend, uuid, revert=revert, reason=args.reason)
    except NotFound:  # deleted since it was found
        raise CommandError("no flow detail %r in this backend (try 'flowkit flows')" % (uuid,)) from None
    except InvalidState as error:
        sys.stderr.write("flowkit: %s\n" % (error,))
        return 1
    if stored:
        out.write("asked flow detail %s to stop and %s\n" % (uuid, "revert" if revert else "suspend"))
    else:
        out.write("flow detail %s has a cancel request pending already; nothing changed\n" % (uuid,))
    return 0


# -- entry point ------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    default = os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND
    backend_help = "logbook backend URL (default: $%s or %s; now %s)" % (BACKEND_ENV, DEFAULT_BACKEND, default)
    parser = argparse.ArgumentParser(prog="flowkit", description="Inspect flowkit logbooks and resume flows from them.")
    # The package's own __version__: loaded before any of its modules, so read without importing it upward.
    version = getattr(sys.modules.get("flowkit"), "__version__", "unknown")
    parser.add_argument("--version", action="version", version="flowkit %s" % (version,))
    parser.add_argument("--backend", default=default, metavar="URL", help=backend_help)
    # Accepted after the command too; SUPPRESS keeps a subcommand's default from
    # overwriting a --backend given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", default=argparse.SUPPRESS, metavar="URL", help=backend_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("logbooks", parents=[common], help="list logbooks and their flow details")
    show = commands.add_parser("show", parents=[common], help="show a flow detail's atoms")
    show.add_argument("flow_detail", metavar="FLOW_DETAIL_UUID", help="its uuid, or a unique start of it")
    show.add_argument("--traceback", action="store_true", help="print every failure whole, with its traceback")
    show.add_argument(
        "--json", action="store_true", help="print the flow detail as JSON (schema: doc/command_line.rst)"
    )
    factories = factory_options()
    resume = commands.add_parser("resume", parents=[common, factories], help="resume a flow from its logbook")
    resume.add_argument("flow_detail", metavar="FLOW_DETAIL_UUID")
    engine_option(resume)
    resume.add_argument(
        "--retry-reverts",
        action="store_true",
        help="for a flow that ended FAILURE because a revert failed: revert those atoms again, then the rest",
    )
    resume.add_argument(
        "--repair",
        action="store_true",
        help="resume even if atom records are lost or unreadable: re-run those atoms (prints them)",
    )
    _cli_plan.add_resume_options(resume)
    graph = commands.add_parser("graph", parents=[common, factories], help="draw a flow's execution graph")
    graph.add_argument(
        "factory", nargs="?", metavar="MODULE:FACTORY", help="function returning the flow (default: the flow detail's)"
    )
    graph.add_argument("--format", choices=("dot", "svg", "png"), default=None, help="default: from --output, or dot")
    graph.add_argument("--output", "-o", metavar="FILE", default=None, help="write here instead of standard output")
    graph.add_argument("--flow-detail", metavar="UUID", default=None, help="colour atoms by this run's states")
    graph.add_argument(
        "--arg", action="append", default=[], metavar="K=V",
        help="call FACTORY with keyword K set to V (V read as JSON, else as text; repeatable)",
    )  # fmt: skip
    signal = commands.add_parser("signal", parents=[common], help="send a flow detail a signal")
    signal.add_argument("flow_detail", metavar="FLOW_DETAIL_UUID", help="its uuid, or a unique start of it")
    signal.add_argument("name", metavar="NAME", help="the signal's name (what a WaitFor atom waits for)")
    signal.add_argument("--value", metavar="JSON", default=None, help="the signal's value as JSON (default: null)")
    signal.add_argument(
        "--key", metavar="KEY", default=None, help="idempotency key: sending again with the same key is a no-op"
    )
    retry = commands.add_parser(
        "retry", parents=[common, factories], help="run a BROKEN flow's broken atoms (or ATOM) again"
    )
    retry.add_argument("flow_detail", metavar="FLOW_DETAIL_UUID")
    retry.add_argument("atom", metavar="ATOM", nargs="?", default=None, help="only this broken atom")
    engine_option(retry)
    revert = commands.add_parser("revert", parents=[common, factories], help="revert a BROKEN flow")
    revert.add_argument("flow_detail", metavar="FLOW_DETAIL_UUID")
    engine_option(revert)
    cancel = commands.add_parser("cancel", parents=[common], help="cancel a flow, running or not")
    cancel.add_argument("flow_detail", metavar="FLOW_DETAIL_UUID", help="its uuid, or a unique start of it")
    cancel.add_argument(
        "--no-revert", action="store_true", help="suspend the flow instead of reverting what ran (resume it later)"
    )
    cancel.add_argument(
        "--reason", default="cancelled from the command line", help="why (shown in the error it raises)"
    )
    return parser


_COMMANDS = {
    "logbooks": _cmd_logbooks,
    "show": _cmd_show,
    "resume": _cmd_resume,
    "signal": _cmd_signal,
    "retry": _cmd_retry_or_revert,
    "revert": _cmd_retry_or_revert,
    "cancel": _cmd_cancel,
}
#: Commands that only read: their backend is opened with ``read_only=True``.
_READ_ONLY = frozenset({"logbooks", "show"})


#: The command groups: each adds its subcommands to ``commands`` and returns
#: ``{name: handler(args, out) -> exit status}``; its handlers open whatever
#: they need (a job board, a backend) themselves.
_COMMAND_GROUPS: tuple[Callable[[Any, argparse.ArgumentParser], dict[str, Handler]], ...] = (
    conductor_commands,
    web_commands,
    _cli_plan.add_commands,
    flows_commands,
    recover_commands,
    resources_commands,
)


def _extensions(parser: argparse.ArgumentParser) -> dict[str, Handler]:
    handlers: dict[str, Handler] = {}
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    common = argparse.ArgumentParser(add_help=False)
    for add_commands in _COMMAND_GROUPS:
        handlers.update(add_commands(commands, common))
    return handlers


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowkit`` command with ``argv`` (default: ``sys.argv[1:]``); return its exit status."""
    put_cwd_on_path()
    parser = _parser()
    extra = _extensions(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits on --help and usage errors
        return int(stop.code or 0)
    try:
        if args.command in extra:
            status = extra[args.command](args, sys.stdout)
        elif args.command == "graph":  # opens a backend only for --flow-detail
            status = _cmd_graph(args, sys.stdout)
        else:
            read_only = args.command in _READ_ONLY or getattr(args, "dry_run", False)  # a plan writes nothing
            with _open(args.backend, read_only=read_only) as backend:
                status = _COMMANDS[args.command](backend, args, sys.stdout)
        # Output still buffered meets a closed pipe here, not in the interpreter's flush at exit.
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # the reader went away (| head): not an error of the command
        return on_closed_pipe()
    except (CommandError, FlowkitError, ValueError, OSError, ImportError) as error:
        sys.stderr.write("flowkit: %s\n" % (error,))
        return _EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
