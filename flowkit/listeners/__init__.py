"""Listeners: watch what an engine does, through its notifiers.

Each is a context manager over an engine (``with PrintingListener(engine):
engine.run()``) and never breaks the flow it watches: a listener that raises
is logged and disabled.  One concept per module, at TaskFlow's paths:

- :mod:`flowkit.listeners.base`: :class:`~flowkit.listeners.base.Listener` and
  :class:`~flowkit.listeners.base.DumpingListener` to build your own;
- :mod:`flowkit.listeners.logging`: :class:`~flowkit.listeners.logging.LoggingListener`,
  :class:`~flowkit.listeners.logging.DynamicLoggingListener` (stdlib logging, with masked keys);
- :mod:`flowkit.listeners.printing`: :class:`~flowkit.listeners.printing.PrintingListener`;
- :mod:`flowkit.listeners.timing`: :class:`~flowkit.listeners.timing.DurationListener`,
  :class:`~flowkit.listeners.timing.PrintingDurationListener` (durations recorded in the logbook);
- :mod:`flowkit.listeners.capturing`: :class:`~flowkit.listeners.capturing.CaptureListener` (events as
  strings, for tests);
- :mod:`flowkit.listeners.progress`: :class:`~flowkit.listeners.progress.ProgressListener` (a live bar
  on a terminal);
- :mod:`flowkit.listeners.claims`: ``CheckingClaimListener`` (suspends an
  engine whose job's claim was lost).
"""

from flowkit.listeners.base import ANY, DumpingListener, Listener
from flowkit.listeners.capturing import CaptureListener
from flowkit.listeners.logging import DynamicLoggingListener, LoggingListener
from flowkit.listeners.printing import PrintingListener
from flowkit.listeners.progress import ProgressListener
from flowkit.listeners.timing import DurationListener, PrintingDurationListener

__all__ = [
    # building blocks
    "Listener",
    "DumpingListener",
    "ANY",
    # ready to use
    "LoggingListener",
    "DynamicLoggingListener",
    "PrintingListener",
    "DurationListener",
    "PrintingDurationListener",
    "CaptureListener",
    "ProgressListener",
]
