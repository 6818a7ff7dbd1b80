"""The reconciler's tables: resources and the history of their operations.

Migration ``0006`` creates them with the logbook tables' prefix; like
:mod:`~flowkit.persistence._sql.schema`, this is the current shape the code
reads and writes, while the migration keeps its own frozen copy.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from flowkit.persistence._sql.schema import DEFAULT_TABLE_PREFIX, JSON_TEXT, check_table_prefix

__all__ = ["ResourceTables", "make_resource_tables", "MAX_KIND_CHARS", "MAX_ID_CHARS", "MAX_STATE_CHARS"]

#: The longest kind, resource id and state name the tables hold.
MAX_KIND_CHARS = 64
MAX_ID_CHARS = 190
MAX_STATE_CHARS = 64

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


@dataclasses.dataclass(frozen=True)
class ResourceTables:
    """The reconciler's two tables for one prefix."""

    metadata: sa.MetaData
    resources: sa.Table
    operations: sa.Table


def make_resource_tables(prefix: str = DEFAULT_TABLE_PREFIX) -> ResourceTables:
    """The tables as migration 0006 makes them, named with ``prefix``."""
    check_table_prefix(prefix)
    metadata = sa.MetaData()
    resources = sa.Table(
        prefix + "resources",
        metadata,
        sa.Column("kind", sa.String(MAX_KIND_CHARS), primary_key=True),
        sa.Column("id", sa.String(MAX_ID_CHARS), primary_key=True),
        sa.Column("current_state", sa.String(MAX_STATE_CHARS), nullable=False),
        sa.Column("target_state", sa.String(MAX_STATE_CHARS), nullable=False),
        sa.Column("rollback_state", sa.String(MAX_STATE_CHARS)),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("observed_generation", sa.BigInteger, nullable=False),
        sa.Column("errors", JSON_TEXT),
        sa.Column("last_error", JSON_TEXT),
        sa.Column("facts", JSON_TEXT),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", JSON_TEXT),
        sa.Column("op_rule", sa.String(190)),
        sa.Column("op_job", sa.String(36)),
        sa.Column("op_generation", sa.BigInteger),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Index(prefix + "resources_status_idx", "kind", "status"),
    )
    operations = sa.Table(
        prefix + "resource_operations",
        metadata,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(MAX_KIND_CHARS), nullable=False),
        sa.Column("resource_id", sa.String(MAX_ID_CHARS), nullable=False),
        sa.Column("rule", sa.String(190), nullable=False),
        sa.Column("job_uuid", sa.String(36), nullable=False),
        sa.Column("flow_uuid", sa.String(36)),
        sa.Column("from_state", sa.String(MAX_STATE_CHARS), nullable=False),
        sa.Column("target_state", sa.String(MAX_STATE_CHARS), nullable=False),
        sa.Column("leads_to", sa.String(MAX_STATE_CHARS), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("ended_at", sa.Double),
        sa.Column("outcome", sa.String(32)),
        sa.Column("error", JSON_TEXT),
        sa.Index(prefix + "resource_ops_idx", "kind", "resource_id"),
        sa.Index(prefix + "resource_ops_job_idx", "job_uuid"),
        sqlite_autoincrement=True,
    )
    return ResourceTables(metadata, resources, operations)
