"""The SQL logbook schema and the conversion between records and rows.

Four tables (names carry a configurable prefix so several logbooks, or a
TaskFlow logbook, can share one database)::

    <prefix>logbooks     uuid PK, name, meta, created_at, updated_at
    <prefix>flowdetails  uuid PK, parent_uuid -> logbooks, position, name, state, meta
    <prefix>atomdetails  uuid PK, parent_uuid -> flowdetails, position, name, atom_type,
                         state, intention, results, failure, revert_results,
                         revert_failure, meta, version
    <prefix>signals      id PK (autoincrement: the signal's sequence number),
                         flow_uuid -> flowdetails, name, value, idempotency_key,
                         sent_at; UNIQUE (flow_uuid, name)

Values are JSON text (never pickle).  JSON columns use a type that holds
megabytes on every server: TEXT on SQLite and PostgreSQL, LONGTEXT on MySQL
and MariaDB (whose TEXT stops at 64 KB, the limit TaskFlow's users hit).

Rows are built from :func:`flowkit.persistence.models.to_data` and read back
with the models' ``*_from_data`` functions, so this module only knows which
keys are JSON columns, not how each record is shaped.

The migrations in ``flowkit/persistence/migrations/versions`` create the same
tables (``0001`` the first three, ``0004`` the signals); each keeps its own
copy of the definitions because a migration must not change when this module
does.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from flowkit.exceptions import CorruptLogbook
from flowkit.persistence import codec
from flowkit.persistence._meta import is_finished
from flowkit.persistence._structure import STRUCTURE_KEY, StoredForms, structure_of
from flowkit.persistence.models import AtomDetail, FlowDetail, LogBook, to_data
from flowkit.states import Intention, State

__all__ = [
    "DEFAULT_TABLE_PREFIX",
    "JSON_TEXT",
    "Tables",
    "make_tables",
    "check_table_prefix",
    "logbook_row",
    "flow_row",
    "atom_row",
    "logbook_rows",
    "row_data",
]

#: Tables are named ``flowkit_logbooks`` etc. unless another prefix is chosen.
DEFAULT_TABLE_PREFIX = "flowkit_"

#: Text that holds megabytes on every supported server.
JSON_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

# Autoincrement ids: 64-bit where the server has them; SQLite's INTEGER PRIMARY KEY is 64-bit already.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,29}$|^$")

# Keys of to_data() output stored as JSON text; every other key is a plain column.
LOGBOOK_JSON = frozenset({"meta"})
FLOW_JSON = frozenset({"meta"})
ATOM_JSON = frozenset({"results", "failure", "revert_results", "revert_failure", "meta", "version"})


def check_table_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a safe SQL identifier start, else raise ValueError."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ValueError(
            "table_prefix must be letters, digits and '_' (at most 30, not starting with a digit), got %r" % (prefix,)
        )
    return prefix


@dataclasses.dataclass(frozen=True)
class Tables:
    """The logbook tables of one prefix, on their own MetaData."""

    metadata: sa.MetaData
    logbooks: sa.Table
    flows: sa.Table
    atoms: sa.Table
    prefix: str
    signals: sa.Table


def make_tables(prefix: str = DEFAULT_TABLE_PREFIX) -> Tables:
    """The current schema's tables, named with ``prefix``."""
    check_table_prefix(prefix)
    metadata = sa.MetaData()
    logbooks = sa.Table(
        prefix + "logbooks",
        metadata,
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("meta", JSON_TEXT),
        # ISO-8601 text keeps the time zone on every server (MySQL DATETIME drops it).
        sa.Column("created_at", sa.String(40)),
        sa.Column("updated_at", sa.String(40)),
    )
    flows = sa.Table(
        prefix + "flowdetails",
        metadata,
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column(
            "parent_uuid",
            sa.String(36),
            sa.ForeignKey(prefix + "logbooks.uuid", ondelete="CASCADE", name=prefix + "fd_book_fk"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False, default=0),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32)),
        sa.Column("meta", JSON_TEXT),
        sa.Index(prefix + "fd_parent_idx", "parent_uuid"),
    )
    atoms = sa.Table(
        prefix + "atomdetails",
        metadata,
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column(
            "parent_uuid",
            sa.String(36),
            sa.ForeignKey(prefix + "flowdetails.uuid", ondelete="CASCADE", name=prefix + "ad_flow_fk"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False, default=0),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("atom_type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32)),
        sa.Column("intention", sa.String(32)),
        sa.Column("results", JSON_TEXT),
        sa.Column("failure", JSON_TEXT),
        sa.Column("revert_results", JSON_TEXT),
        sa.Column("revert_failure", JSON_TEXT),
        sa.Column("meta", JSON_TEXT),
        sa.Column("version", sa.String(64)),
        sa.Index(prefix + "ad_parent_idx", "parent_uuid"),
    )
    signals = sa.Table(
        prefix + "signals",
        metadata,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "flow_uuid",
            sa.String(36),
            sa.ForeignKey(prefix + "flowdetails.uuid", ondelete="CASCADE", name=prefix + "sig_flow_fk"),
            nullable=False,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", JSON_TEXT),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("sent_at", sa.Double, nullable=False),
        # Also the index of flow_uuid (its first column): the lookups and the foreign key use it.
        sa.UniqueConstraint("flow_uuid", "name", name=prefix + "sig_flow_name_uq"),
        # AUTOINCREMENT: SQLite would otherwise reuse the ids of deleted rows, and a poller of
        # signals_after() would never see a signal numbered below one it has seen.
        sqlite_autoincrement=True,
    )
    return Tables(metadata, logbooks, flows, atoms, prefix, signals)


def _row(data: Mapping[str, Any], json_keys: frozenset[str], skip: Iterable[str] = ()) -> dict[str, Any]:
    row: dict[str, Any] = {}
    dumps = json.dumps
    for key, value in data.items():
        if key in skip:
            continue
        if key in json_keys:
            # NULL rather than "null": smaller, and readable by hand in the database.
            row[key] = None if value is None else dumps(value)
        else:
            row[key] = value
    return row


def logbook_row(book: LogBook) -> dict[str, Any]:
    """The ``logbooks`` row of ``book`` (without its flow details)."""
    data = to_data(_shallow(book))
    return _row(data, LOGBOOK_JSON, ("flows",))


def flow_row(flow_detail: FlowDetail, book_uuid: str, position: int) -> dict[str, Any]:
    """The ``flowdetails`` row of ``flow_detail`` (without its atom details)."""
    meta = flow_detail.meta
    structure = structure_of(meta)
    if structure is None:
        data = to_data(_shallow(flow_detail))
        row = _row(data, FLOW_JSON, ("atoms",))
    else:
        # The rest of the meta as usual, and the structure's text, made once, spliced in.
        rest = {key: value for key, value in meta.items() if key != STRUCTURE_KEY}
        shallow = FlowDetail(name=flow_detail.name, uuid=flow_detail.uuid, state=flow_detail.state, meta=rest)
        row = _row(to_data(shallow), FLOW_JSON, ("atoms",))
        rest_text = row["meta"]
        head = '{"%s": %s' % (STRUCTURE_KEY, _structure_text(structure))
        row["meta"] = head + "}" if rest_text == "{}" else head + ", " + rest_text[1:]
    row["parent_uuid"] = book_uuid
    row["position"] = position
    return row


def _encode_structure(structure: dict[str, Any]) -> str:
    return json.dumps(codec.to_data(structure))


#: The JSON text of each structure written (see flowkit.persistence._structure).
_structure_text = StoredForms(_encode_structure)


#: The fields of an atom detail, in the order its rows have them.
_ATOM_FIELDS = tuple(f.name for f in dataclasses.fields(AtomDetail))


def atom_row(atom_detail: AtomDetail, flow_uuid: str, position: int) -> dict[str, Any]:
    """The ``atomdetails`` row of ``atom_detail``.

    The row :func:`_row` makes of its :func:`to_data`, built field by field:
    two are written per step of a flow, so this is a good part of a durable
    step's Python.  JSON columns are NULL rather than ``"null"``, as
    :func:`_row` writes them.
    """
    ad = atom_detail
    dumps = json.dumps
    stored = codec.to_data
    results = ad.results
    failure = ad.failure
    revert_results = ad.revert_results
    revert_failure = ad.revert_failure
    meta = ad.meta
    version: Any = ad.version
    if type(version) is tuple:
        text = _VERSION_TEXT.get(version)
        if text is None:
            text = dumps(stored(version))
            if len(_VERSION_TEXT) < 256:
                _VERSION_TEXT[version] = text
        version = text
    elif version is not None:
        version = dumps(stored(version))
    return {
        "name": ad.name,
        "uuid": ad.uuid,
        "atom_type": ad.atom_type,
        "state": _ENUM_TEXT.get(ad.state, ad.state),
        "intention": _ENUM_TEXT.get(ad.intention, ad.intention),
        # (An int's JSON is its repr: the commonest result, spared the walk.)
        "results": None if results is None else repr(results) if type(results) is int else dumps(stored(results)),
        "failure": None if failure is None else dumps(stored(failure)),
        "revert_results": None if revert_results is None else dumps(stored(revert_results)),
        "revert_failure": None if revert_failure is None else dumps(stored(revert_failure)),
        "meta": _meta_text(meta),
        "version": version,
        "parent_uuid": flow_uuid,
        "position": position,
    }


def _meta_text(meta: Any) -> str | None:
    # An empty meta, and the one of a task that succeeded without reporting
    # progress, are the commonest of all: their texts are known.
    if not meta:
        return None if meta is None else "{}"
    if is_finished(meta):
        return _DONE_META_TEXT
    return json.dumps(codec.to_data(meta))


_DONE_META_TEXT = json.dumps({"progress": 1.0})
# What atom_row writes for a state or an intention, and for a version (few distinct ones).
_ENUM_TEXT: dict[Any, str] = {e: e.value for kind in (State, Intention) for e in kind}
_VERSION_TEXT: dict[Any, str] = {}
# atom_row names every field: one added to AtomDetail must be added there too.
if _ATOM_FIELDS != (
    "name", "uuid", "atom_type", "state", "intention", "results", "failure",
    "revert_results", "revert_failure", "meta", "version",
):  # fmt: skip
    raise RuntimeError("atom_row does not write every AtomDetail field: %s" % (_ATOM_FIELDS,))


def logbook_rows(book: LogBook) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(logbook rows, flow detail rows, atom detail rows)`` of ``book`` and everything in it."""
    flows = [flow_row(fd, book.uuid, i) for i, fd in enumerate(book)]
    atoms = [atom_row(ad, fd.uuid, i) for fd in book for i, ad in enumerate(fd)]
    return [logbook_row(book)], flows, atoms


def row_data(row: Mapping[Any, Any], json_keys: frozenset[str]) -> dict[str, Any]:
    """The :func:`to_data`-shaped dict of a row (JSON columns decoded).

    A JSON column that does not decode raises
    :class:`~flowkit.exceptions.CorruptLogbook` naming the row's uuid and the
    column (the reader adds the table, see ``CorruptLogbook.located``).
    """
    data: dict[str, Any] = {}
    loads = json.loads
    for key, value in row.items():
        if key in ("parent_uuid", "position"):
            continue
        if key in json_keys and value is not None:
            try:
                data[key] = loads(value)
            except (TypeError, ValueError, RecursionError) as error:
                uuid = row.get("uuid")
                raise CorruptLogbook(
                    "invalid JSON: %s" % (_first_line(error),),
                    uuid=uuid if isinstance(uuid, str) else None,
                    column=key,
                ) from error
        else:
            data[key] = value
    return data


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _shallow(record: Any) -> Any:
    """``record`` without its children, so to_data() does not serialize them.

    A flow's row is written far more often (every flow state change) than its
    atoms change, and serializing a 1,000-atom flow for one state column would
    make the cost of a run grow with the square of its size.
    """
    if isinstance(record, FlowDetail):
        return FlowDetail(name=record.name, uuid=record.uuid, state=record.state, meta=record.meta)
    return LogBook(
        name=record.name,
        uuid=record.uuid,
        meta=record.meta,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
