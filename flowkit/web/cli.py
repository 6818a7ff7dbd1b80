"""The ``flowkit web`` command: serve the dashboard.

::

    flowkit web [--backend URL] [--board URL] [--host 127.0.0.1] [--port 8080]
                [--mask-key KEY ...] [--refresh SECONDS]
                [--allow-actions --token TOKEN] [--import MODULE] [--allow-module PREFIX]

The logbook backend is opened read-only, and the dashboard only reads, unless
``--allow-actions`` is given; actions then need ``--token`` (or
``$FLOWKIT_WEB_TOKEN``, which keeps it out of the process list).  It listens
on 127.0.0.1 unless ``--host`` says otherwise.  ``--import`` and
``--allow-module`` say which flow factories may rebuild a flow, for its graph
and for resuming it (see :mod:`flowkit.factories`).  It serves until SIGINT or
SIGTERM; flows it resumed are suspended then, and stay resumable.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from flowkit._cli_common import CommandError, Handler, factory_options, prepare_factories

__all__ = ["add_commands", "DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV"]

#: Where the dashboard listens unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"
#: The port it listens on unless told otherwise.
DEFAULT_PORT = 8080
#: The environment variable read for the actions' token when ``--token`` is not given.
TOKEN_ENV = "FLOWKIT_WEB_TOKEN"

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> dict[str, Handler]:
    """Add ``web`` to the ``flowkit`` command's subparsers."""
    web = commands.add_parser("web", parents=[common, factory_options()], help="serve the dashboard in a browser")
    # Also after the command (the global --backend is taken before it); SUPPRESS keeps that one.
    web.add_argument("--backend", default=argparse.SUPPRESS, metavar="URL", help="logbook backend URL")
    web.add_argument(
        "--board",
        default=None,
        metavar="URL",
        help="job board URL or kind, to show jobs and conductors (default: none)",
    )
    web.add_argument("--board-name", default="flowkit", help="board name (default %(default)s)")
    web.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)")
    web.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default %(default)s)")
    web.add_argument(
        "--mask-key", action="append", default=[], metavar="KEY",
        help="show the values of this key in results as *** (repeatable)",
    )  # fmt: skip
    web.add_argument("--refresh", type=int, default=5, metavar="S", help="pages reload every S seconds (0: never)")
    web.add_argument(
        "--allow-actions", action="store_true",
        help="allow resume, cancel, retry and signal, for holders of --token",
    )  # fmt: skip
    web.add_argument("--token", default=None, help="the token that allows actions (default: $%s)" % (TOKEN_ENV,))
    return {"web": _cmd_web}


def _cmd_web(args: argparse.Namespace, out: TextIO) -> int:
    try:
        import uvicorn

        from flowkit.web import create_app
    except ImportError as error:
        raise CommandError(
            "flowkit web needs the web extra (%s): pip install 'flowkit[web]'" % (error.name or error,)
        ) from None
    from flowkit.conductors.cli import board_conf
    from flowkit.jobs.backends import fetch as fetch_board
    from flowkit.persistence.backends import fetch

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.allow_actions and not token:
        raise CommandError("--allow-actions needs a token: give --token TOKEN or set $%s" % (TOKEN_ENV,))
    if token and not args.allow_actions:
        raise CommandError("--token is only used with --allow-actions; the dashboard is read-only without it")
    if not 0 <= args.port <= 65535:
        raise CommandError("--port must be between 0 and 65535, got %d" % (args.port,))
    allowed = prepare_factories(args)
    if args.allow_actions and args.host not in _LOOPBACK:
        sys.stderr.write(
            "flowkit web: actions are allowed and %s is not this machine only: the token travels in clear "
            "unless a TLS proxy is in front\n" % (args.host,)
        )
    with fetch({"connection": args.backend, "read_only": not args.allow_actions}) as backend:
        # Read once before serving: a missing database or an old schema is said here, not on every page.
        with backend.get_connection() as conn:
            next(iter(conn.get_logbooks(lazy=True)), None)
        board = None
        if args.board is not None:
            board = fetch_board(args.board_name, board_conf(args.board), persistence=backend).connect()
        try:
            app = create_app(
                backend,
                board=board,
                mask_keys=args.mask_key,
                allow_actions=args.allow_actions,
                token=token,
                allowed_modules=allowed,
                refresh=args.refresh,
                # On this machine only, requests must name it: no page elsewhere reads it by DNS rebinding.
                allowed_hosts=_LOOPBACK if args.host in _LOOPBACK else None,
            )
            mode = "actions allowed with the token" if args.allow_actions else "read-only"
            out.write("flowkit web: serving %s on http://%s:%d/ (%s)\n" % (args.backend, args.host, args.port, mode))
            out.flush()
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        finally:
            if board is not None:
                board.close()
    return 0
