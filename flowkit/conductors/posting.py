"""Post a flow as a job: the logbook that records how to build it, and the job that names it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from flowkit.engines.helpers import save_factory_details
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
) -> Job:
    """Post a job whose flow is ``flow_factory(*factory_args, **factory_kwargs)``.

    A new logbook with one flow detail records the factory's import path and
    arguments (:func:`flowkit.engines.save_factory_details`); the board saves
    it with the job.  ``store`` (JSON) reaches the flow through the job's
    ``details["store"]``; the conductor that claims the job merges it into
    the flow's store.  ``name`` defaults to the factory's qualified name.
    ``priority``, ``idempotency_key``, ``resources`` and ``connection`` (SQL
    board: post inside the caller's transaction) are passed to
    :meth:`~flowkit.jobs.base.JobBoard.post`.  The factory is not called
    here: the flow is built by the conductor.
    """
    flow_detail = FlowDetail(name=name or str(getattr(flow_factory, "__qualname__", "flow")))
    save_factory_details(flow_detail, flow_factory, factory_args, factory_kwargs)
    job_name = name or flow_detail.meta["factory"]["name"]
    book = LogBook(name=job_name)
    book.add(flow_detail)
    details: dict[str, Any] = {"flow_uuid": flow_detail.uuid}
    if store:
        details["store"] = dict(store)
    options: dict[str, Any] = {"idempotency_key": idempotency_key, "resources": resources}
    if connection is not None:
        options["connection"] = connection
    return board.post(job_name, book=book, details=details, priority=priority, **options)
