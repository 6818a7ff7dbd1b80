"""Process-wide observers of engines and conductors: how metrics and tracing reach every one.

:func:`flowkit.metrics.enable_metrics` and :func:`flowkit.tracing.enable_tracing`
add a callable here; every :class:`~flowkit.engines.engine.Engine` (and
:class:`~flowkit.conductors.base.Conductor`) built afterwards is handed to it
once, when it is made, and registers its listeners on that object's own
notifiers.  With nothing added, an engine pays one empty-list check when it is
built and nothing per atom.

The engine also carries one map per observer kind that only tracing fills:
``Engine.trace_carriers`` (atom uuid -> W3C trace-context headers), read when
an atom is submitted so that its :class:`~flowkit.task.TaskContext` takes the
trace context to the thread, process or Dask worker that runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["ENGINE_OBSERVERS", "CONDUCTOR_OBSERVERS", "add", "remove", "observe"]

LOG = logging.getLogger(__name__)

#: Called with every engine built (after its notifiers exist).
ENGINE_OBSERVERS: list[Callable[[Any], None]] = []
#: Called with every conductor built (after its notifier exists).
CONDUCTOR_OBSERVERS: list[Callable[[Any], None]] = []


def add(observers: list[Callable[[Any], None]], observer: Callable[[Any], None]) -> None:
    """Add ``observer`` to ``observers`` unless it is there already."""
    if observer not in observers:
        observers.append(observer)


def remove(observers: list[Callable[[Any], None]], observer: Callable[[Any], None]) -> None:
    """Remove ``observer`` from ``observers`` (nothing if it is not there)."""
    if observer in observers:
        observers.remove(observer)


def observe(observers: list[Callable[[Any], None]], subject: Any) -> None:
    """Hand ``subject`` to each of ``observers`` (a copy of the list: one may remove itself).

    Watching never breaks what is watched: an observer that raises is logged, and ``subject``
    is built without it.
    """
    for observer in tuple(observers):
        try:
            observer(subject)
        except Exception:
            LOG.warning("observer %r failed on %r; it does not watch it", observer, subject, exc_info=True)
