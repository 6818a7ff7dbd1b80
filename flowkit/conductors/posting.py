"""Post a flow as a job: the logbook that records how to build it, and the job that names it."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from flowkit.engines.helpers import _json_copy, save_factory_details
from flowkit.factories import FactoryRegistry
from flowkit.jobs.base import Job, JobBoard, JobPriority
from flowkit.persistence.models import FlowDetail, LogBook

__all__ = ["post_flow"]


def post_flow(
    board: JobBoard,
    flow_factory: Callable[..., Any],
    factory_args: Sequence[Any] | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    *,
    store: Mapping[str, Any] | None = None,
    name: str | None = None,
    priority: JobPriority | str = JobPriority.NORMAL,
    idempotency_key: str | None = None,
    resources: Iterable[str] = (),
    connection: Any = None,
    factories: FactoryRegistry | None = None,
    delay: float | None = None,
    not_before: datetime.datetime | float | None = None,
) -> Job:
    """Post a job whose flow is ``flow_factory(*factory_args, **factory_kwargs)``.

    A new logbook with one flow detail records the factory's name and
    arguments (:func:`flowkit.engines.save_factory_details`, which registers
    the factory in ``factories``, default
    :data:`flowkit.factories.default_registry`); the board saves it with the
    job.  ``store`` (JSON) is recorded in the flow detail too, so
    ``flowkit resume`` of its flow detail works without the job, and in the
    job's ``details["store"]``, which the conductor that claims the job merges
    into the flow's store.  ``name`` defaults to the factory's recorded name.
    ``priority``, ``idempotency_key``, ``resources``, ``connection`` (SQL
    board: post inside the caller's transaction) and ``delay`` or
    ``not_before`` (no conductor claims the job before then) are passed to
    :meth:`~flowkit.jobs.base.JobBoard.post`.  The factory is not called
    here: the flow is built by the conductor.
    """
    flow_detail = FlowDetail(name=name or str(getattr(flow_factory, "__qualname__", "flow")))
    save_factory_details(flow_detail, flow_factory, factory_args, factory_kwargs, factories=factories)
    job_name = name or flow_detail.meta["factory"]["name"]
    details: dict[str, Any] = {"flow_uuid": flow_detail.uuid}
    if store:
        if not isinstance(store, Mapping):
            raise ValueError("store of job %r must be a dict of injected values, got %r" % (job_name, store))
        values = _json_copy(dict(store), "store of job %r" % (job_name,))
        # The flow detail's own copy is what the engine's storage reads back
        # as the injected values (the key it keeps them under).
        flow_detail.meta["store"] = values
        details["store"] = dict(values)
    book = LogBook(name=job_name)
    book.add(flow_detail)
    options: dict[str, Any] = {
        "idempotency_key": idempotency_key,
        "resources": resources,
        "delay": delay,
        "not_before": not_before,
    }
    if connection is not None:
        options["connection"] = connection
    return board.post(job_name, book=book, details=details, priority=priority, **options)
