"""The ``flowkit recover`` command: resume the flows whose engine died.

::

    flowkit recover [--once] [--interval SECONDS] [--board URL]
                    [--engine serial|parallel|distributed] [--import MODULE] [--allow-module PREFIX]

A flow detail that reads RUNNING or REVERTING while no engine holds its lock
was left so by an engine that died (:mod:`flowkit.web._liveness` tells which,
without taking the lock).  ``recover`` resumes each such flow from its
logbook, rebuilt through the factories this process trusts (entry points,
``--import``, ``--allow-module``; see :mod:`flowkit.factories`), as DBOS
resumes pending workflows when it starts.  Two ``recover`` processes may run
at once: the flow lock lets one of them resume a flow, the other passes it.

A flow that belongs to a job is its conductor's to resume (another conductor
reclaims the job once its lease expires): with ``--board URL`` such flows are
left alone.  Flows whose liveness cannot be told (the in-memory backend) are
never resumed.

``--once`` looks once, resumes what it found and exits: 0 when every flow it
resumed ended SUCCESS (or there was none), 1 when one ended otherwise or could
not be rebuilt.  Without it, it looks again every ``--interval`` seconds until
SIGTERM or SIGINT, which it says in its log; a flow it is running then is
suspended and stays resumable.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from flowkit import states
from flowkit._cli_common import (
    CommandError,
    Handler,
    board_conf,
    engine_option,
    engine_options,
    factory_options,
    prepare_factories,
)
from flowkit.exceptions import CorruptLogbook, FlowDetailLocked, FlowkitError
from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail
from flowkit.web._liveness import holder_alive

__all__ = ["add_commands", "interrupted_flows", "recover_pass", "Stop", "DEFAULT_INTERVAL"]

#: Seconds between two looks of ``flowkit recover`` without ``--once``.
DEFAULT_INTERVAL = 30.0

_ACTIVE = (states.RUNNING, states.REVERTING)


def add_commands(commands: Any, common: argparse.ArgumentParser) -> dict[str, Handler]:
    """Add ``recover`` to the ``flowkit`` command's subparsers."""
    recover = commands.add_parser(
        "recover", parents=[common, factory_options()], help="resume flows whose engine died (RUNNING, lock free)"
    )
    recover.add_argument("--backend", default=argparse.SUPPRESS, metavar="URL", help="logbook backend URL")
    recover.add_argument("--once", action="store_true", help="look once, resume what is found, exit")
    recover.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL, metavar="S",
        help="without --once: look again every S seconds (default %(default)s)",
    )  # fmt: skip
    recover.add_argument(
        "--board", default=None, metavar="URL",
        help="leave alone the flows of this board's unfinished jobs (their conductors resume them)",
    )  # fmt: skip
    recover.add_argument("--board-name", default="flowkit", help="board name (default %(default)s)")
    engine_option(recover)
    return {"recover": _cmd_recover}


def interrupted_flows(backend: Backend, *, skip_books: frozenset[str] = frozenset()) -> Iterator[FlowDetail]:
    """The flow details (lazy) that read RUNNING or REVERTING while no engine holds their lock."""
    with backend.get_connection() as conn:
        books = list(conn.get_logbooks(lazy=True))
        found: list[FlowDetail] = []
        for book in books:
            if book.uuid in skip_books:
                continue
            try:
                found.extend(fd for fd in conn.get_flows_for_book(book.uuid, lazy=True) if fd.state in _ACTIVE)
            except CorruptLogbook:
                continue  # 'flowkit flows' lists it among its problems
    for fd in found:
        if holder_alive(backend, fd.uuid) is False:
            yield fd


def _job_books(args: argparse.Namespace, backend: Backend) -> frozenset[str]:
    if args.board is None:
        return frozenset()
    from flowkit.jobs.backends import fetch

    board = fetch(args.board_name, board_conf(args.board), persistence=backend).connect()
    try:
        return frozenset(job.book_uuid for job in board.iterjobs() if job.book_uuid)
    finally:
        board.close()


class Stop:
    """SIGTERM/SIGINT: stop looking, and suspend the flow being resumed (it stays resumable)."""

    def __init__(self, out: TextIO) -> None:
        self.event = threading.Event()
        self.engine: Any = None
        self._out = out

    def __call__(self, signum: int, frame: Any) -> None:
        self.event.set()
        engine = self.engine
        what = "suspending flow %s and stopping" % (engine.flow_detail.uuid,) if engine is not None else "stopping"
        try:
            self._out.write("received %s: %s\n" % (signal.Signals(signum).name, what))
            self._out.flush()
        except (OSError, ValueError, RuntimeError):  # a log that cannot be written must not stop the stop
            pass
        if engine is not None:
            # From another thread: the handler interrupts the engine's own thread, which may hold its locks.
            threading.Thread(target=engine.suspend, name="flowkit-recover-stop", daemon=True).start()


def _resume(
    backend: Backend, fd: FlowDetail, options: dict[str, Any], allowed: Any, stop: Stop | None, out: TextIO
) -> bool:
    """Resume ``fd``; True when it ended SUCCESS, was suspended by a stop, or another process took it first."""
    from flowkit.engines import load_from_detail

    with backend.get_connection() as conn:
        fd = conn.get_flow_details(fd.uuid)
    if fd.state not in _ACTIVE or holder_alive(backend, fd.uuid) is not False:
        return True  # resumed or finished by someone else since the look
    out.write("recovering flow %r (%s) from %s\n" % (fd.name, fd.uuid, fd.state))
    out.flush()
    try:
        engine = load_from_detail(fd, backend=backend, allowed_modules=allowed, **options)
    except FlowDetailLocked:
        out.write("  flow %r (%s) is being resumed by another process; left to it\n" % (fd.name, fd.uuid))
        return True
    except (FlowkitError, ValueError, ImportError) as error:
        out.write("  cannot rebuild flow %r (%s): %s\n" % (fd.name, fd.uuid, error))
        return False
    if stop is not None:
        stop.engine = engine
    failure = None
    try:
        engine.run()
    except FlowDetailLocked:
        out.write("  flow %r (%s) is being resumed by another process; left to it\n" % (fd.name, fd.uuid))
        return True
    except Exception as raised:  # the flow's own failure: reported, the next flow is still recovered
        failure = "%s: %s" % (type(raised).__name__, " ".join(str(raised).split())[:200])
    finally:
        if stop is not None:
            stop.engine = None
    final = engine.storage.get_flow_state()
    out.write("  flow %r (%s): %s\n" % (fd.name, fd.uuid, final))
    if failure is not None:
        out.write("  failure: %s\n" % (failure,))
    out.flush()
    # Suspended because this process was told to stop: resumable, and not a failure of the flow.
    stopped = stop is not None and stop.event.is_set() and final == states.SUSPENDED
    return final == states.SUCCESS or stopped


def recover_pass(
    backend: Backend,
    *,
    skip_books: frozenset[str],
    options: dict[str, Any],
    allowed: Any,
    out: TextIO,
    stop: Stop | None = None,
) -> tuple[int, bool]:
    """One look: resume each interrupted flow not in ``skip_books``; ``(how many, all ended SUCCESS)``."""
    found = 0
    all_well = True
    for fd in interrupted_flows(backend, skip_books=skip_books):
        if stop is not None and stop.event.is_set():
            break
        found += 1
        all_well = _resume(backend, fd, options, allowed, stop, out) and all_well
    return found, all_well


def _cmd_recover(args: argparse.Namespace, out: TextIO) -> int:
    from flowkit.persistence.backends import fetch

    if args.interval <= 0:
        raise CommandError("--interval must be positive, got %r" % (args.interval,))
    allowed = prepare_factories(args)
    options = engine_options(args)  # a bad --address is a usage error before anything runs
    stop = Stop(out)
    previous = _install(stop) if not args.once else {}
    try:
        with fetch({"connection": args.backend}) as backend:
            all_well = True
            if not args.once:
                out.write("recover: looking for interrupted flows every %gs (pid %d)\n" % (args.interval, os.getpid()))
                out.flush()
            while not stop.event.is_set():
                found, well = recover_pass(
                    backend, skip_books=_job_books(args, backend), options=options, allowed=allowed, out=out, stop=stop
                )
                all_well = all_well and well
                if args.once:
                    if not found:
                        out.write("no interrupted flows\n")
                    break
                stop.event.wait(args.interval)
            return 0 if all_well else 1
    finally:
        _restore(previous)


def _install(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
