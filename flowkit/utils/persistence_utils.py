"""Make logbooks and flow details in a few calls (TaskFlow's ``persistence_utils``).

Examples and tests build a flow detail to load an engine on, then look at
what the engine wrote::

    book, flow_detail = persistence_utils.temporary_flow_detail(backend)
    engine = engines.load(flow, flow_detail=flow_detail, book=book, backend=backend)

Each function saves what it made in ``backend`` when one is given, and saves
nothing otherwise.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from flowkit.persistence.base import Backend
from flowkit.persistence.models import FlowDetail, LogBook

__all__ = ["temporary_log_book", "temporary_flow_detail", "create_flow_detail"]

LOG = logging.getLogger(__name__)


def _save(backend: Backend | None, book: LogBook) -> None:
    if backend is not None:
        with backend.get_connection() as conn:
            conn.save_logbook(book)
            conn.flush()


def temporary_log_book(backend: Backend | None = None) -> LogBook:
    """A new, empty logbook named ``"tmp"``, saved in ``backend`` if given."""
    book = LogBook("tmp")
    _save(backend, book)
    return book


def temporary_flow_detail(
    backend: Backend | None = None, meta: Mapping[str, Any] | None = None
) -> tuple[LogBook, FlowDetail]:
    """A new logbook holding one flow detail ``"tmp-flow-detail"`` (with ``meta``), saved in ``backend`` if given."""
    book = LogBook("tmp")
    flow_detail = FlowDetail("tmp-flow-detail", uuid=str(uuid.uuid4()))
    if meta:
        flow_detail.meta.update(meta)
    book.add(flow_detail)
    _save(backend, book)
    return book, flow_detail


def create_flow_detail(
    flow: Any, book: LogBook | None = None, backend: Backend | None = None, meta: Mapping[str, Any] | None = None
) -> FlowDetail:
    """A new flow detail named after ``flow``, added to ``book`` and saved in ``backend``.

    With a backend but no book, a temporary logbook is made (and saved) for
    it; with no backend nothing is saved.  A flow without a name gets the
    flow detail's uuid as its name.
    """
    flow_uuid = str(uuid.uuid4())
    name = getattr(flow, "name", None)
    if not isinstance(name, str) or not name:
        LOG.warning("flow %r has no name; its flow detail is named after its uuid %s", flow, flow_uuid)
        name = flow_uuid
    flow_detail = FlowDetail(name, uuid=flow_uuid)
    if meta:
        flow_detail.meta.update(meta)
    if book is None and backend is not None:
        LOG.warning("no logbook given for flow %r: creating a temporary one", name)
        book = LogBook("tmp")
    if book is not None:
        book.add(flow_detail)
        _save(backend, book)
    return flow_detail
