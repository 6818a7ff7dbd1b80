"""``--metrics-port`` / ``--metrics-host`` of ``flowkit conductor``: serve the process's metrics while it runs."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from flowkit._cli_common import CommandError

if TYPE_CHECKING:
    from flowkit.metrics import MetricsServer

__all__ = ["add_metrics_options", "serving_metrics"]


def add_metrics_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--metrics-port`` and ``--metrics-host`` to ``parser``."""
    parser.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (0: a free port; needs flowkit[metrics])",
    )  # fmt: skip
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="HOST",
        help="address the metrics are served on (default %(default)s)",
    )  # fmt: skip


@contextlib.contextmanager
def serving_metrics(args: argparse.Namespace, out: TextIO) -> Iterator[MetricsServer | None]:
    """With ``--metrics-port``: record metrics and serve them until the block ends (enter it before the
    conductor is built, so the conductor is recorded); without it, nothing (None).

    Prints ``metrics at <url>``.  A missing ``prometheus_client`` is a
    :class:`~flowkit._cli_common.CommandError` naming the extra; a port in use an OSError.
    """
    if args.metrics_port is None:
        yield None
        return
    try:
        from flowkit.metrics import enable_metrics, serve_metrics

        enable_metrics()
    except ImportError as error:
        raise CommandError("--metrics-port: %s" % (error,)) from error
    server = serve_metrics(args.metrics_port, args.metrics_host)
    try:
        out.write("metrics at %s\n" % (server.url,))
        out.flush()
        yield server
    finally:
        server.close()
