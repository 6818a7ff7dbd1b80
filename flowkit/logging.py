"""TaskFlow's logger helpers: ``getLogger()`` and the level names, BLATHER included.

``BLATHER`` (5, also spelt ``TRACE``) sits below DEBUG, for messages too
chatty even for debugging.  ``getLogger(name)`` returns an adapter over
``logging.getLogger(name)`` with a ``trace()`` method that logs at that
level; a logger that has no handler gets a ``NullHandler``, so a library
using it never prints "no handlers could be found".

flowkit's own modules use the standard :mod:`logging` directly, each with a
module-level ``LOG``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = [
    "getLogger",
    # levels
    "BLATHER",
    "TRACE",
    "CRITICAL",
    "FATAL",
    "ERROR",
    "WARNING",
    "WARN",
    "INFO",
    "DEBUG",
    "NOTSET",
]

#: Below DEBUG: for what is too chatty even for debugging.
BLATHER = 5
#: The same level as :data:`BLATHER`.
TRACE = BLATHER

CRITICAL = logging.CRITICAL
FATAL = logging.FATAL
ERROR = logging.ERROR
WARNING = logging.WARNING
WARN = logging.WARNING
INFO = logging.INFO
DEBUG = logging.DEBUG
NOTSET = logging.NOTSET


class _TraceAdapter(logging.LoggerAdapter):
    """A logger adapter with ``trace()`` (and the old ``warn()`` spelling)."""

    def trace(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log ``msg`` at the :data:`TRACE` (BLATHER) level."""
        self.log(TRACE, msg, *args, **kwargs)

    def warn(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log ``msg`` at WARNING (the spelling older code uses)."""
        self.warning(msg, *args, **kwargs)


def getLogger(name: str = "flowkit", extra: Mapping[str, Any] | None = None) -> logging.LoggerAdapter:
    """A logger adapter for ``name`` with ``trace()``; ``extra`` is passed with every record."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return _TraceAdapter(logger, extra or {})
