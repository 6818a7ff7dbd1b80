"""Reconciled resources and the history of their operations.

Revision ID: 0006
Revises: 0005

``<prefix>resources`` holds one row per (kind, id): the current and target
states, the optional rollback state, the generation (bumped by every target
change) and the generation last seen converged, the error count of each
operation (a JSON object), the last error, the facts the service keeps (a JSON
document), the resource's status (converging, converged, broken, unreachable)
with its reason, and the operation in flight (its rule, its job and the
generation it was started for).  ``(kind, status)`` is indexed for the
reconciler's scan and ``flowkit resources list --state``.

``<prefix>resource_operations`` records each operation started: its rule, the
job and flow detail that ran it, the states it went from and toward, when it
started and ended and how (the flow's end state, or why it did not run).
``id`` is an autoincrement never reused, so it orders a resource's history.
``upgrade()`` creates only what is missing (like 0002); concurrent upgrades
are serialized by flowkit's upgrade lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# A frozen copy of the definitions (see 0001).
_JSON_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _prefix() -> str:
    return str(context.config.attributes["table_prefix"])


def upgrade() -> None:
    """Create ``<prefix>resources`` and ``<prefix>resource_operations`` unless they exist."""
    p = _prefix()
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if p + "resources" not in existing:
        op.create_table(
            p + "resources",
            sa.Column("kind", sa.String(64), primary_key=True),
            sa.Column("id", sa.String(190), primary_key=True),
            sa.Column("current_state", sa.String(64), nullable=False),
            sa.Column("target_state", sa.String(64), nullable=False),
            sa.Column("rollback_state", sa.String(64)),
            sa.Column("generation", sa.BigInteger, nullable=False),
            sa.Column("observed_generation", sa.BigInteger, nullable=False),
            sa.Column("errors", _JSON_TEXT),
            sa.Column("last_error", _JSON_TEXT),
            sa.Column("facts", _JSON_TEXT),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("reason", _JSON_TEXT),
            sa.Column("op_rule", sa.String(190)),
            sa.Column("op_job", sa.String(36)),
            sa.Column("op_generation", sa.BigInteger),
            sa.Column("created_at", sa.Double, nullable=False),
            sa.Column("updated_at", sa.Double, nullable=False),
            sa.Index(p + "resources_status_idx", "kind", "status"),
            mysql_engine="InnoDB",
            mysql_charset="utf8mb4",
        )
    if p + "resource_operations" not in existing:
        op.create_table(
            p + "resource_operations",
            sa.Column("id", _ID, primary_key=True, autoincrement=True),
            sa.Column("kind", sa.String(64), nullable=False),
            sa.Column("resource_id", sa.String(190), nullable=False),
            sa.Column("rule", sa.String(190), nullable=False),
            sa.Column("job_uuid", sa.String(36), nullable=False),
            sa.Column("flow_uuid", sa.String(36)),
            sa.Column("from_state", sa.String(64), nullable=False),
            sa.Column("target_state", sa.String(64), nullable=False),
            sa.Column("leads_to", sa.String(64), nullable=False),
            sa.Column("generation", sa.BigInteger, nullable=False),
            sa.Column("started_at", sa.Double, nullable=False),
            sa.Column("ended_at", sa.Double),
            sa.Column("outcome", sa.String(32)),
            sa.Column("error", _JSON_TEXT),
            sa.Index(p + "resource_ops_idx", "kind", "resource_id"),
            sa.Index(p + "resource_ops_job_idx", "job_uuid"),
            sqlite_autoincrement=True,
            mysql_engine="InnoDB",
            mysql_charset="utf8mb4",
        )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table(_prefix() + "resource_operations")
    op.drop_table(_prefix() + "resources")
