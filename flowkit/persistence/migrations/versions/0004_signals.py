"""Signals: durable messages to a flow detail, one per (flow detail, name).

Revision ID: 0004
Revises: 0003

``id`` is the signal's sequence number (what ``signals_after`` pages by), so
it is an autoincrement that is never reused (``AUTOINCREMENT`` on SQLite).
The unique constraint on (flow_uuid, name) is what makes a signal delivered
once across processes; it also indexes flow_uuid.  Deleting a flow detail
deletes its signals (ON DELETE CASCADE; flowkit also deletes them itself).
``upgrade()`` creates the table only if it is missing, like 0002; concurrent
upgrades are serialized by flowkit's upgrade lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# A frozen copy of the definitions (see 0001).
_JSON_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _prefix() -> str:
    return str(context.config.attributes["table_prefix"])


def upgrade() -> None:
    """Create ``<prefix>signals`` unless it exists."""
    p = _prefix()
    if p + "signals" in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        p + "signals",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "flow_uuid",
            sa.String(36),
            sa.ForeignKey(p + "flowdetails.uuid", ondelete="CASCADE", name=p + "sig_flow_fk"),
            nullable=False,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", _JSON_TEXT),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("sent_at", sa.Double, nullable=False),
        sa.UniqueConstraint("flow_uuid", "name", name=p + "sig_flow_name_uq"),
        sqlite_autoincrement=True,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    """Drop the signals table."""
    op.drop_table(_prefix() + "signals")
