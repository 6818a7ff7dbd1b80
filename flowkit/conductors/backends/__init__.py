"""Choose a conductor by kind: ``fetch("blocking" | "nonblocking", name, board, ...)``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flowkit.conductors.backends.impl_blocking import BlockingConductor
from flowkit.conductors.backends.impl_nonblocking import NonBlockingConductor
from flowkit.conductors.base import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_CONDUCTOR_FAILURES,
    DEFAULT_SIGNAL_POLL,
    DEFAULT_WAIT_TIMEOUT,
    Conductor,
)
from flowkit.factories import FactoryRegistry
from flowkit.jobs.base import JobBoard
from flowkit.persistence.base import Backend

__all__ = ["fetch", "CONDUCTORS", "BlockingConductor", "NonBlockingConductor"]

#: The conductor kinds :func:`fetch` knows.
CONDUCTORS: Mapping[str, type[Conductor]] = {
    "blocking": BlockingConductor,
    "nonblocking": NonBlockingConductor,
}


def fetch(
    kind: str,
    name: str,
    board: JobBoard,
    *,
    persistence: Backend | str | Mapping[str, Any] | None = None,
    engine: str = "serial",
    engine_options: Mapping[str, Any] | None = None,
    max_simultaneous_jobs: int | None = None,
    ttl: float | None = None,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    factories: FactoryRegistry | None = None,
    allowed_modules: Iterable[str] | None = None,
    max_conductor_failures: int = DEFAULT_MAX_CONDUCTOR_FAILURES,
    backoff: float = DEFAULT_BACKOFF,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
    signal_poll: float = DEFAULT_SIGNAL_POLL,
) -> Conductor:
    """A conductor of ``kind`` named ``name`` working ``board``.

    ``"blocking"`` runs one job at a time in the thread that calls ``run()``;
    ``"nonblocking"`` runs up to ``max_simultaneous_jobs`` (default: the CPU
    count) on a thread pool.  ``persistence`` (a backend, URL or conf dict;
    default: the board's) is where the jobs' logbooks are.  ``engine`` and
    ``engine_options`` choose how each flow runs (as for
    :func:`flowkit.engines.load`).  ``ttl`` is the claim lease (default: the
    board's), renewed every ``ttl / 3`` while a job runs.  ``factories``
    and ``allowed_modules`` say which flow factories its jobs may name (see
    :class:`~flowkit.conductors.base.Conductor`).  ``max_conductor_failures``,
    ``backoff`` and ``max_backoff`` govern jobs whose flow cannot be built
    (see :class:`~flowkit.conductors.base.Conductor`).  ``signal_poll`` is
    how often (real seconds) it looks for signals sent to parked flows.
    """
    try:
        cls = CONDUCTORS[kind]
    except (KeyError, TypeError):
        raise ValueError(
            "unknown conductor kind %r; choose one of %s" % (kind, ", ".join(repr(k) for k in CONDUCTORS))
        ) from None
    if isinstance(persistence, (str, Mapping)):
        from flowkit.persistence.backends import fetch as fetch_backend

        persistence = fetch_backend(persistence)
    options: dict[str, Any] = {
        "persistence": persistence,
        "engine": engine,
        "engine_options": engine_options,
        "ttl": ttl,
        "wait_timeout": wait_timeout,
        "factories": factories,
        "allowed_modules": allowed_modules,
        "max_conductor_failures": max_conductor_failures,
        "backoff": backoff,
        "max_backoff": max_backoff,
        "signal_poll": signal_poll,
    }
    if max_simultaneous_jobs is not None:
        options["max_simultaneous_jobs"] = max_simultaneous_jobs
    return cls(name, board, **options)
