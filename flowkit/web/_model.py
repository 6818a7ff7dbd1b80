"""What the dashboard shows, as plain JSON-ready dicts: the pages render them, ``/api/...`` returns them.

Everything here is read from a database, so it is data: shown, never called.
Each text is cut to a bound (:data:`LIMITS`) before it reaches a page or a
JSON answer, and results pass through :func:`~flowkit.listeners.base.mask_values`
so masked keys never leave the server.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import json
import re
from collections.abc import Collection, Iterable
from typing import Any

from flowkit import states
from flowkit.exceptions import CorruptLogbook, NotFound
from flowkit.listeners.base import mask_values
from flowkit.persistence.base import Backend
from flowkit.persistence.models import ATTEMPT_KEY, AtomDetail, FlowDetail, LogBook
from flowkit.policies import ATTEMPTS_KEY, ERRORS_KEY
from flowkit.types.failure import Failure
from flowkit.waits import WAIT_KEY, WAKE_KEY
from flowkit.web._liveness import holder_alive

__all__ = [
    "INTERRUPTED",
    "LIMITS",
    "FlowFilter",
    "parse_since",
    "list_flows",
    "match_flow",
    "find_flow",
    "flow_view",
    "jobs_view",
    "clip",
]

#: The state shown for a RUNNING or REVERTING flow detail whose engine is gone (its lock is free).
INTERRUPTED = "INTERRUPTED"

#: The most characters of each kind of stored text that a page or a JSON answer carries.
LIMITS = {
    "name": 200,
    "message": 2000,
    "traceback": 20000,
    "result": 4000,
    "error": 2000,
}

_ACTIVE = (states.RUNNING, states.REVERTING)


def clip(text: str, kind: str) -> str:
    """``text`` cut to ``LIMITS[kind]`` characters, saying how much was left out."""
    limit = LIMITS[kind]
    if len(text) <= limit:
        return text
    return text[:limit] + " [... %d more characters]" % (len(text) - limit,)


def _aware(when: datetime.datetime) -> datetime.datetime:
    # SQL backends may read times back without their zone; flowkit writes them in UTC.
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.timezone.utc)


def _iso(when: datetime.datetime | float | None) -> str | None:
    if when is None:
        return None
    if isinstance(when, (int, float)):
        if isinstance(when, bool):
            return None
        when = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return _aware(when).astimezone(datetime.timezone.utc).isoformat(timespec="seconds")


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


# -- the flows list ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FlowFilter:
    """Which flow details the list shows: states (shown states, INTERRUPTED included), a name glob, an age."""

    states: frozenset[str] = frozenset()
    name: str | None = None
    since: datetime.datetime | None = None
    limit: int = 200


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime.datetime) -> datetime.datetime:
    """``"90m"``, ``"2h"``, ``"7d"`` (before ``now``) or an ISO 8601 date or time (UTC unless it says)."""
    match = _DURATION.match(text)
    if match:
        return now - datetime.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("since must be a duration like 30m, 2h or 7d, or an ISO 8601 date, got %r" % (text,)) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.timezone.utc)


def _shown_state(backend: Backend, fd: FlowDetail, *, probe_waiting: bool = True) -> tuple[str, bool | None]:
    stored = str(fd.state) if fd.state is not None else states.PENDING
    if stored == states.WAITING:
        # Parked (no engine) or waiting inside a live engine's run(): both are fine, the page says which.
        return stored, holder_alive(backend, fd.uuid) if probe_waiting else None
    if stored not in _ACTIVE:
        return stored, None
    alive = holder_alive(backend, fd.uuid)
    return (INTERRUPTED if alive is False else stored), alive


def _wake(fd: FlowDetail) -> dict[str, Any] | None:
    if fd.state != states.WAITING:
        return None
    wake = fd.meta.get(WAKE_KEY)
    if not isinstance(wake, dict):
        return {"due": None, "signals": []}
    signals = wake.get("signals")
    names = [clip(s, "name") for s in signals if isinstance(s, str)] if isinstance(signals, list) else []
    return {"due": _iso(_number(wake.get("due"))), "signals": names}


def _factory_name(fd: FlowDetail) -> str | None:
    factory = fd.meta.get("factory")
    name = factory.get("name") if isinstance(factory, dict) else None
    return clip(name, "name") if isinstance(name, str) else None


def _summary(backend: Backend, book: LogBook, fd: FlowDetail, *, probe_waiting: bool = True) -> dict[str, Any]:
    state, alive = _shown_state(backend, fd, probe_waiting=probe_waiting)
    return {
        "uuid": fd.uuid,
        "name": clip(fd.name, "name"),
        "state": state,
        "stored_state": str(fd.state) if fd.state is not None else None,
        "engine_alive": alive,
        "logbook": {"uuid": book.uuid, "name": clip(book.name, "name")},
        "created": _iso(book.created_at),
        "updated": _iso(book.updated_at),
        "factory": _factory_name(fd),
        "wake": _wake(fd),
    }


def _all_flows(backend: Backend) -> tuple[list[tuple[LogBook, FlowDetail]], list[str]]:
    found: list[tuple[LogBook, FlowDetail]] = []
    problems: list[str] = []
    with backend.get_connection() as conn:
        for book in conn.get_logbooks(lazy=True):
            try:
                flows = list(conn.get_flows_for_book(book.uuid, lazy=True))
            except CorruptLogbook as bad:
                problems.append(clip(str(bad), "error"))
                continue
            found.extend((book, fd) for fd in flows)
    return found, problems


def list_flows(backend: Backend, which: FlowFilter) -> dict[str, Any]:
    """The ``/api/flows`` answer: ``{"flows": [...], "counts": {state: n}, "total", "shown", "problems"}``.

    ``counts`` are over the flows the name and age filters keep (before the
    state filter, so every state's count stays visible); ``flows`` are newest
    first, at most ``which.limit``.
    """
    pairs, problems = _all_flows(backend)
    kept = []
    for book, fd in pairs:
        if which.name and not fnmatch.fnmatchcase(fd.name, which.name):
            continue
        if which.since is not None and _aware(book.created_at) < which.since:
            continue
        kept.append((book, fd))
    kept.sort(key=lambda pair: _aware(pair[0].created_at), reverse=True)
    counts: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for book, fd in kept:
        # Whether a WAITING flow is parked changes no count: asked only of the rows shown.
        row = _summary(backend, book, fd, probe_waiting=False)
        counts[row["state"]] = counts.get(row["state"], 0) + 1
        if which.states and row["state"] not in which.states:
            continue
        if len(rows) < which.limit and row["state"] == states.WAITING:
            row["engine_alive"] = holder_alive(backend, fd.uuid)
        rows.append(row)
    return {
        "flows": rows[: which.limit],
        "counts": dict(sorted(counts.items())),
        "total": len(kept),
        "shown": min(len(rows), which.limit),
        "problems": problems,
    }


def match_flow(backend: Backend, ident: str) -> tuple[LogBook, FlowDetail]:
    """The logbook and lazy flow detail (no atoms read) whose uuid is ``ident`` or starts with it.

    NotFound when none does, or when several do (the message says how many).
    """
    ident = ident.strip().lower()
    if not ident:
        raise NotFound("no flow detail id given")
    with backend.get_connection() as conn:
        matches: list[tuple[LogBook, FlowDetail]] = []
        for book in conn.get_logbooks(lazy=True):
            try:
                flows = list(conn.get_flows_for_book(book.uuid, lazy=True))
            except CorruptLogbook:
                continue
            matches.extend((book, fd) for fd in flows if fd.uuid.startswith(ident))
    if not matches:
        raise NotFound("no flow detail %r in this backend" % (ident,))
    if len(matches) > 1:
        raise NotFound("%r is the start of %d flow details' ids; give more of it" % (ident, len(matches)))
    return matches[0]


def find_flow(backend: Backend, ident: str) -> tuple[LogBook, FlowDetail]:
    """The logbook and (full) flow detail whose uuid is ``ident`` or starts with it; NotFound otherwise."""
    book, fd = match_flow(backend, ident)
    with backend.get_connection() as conn:
        return book, conn.get_flow_details(fd.uuid)


# -- one flow -----------------------------------------------------------------------


def _failure(failure: Failure | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    return {
        "type": clip(failure.exception_type_name, "name"),
        "types": [clip(name, "name") for name in failure.exc_type_names],
        "message": clip(failure.exception_str, "message"),
        "traceback": clip(failure.traceback_str or "", "traceback"),
        "cause": _failure(failure.cause),
    }


def _json_text(value: Any, mask_keys: Collection[str]) -> str | None:
    if value is None:
        return None
    masked = mask_values(value, mask_keys) if mask_keys else value
    try:
        text = json.dumps(masked, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(masked)
    return clip(text, "result")


def _attempts(ad: AtomDetail) -> list[dict[str, Any]]:
    records = ad.meta.get(ATTEMPTS_KEY)
    if not isinstance(records, list):
        return []
    found = []
    for record in records:
        if not isinstance(record, dict):
            continue
        data = record.get("failure")
        failure = None
        if isinstance(data, dict):
            try:
                failure = _failure(Failure.from_dict(data))
            except (TypeError, ValueError, KeyError):
                failure = None
        attempt = record.get("attempt")
        found.append(
            {
                "attempt": attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
                "started": _iso(_number(record.get("started"))),
                "ended": _iso(_number(record.get("ended"))),
                "failure": failure,
            }
        )
    return found


def _wait(ad: AtomDetail) -> dict[str, Any] | None:
    info = ad.meta.get(WAIT_KEY)
    if ad.state != states.WAITING or not isinstance(info, dict):
        return None
    signal = info.get("signal")
    return {
        "until": _iso(_number(info.get("until"))),
        "signal": clip(signal, "name") if isinstance(signal, str) else None,
        "started": _iso(_number(info.get("started"))),
    }


def _atom(ad: AtomDetail, mask_keys: Collection[str]) -> dict[str, Any]:
    result = ad.results
    if ad.atom_type == "retry" and isinstance(result, list):
        # A controller's results are [result, failures] per attempt; the latest is what it decided with.
        result = result[-1][0] if result and isinstance(result[-1], list) and result[-1] else None
    attempt = ad.meta.get(ATTEMPT_KEY)
    errors = ad.meta.get(ERRORS_KEY)
    return {
        "name": clip(ad.name, "name"),
        "uuid": ad.uuid,
        "type": clip(str(ad.atom_type), "name"),
        "state": clip(str(ad.state), "name"),
        "intention": clip(str(ad.intention), "name"),
        "result": _json_text(result, mask_keys),
        "revert_result": _json_text(ad.revert_results, mask_keys),
        "failure": _failure(ad.failure),
        "revert_failure": _failure(ad.revert_failure),
        "attempt": attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 0,
        "errors_since_success": errors if isinstance(errors, int) and not isinstance(errors, bool) else None,
        "attempts": _attempts(ad),
        "start_offset": _number(ad.meta.get("start_offset")),
        "duration": _number(ad.meta.get("duration")),
        "wait": _wait(ad),
    }


def _timeline(atoms: Iterable[dict[str, Any]], flow_duration: float | None) -> dict[str, Any] | None:
    spans = [(a["name"], a["start_offset"] or 0.0, a["duration"]) for a in atoms if a["duration"] is not None]
    if not spans:
        return None
    total = max(max(start + duration for _, start, duration in spans), flow_duration or 0.0) or 1.0
    return {
        "total": total,
        "bars": [
            {
                "atom": name,
                "start": start,
                "duration": duration,
                # Percentages of the whole run, for drawing.
                "left": round(100.0 * start / total, 2),
                "width": max(0.5, round(100.0 * duration / total, 2)),
            }
            for name, start, duration in spans
        ],
    }


def flow_view(backend: Backend, book: LogBook, fd: FlowDetail, *, mask_keys: Collection[str] = ()) -> dict[str, Any]:
    """The ``/api/flows/{id}`` answer for ``fd`` (of ``book``; see :func:`find_flow`).

    The flow detail's summary, its atoms, failures, waits and timeline.
    """
    view = _summary(backend, book, fd)
    atoms = [_atom(ad, mask_keys) for ad in fd]
    view["atoms"] = atoms
    view["failures"] = [
        {"atom": atom["name"], "during": during, **atom[key]}
        for atom in atoms
        for key, during in (("failure", "execute"), ("revert_failure", "revert"))
        if atom[key] is not None
    ]
    view["waits"] = [{"atom": atom["name"], **atom["wait"]} for atom in atoms if atom["wait"] is not None]
    duration = _number(fd.meta.get("duration"))
    view["duration"] = duration
    view["timeline"] = _timeline(atoms, duration)
    return view


# -- jobs and conductors ----------------------------------------------------------------


def _lease(status: Any) -> dict[str, Any] | None:
    """The last claim not given up: its owner, when it ends, whether it ran out (the owner presumed dead)."""
    if status.owner is None:
        return None
    return {
        "owner": clip(status.owner, "name"),
        "expires": _iso(status.lease_expires_at),
        "expired": status.lease_expired,
    }


def jobs_view(board: Any) -> dict[str, Any]:
    """The ``/api/jobs`` answer: every job (finished ones too) and the owners holding claims."""
    jobs = []
    owners: dict[str, list[str]] = {}
    for job in board.iterjobs(include_final=True):
        try:
            status = board.status_of(job)
            failures = board.failures_of(job)
            owner = board.find_owner(job)
        except NotFound:  # finished and removed while listing
            continue
        if owner is not None:
            owners.setdefault(owner, []).append(job.uuid)
        jobs.append(
            {
                "uuid": job.uuid,
                "name": clip(job.name, "name"),
                "state": str(status.state),
                "owner": clip(owner, "name") if owner is not None else None,
                "priority": str(job.priority),
                "posted": _iso(job.created_on),
                "due": _iso(status.due_at),
                "parked": status.parked,
                "on_signal": status.on_signal,
                "reason": clip(status.reason, "message") if status.reason else None,
                "attempts": failures.attempts,
                "last_error": clip(failures.last_error, "error") if failures.last_error else None,
                "failed_by": [clip(name, "name") for name in failures.failed_by],
                "outcome": clip(status.outcome, "name") if status.outcome else None,
                "logbook": job.book_uuid,
                "lease": _lease(status),
            }
        )
    conductors = [{"name": clip(name, "name"), "claims": uuids} for name, uuids in sorted(owners.items())]
    return {"board": clip(str(board.name), "name"), "jobs": jobs, "conductors": conductors}
