"""The SQL job board's tables: jobs and resource locks, beside the logbook's.

Migrations ``0002``, ``0003`` and ``0005`` create them with the logbook tables' prefix;
like :mod:`~flowkit.persistence._sql.schema`, this is the current shape the
code reads and writes, while the migrations keep their own frozen copies.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from flowkit.persistence._sql.schema import DEFAULT_TABLE_PREFIX, JSON_TEXT, check_table_prefix

__all__ = ["JobTables", "make_job_tables"]

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


@dataclasses.dataclass(frozen=True)
class JobTables:
    """The job board's two tables for one prefix."""

    metadata: sa.MetaData
    jobs: sa.Table
    locks: sa.Table


def make_job_tables(prefix: str = DEFAULT_TABLE_PREFIX) -> JobTables:
    """The job tables as migrations 0002, 0003 and 0005 make them, named with ``prefix``."""
    check_table_prefix(prefix)
    metadata = sa.MetaData()
    jobs = sa.Table(
        prefix + "jobs",
        metadata,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("board", sa.String(190), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("details", JSON_TEXT),
        sa.Column("book_uuid", sa.String(36)),
        sa.Column("book_name", sa.String(255)),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("idempotency_key", sa.String(190)),
        sa.Column("resources", JSON_TEXT),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Double),
        sa.Column("cancel", sa.String(16)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", JSON_TEXT),
        sa.Column("failed_by", JSON_TEXT),
        sa.Column("due_at", sa.Double),
        sa.Column("parked", sa.Integer, nullable=False, server_default="0"),
        sa.Column("park_reason", JSON_TEXT),
        sa.Column("woken", sa.Integer, nullable=False, server_default="0"),
        sa.Column("outcome", sa.String(32)),
        sa.UniqueConstraint("uuid", name=prefix + "jobs_uuid_uq"),
        sa.UniqueConstraint("board", "idempotency_key", name=prefix + "jobs_idem_uq"),
        sa.Index(prefix + "jobs_board_state_idx", "board", "state"),
        sa.Index(prefix + "jobs_board_due_idx", "board", "state", "due_at"),
    )
    locks = sa.Table(
        prefix + "job_locks",
        metadata,
        sa.Column("board", sa.String(190), primary_key=True),
        sa.Column("resource", sa.String(190), primary_key=True),
        sa.Column("holder", sa.String(36)),
        sa.Column("holder_token", sa.BigInteger),
        sa.Column("holder_expires", sa.Double),
    )
    return JobTables(metadata, jobs, locks)
