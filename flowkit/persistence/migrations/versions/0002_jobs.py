"""The job board's tables: jobs and resource locks.

Revision ID: 0002
Revises: 0001

Both tables are namespaced by a ``board`` column (the board's name), so
several boards share them.  ``upgrade()`` creates only what is missing, so it
is safe where a board created its tables before this migration existed;
concurrent upgrades are serialized by flowkit's upgrade lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# A frozen copy of the definitions (see 0001).
_JSON_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _prefix() -> str:
    return str(context.config.attributes["table_prefix"])


def upgrade() -> None:
    """Create ``<prefix>jobs`` and ``<prefix>job_locks`` unless they exist."""
    p = _prefix()
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if p + "jobs" not in existing:
        op.create_table(
            p + "jobs",
            sa.Column("id", _ID, primary_key=True, autoincrement=True),
            sa.Column("uuid", sa.String(36), nullable=False),
            sa.Column("board", sa.String(190), nullable=False),
            sa.Column("name", sa.String(255), nullable=False),
            sa.Column("details", _JSON_TEXT),
            sa.Column("book_uuid", sa.String(36)),
            sa.Column("book_name", sa.String(255)),
            sa.Column("priority", sa.Integer, nullable=False),
            sa.Column("created_at", sa.Double, nullable=False),
            sa.Column("idempotency_key", sa.String(190)),
            sa.Column("resources", _JSON_TEXT),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("owner", sa.String(255)),
            sa.Column("token", sa.BigInteger, nullable=False),
            sa.Column("expires_at", sa.Double),
            sa.Column("cancel", sa.String(16)),
            sa.UniqueConstraint("uuid", name=p + "jobs_uuid_uq"),
            sa.UniqueConstraint("board", "idempotency_key", name=p + "jobs_idem_uq"),
            mysql_engine="InnoDB",
            mysql_charset="utf8mb4",
        )
        op.create_index(p + "jobs_board_state_idx", p + "jobs", ["board", "state"])
    if p + "job_locks" not in existing:
        op.create_table(
            p + "job_locks",
            sa.Column("board", sa.String(190), primary_key=True),
            sa.Column("resource", sa.String(190), primary_key=True),
            sa.Column("holder", sa.String(36)),
            sa.Column("holder_token", sa.BigInteger),
            sa.Column("holder_expires", sa.Double),
            mysql_engine="InnoDB",
            mysql_charset="utf8mb4",
        )


def downgrade() -> None:
    """Drop the job board's tables."""
    p = _prefix()
    op.drop_table(p + "job_locks")
    op.drop_index(p + "jobs_board_state_idx", table_name=p + "jobs")
    op.drop_table(p + "jobs")
