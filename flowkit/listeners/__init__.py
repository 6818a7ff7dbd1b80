"""Listeners: watch what an engine does, through its notifiers.

Each is a context manager over an engine (``with PrintingListener(engine):
engine.run()``) and never breaks the flow it watches: a listener that raises
is logged and disabled.  One concept per module, at TaskFlow's paths:

- :mod:`flowkit.listeners.base`: :class:`Listener` and :class:`DumpingListener`
  to build your own;
- :mod:`flowkit.listeners.logging`: :class:`LoggingListener`,
  :class:`DynamicLoggingListener` (stdlib logging, with masked keys);
- :mod:`flowkit.listeners.printing`: :class:`PrintingListener`;
- :mod:`flowkit.listeners.timing`: :class:`DurationListener`,
  :class:`PrintingDurationListener` (durations recorded in the logbook);
- :mod:`flowkit.listeners.capturing`: :class:`CaptureListener` (events as
  strings, for tests);
- :mod:`flowkit.listeners.progress`: :class:`ProgressListener` (a live bar
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
