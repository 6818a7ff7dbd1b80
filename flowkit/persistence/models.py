"""The logbook's records: LogBook -> FlowDetail -> AtomDetail.

Records are plain mutable dataclasses (the engine updates them in place and
writes them through a backend).  Converting to and from JSON-compatible dicts
is generic (:func:`to_data` and the ``*_from_data`` functions), not
hand-written per class: the values a record holds (results, failures, meta)
become stored data through :mod:`flowkit.persistence.codec`, the one place
that tags and untags Failures and registered types; an enum field becomes
its ``.value``.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

from flowkit import states
from flowkit.exceptions import CorruptLogbook
from flowkit.persistence import codec
from flowkit.types.failure import Failure

__all__ = [
    "LogBook",
    "FlowDetail",
    "AtomDetail",
    "TaskDetail",
    "RetryDetail",
    "to_data",
    "atom_detail_from_data",
    "flow_detail_from_data",
    "logbook_from_data",
    "ATTEMPT_KEY",
]

#: The key of ``AtomDetail.meta`` counting the atom's attempts after the first (see ``AtomDetail.reset``).
ATTEMPT_KEY = "attempt"


def _new_uuid() -> str:
    return str(uuidlib.uuid4())


def _uuid_series() -> Iterator[str]:
    """Distinct uuid4 strings at the cost of one: a random uuid4, then its node field XOR 1, 2, ...

    For the atom details of one flow: 48 bits of counter leave the other 74
    random bits of the first uuid as the unique part across flows, which is
    as unlikely to collide as two uuid4s that share a node field.
    """
    first = uuidlib.uuid4().hex
    head = "%s-%s-%s-%s-" % (first[:8], first[8:12], first[12:16], first[16:20])
    node = int(first[20:], 16)
    for count in range(1 << 48):
        yield head + "%012x" % (node ^ count)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclasses.dataclass(slots=True, eq=False)
class AtomDetail:
    """The record of one atom in one flow run.

    ``results`` is the task's result (for a retry controller: a list of
    ``[result, {atom_name: Failure}]`` per attempt); ``failure`` the captured
    failure of its execution; ``revert_results``/``revert_failure`` the same
    for its revert; ``meta`` free-form data (progress, timings).
    """

    name: str
    uuid: str = dataclasses.field(default_factory=_new_uuid)
    atom_type: str = "task"
    state: str = states.PENDING
    intention: str = states.EXECUTE
    results: Any = None
    failure: Failure | None = None
    revert_results: Any = None
    revert_failure: Failure | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: tuple[int, int] | None = None

    def reset(self, state: str = states.PENDING) -> None:
        """Forget results and failures and set ``state`` (intention back to EXECUTE).

        An atom that had started (any state but PENDING, or a failure or
        result kept) begins a new attempt: ``meta["attempt"]`` counts them,
        and a task's ``self.context.idempotency_key`` changes with it.
        """
        if self.state != states.PENDING or self.failure is not None or self.results:
            attempt = self.meta.get(ATTEMPT_KEY)
            self.meta[ATTEMPT_KEY] = (attempt if isinstance(attempt, int) and attempt >= 0 else 0) + 1
        self.state = state
        self.intention = states.EXECUTE
        self.results = [] if self.atom_type == "retry" else None
        self.failure = None
        self.revert_results = None
        self.revert_failure = None

    def copy(self) -> AtomDetail:
        """A copy whose containers are not shared with this one."""
        return AtomDetail(
            name=self.name,
            uuid=self.uuid,
            atom_type=self.atom_type,
            state=self.state,
            intention=self.intention,
            results=codec.copy(self.results),
            failure=self.failure,
            revert_results=codec.copy(self.revert_results),
            revert_failure=self.revert_failure,
            meta=codec.copy(self.meta),
            version=self.version,
        )

    def pformat(self, indent: int = 0, linesep: str = "\n") -> str:
        """A readable, indented description (TaskFlow's ``pformat``)."""
        kind = "RetryDetail" if self.atom_type == "retry" else "TaskDetail"
        fields: list[tuple[str, Any]] = [
            ("uuid", self.uuid),
            ("state", self.state),
            ("intention", self.intention),
            ("version", ".".join(str(part) for part in self.version) if self.version else None),
            ("results", self.results),
            ("failure", self.failure is not None),
        ]
        if self.meta:
            fields.append(("meta", self.meta))
        return linesep.join(_pformat(kind, self.name, fields, indent, linesep))


def _pformat(kind: str, name: str, fields: list[tuple[str, Any]], indent: int, linesep: str) -> list[str]:
    """``<kind>: 'name'`` then `` - field = value`` lines, indented by ``indent`` spaces (TaskFlow's layout)."""
    pad = " " * indent
    lines = ["%s%s: %r" % (pad, kind, name)]
    lines.extend("%s - %s = %s" % (pad, field, value) for field, value in fields)
    return lines


def _when_text(value: datetime.datetime | None) -> str:
    return value.isoformat() if value is not None else "None"


def TaskDetail(name: str, uuid: str | None = None) -> AtomDetail:
    """An AtomDetail for a task (TaskFlow's name)."""
    return AtomDetail(name=name, uuid=uuid or _new_uuid(), atom_type="task")


def RetryDetail(name: str, uuid: str | None = None) -> AtomDetail:
    """An AtomDetail for a retry controller (TaskFlow's name)."""
    return AtomDetail(name=name, uuid=uuid or _new_uuid(), atom_type="retry", results=[])


@dataclasses.dataclass(slots=True, eq=False)
class FlowDetail:
    """The record of one flow run: its state, metadata and atom details.

    ``meta`` holds the injected store and, when the flow was loaded from a
    factory, how to rebuild it (``factory``).
    """

    name: str
    uuid: str = dataclasses.field(default_factory=_new_uuid)
    state: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    _atoms: dict[str, AtomDetail] = dataclasses.field(default_factory=dict, repr=False)

    def add(self, atom_detail: AtomDetail) -> None:
        """Add (or replace) an atom detail, keyed by its uuid."""
        self._atoms[atom_detail.uuid] = atom_detail

    def find(self, uuid: str) -> AtomDetail | None:
        """The atom detail with ``uuid``, or None."""
        return self._atoms.get(uuid)

    def find_by_name(self, name: str) -> AtomDetail | None:
        """The atom detail named ``name``, or None."""
        for detail in self._atoms.values():
            if detail.name == name:
                return detail
        return None

    def __iter__(self) -> Iterator[AtomDetail]:
        return iter(list(self._atoms.values()))

    def __len__(self) -> int:
        return len(self._atoms)

    def pformat(self, indent: int = 0, linesep: str = "\n") -> str:
        """A readable, indented description of the flow detail and its atom details."""
        fields: list[tuple[str, Any]] = [("uuid", self.uuid), ("state", self.state)]
        if self.meta:
            fields.append(("meta", self.meta))
        lines = _pformat("FlowDetail", self.name, fields, indent, linesep)
        lines.extend(detail.pformat(indent + 1, linesep) for detail in self)
        return linesep.join(lines)


@dataclasses.dataclass(slots=True, eq=False)
class LogBook:
    """A named collection of flow details (usually one per job or request)."""

    name: str
    uuid: str = dataclasses.field(default_factory=_new_uuid)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: datetime.datetime = dataclasses.field(default_factory=_now)
    updated_at: datetime.datetime | None = None
    _flows: dict[str, FlowDetail] = dataclasses.field(default_factory=dict, repr=False)

    def add(self, flow_detail: FlowDetail) -> None:
        """Add (or replace) a flow detail, keyed by its uuid."""
        self._flows[flow_detail.uuid] = flow_detail

    def find(self, uuid: str) -> FlowDetail | None:
        """The flow detail with ``uuid``, or None."""
        return self._flows.get(uuid)

    def __iter__(self) -> Iterator[FlowDetail]:
        return iter(list(self._flows.values()))

    def __len__(self) -> int:
        return len(self._flows)

    def pformat(self, indent: int = 0, linesep: str = "\n") -> str:
        """A readable, indented description of the logbook, its flow details and their atoms."""
        fields: list[tuple[str, Any]] = [
            ("uuid", self.uuid),
            ("created_at", _when_text(self.created_at)),
            ("updated_at", _when_text(self.updated_at)),
        ]
        if self.meta:
            fields.append(("meta", self.meta))
        lines = _pformat("LogBook", self.name, fields, indent, linesep)
        lines.extend(flow_detail.pformat(indent + 1, linesep) for flow_detail in self)
        return linesep.join(lines)


# -- generic data form -----------------------------------------------------------

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def to_data(record: AtomDetail | FlowDetail | LogBook) -> dict[str, Any]:
    """A JSON-compatible dict of a record (values as :func:`flowkit.persistence.codec.to_data` stores them).

    The dict shares no container with the record, so it stays what was
    written when the engine later changes the record in place.
    """
    cls = type(record)
    names = _FIELD_NAMES.get(cls)
    if names is None:  # dataclasses.fields() is slow; this runs on every logbook write
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(record))
    data: dict[str, Any] = {}
    for name in names:
        value = getattr(record, name)
        if name == "_atoms":
            data["atoms"] = [to_data(ad) for ad in value.values()]
        elif name == "_flows":
            data["flows"] = [to_data(fd) for fd in value.values()]
        elif isinstance(value, enum.Enum):
            data[name] = value.value
        elif isinstance(value, datetime.datetime):
            data[name] = value.isoformat()
        else:
            data[name] = codec.to_data(value)
    return data


_REASON_WIDTH = 200


def _bad(column: str | None, data: dict[str, Any], reason: str, atom: bool) -> CorruptLogbook:
    if len(reason) > _REASON_WIDTH:  # a decoder's message may quote the whole bad value
        reason = reason[: _REASON_WIDTH - 3] + "..."
    uuid = data.get("uuid")
    name = data.get("name")
    return CorruptLogbook(
        reason,
        uuid=uuid if isinstance(uuid, str) else None,
        column=column,
        atom=name if atom and isinstance(name, str) else None,
    )


def _text(data: dict[str, Any], column: str, atom: bool) -> str:
    value = data.get(column)
    if not isinstance(value, str):
        raise _bad(column, data, "expected text, found %s" % (type(value).__name__,), atom)
    return value


_DECODE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError)


def _field(data: dict[str, Any], column: str, atom: bool, decode: Any) -> Any:
    # A value that decodes to the wrong shape is as corrupt as invalid JSON: name where it is.
    try:
        return decode(data.get(column))
    except CorruptLogbook:
        raise
    except _DECODE_ERRORS as error:
        raise _bad(column, data, "%s: %s" % (type(error).__name__, error), atom) from error


def _state(value: Any) -> states.State:
    if value is None or value == "":
        return states.State(states.PENDING)
    if not isinstance(value, str) or value not in _STATE_VALUES:
        raise ValueError("unknown state %r" % (value,))
    return states.State(value)


def _intention(value: Any) -> states.Intention:
    if value is None or value == "":
        return states.Intention(states.EXECUTE)
    if not isinstance(value, str) or value not in _INTENTION_VALUES:
        raise ValueError("unknown intention %r" % (value,))
    return states.Intention(value)


def _meta(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("meta must be an object, found %s" % (type(value).__name__,))
    decoded: dict[str, Any] = codec.from_data(value)
    return decoded


def _failure(value: Any) -> Failure | None:
    decoded = codec.from_data(value)
    if decoded is not None and not isinstance(decoded, Failure):
        raise ValueError("expected a captured failure, found %s" % (type(decoded).__name__,))
    return decoded


def _version(value: Any) -> tuple[int, int] | None:
    if not value:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("expected [major, minor], found %r" % (value,))
    return (int(value[0]), int(value[1]))


def _when(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    if not isinstance(value, str):
        raise ValueError("expected an ISO-8601 time, found %s" % (type(value).__name__,))
    return datetime.datetime.fromisoformat(value)


_STATE_VALUES = frozenset(s.value for s in states.State)
_INTENTION_VALUES = frozenset(i.value for i in states.Intention)
_ATOM_TYPES = frozenset(("task", "retry"))


# The atom detail fields decoded from data, in order, with their decoders.
_ATOM_DECODERS = (
    ("state", _state),
    ("intention", _intention),
    ("results", codec.from_data),
    ("failure", _failure),
    ("revert_results", codec.from_data),
    ("revert_failure", _failure),
    ("meta", _meta),
    ("version", _version),
)


def atom_detail_from_data(data: dict[str, Any]) -> AtomDetail:
    """Rebuild an AtomDetail from :func:`to_data` output.

    Raises :class:`~flowkit.exceptions.CorruptLogbook` naming the uuid, the
    field and the atom when a field cannot be what an atom detail holds (an
    unknown state, a malformed failure, meta that is not an object).
    """
    name = _text(data, "name", True)
    uuid = _text(data, "uuid", True)
    atom_type = data.get("atom_type") or "task"
    if atom_type not in _ATOM_TYPES:
        raise _bad("atom_type", data, "unknown atom type %r" % (atom_type,), True)
    get = data.get
    try:
        # The hot path (a conductor loads every job's logbook): no per-field bookkeeping.
        return AtomDetail(
            name=name,
            uuid=uuid,
            atom_type=atom_type,
            state=_state(get("state")),
            intention=_intention(get("intention")),
            results=codec.from_data(get("results")),
            failure=_failure(get("failure")),
            revert_results=codec.from_data(get("revert_results")),
            revert_failure=_failure(get("revert_failure")),
            meta=_meta(get("meta")),
            version=_version(get("version")),
        )
    except _DECODE_ERRORS as error:
        # Decode again field by field, only to name the one that is wrong.
        for column, decoder in _ATOM_DECODERS:
            _field(data, column, True, decoder)
        raise _bad(None, data, "%s: %s" % (type(error).__name__, error), True) from error


def flow_detail_from_data(data: dict[str, Any]) -> FlowDetail:
    """Rebuild a FlowDetail (with its atom details) from :func:`to_data` output.

    Raises :class:`~flowkit.exceptions.CorruptLogbook` naming the uuid and
    the field when a field cannot be what a flow detail holds.
    """
    state = data.get("state")
    fd = FlowDetail(
        name=_text(data, "name", False),
        uuid=_text(data, "uuid", False),
        state=_field(data, "state", False, _state) if state else None,
        meta=_field(data, "meta", False, _meta),
    )
    for ad in data.get("atoms", ()):
        fd.add(atom_detail_from_data(ad))
    return fd


def logbook_from_data(data: dict[str, Any]) -> LogBook:
    """Rebuild a LogBook (with its flow details) from :func:`to_data` output.

    Raises :class:`~flowkit.exceptions.CorruptLogbook` naming the uuid and
    the field when a field cannot be what a logbook holds.
    """
    book = LogBook(
        name=_text(data, "name", False),
        uuid=_text(data, "uuid", False),
        meta=_field(data, "meta", False, _meta),
        created_at=_field(data, "created_at", False, _when) or _now(),
        updated_at=_field(data, "updated_at", False, _when),
    )
    for fd in data.get("flows", ()):
        book.add(flow_detail_from_data(fd))
    return book
