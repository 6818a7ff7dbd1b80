"""The first logbook schema: logbooks, flow details, atom details.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# A frozen copy of the definitions (not imported from _sql.schema): a migration
# must keep creating what it created on the day it was written.
_JSON_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _prefix() -> str:
    return str(context.config.attributes["table_prefix"])


def upgrade() -> None:
    """Create the three tables and their indexes."""
    p = _prefix()
    op.create_table(
        p + "logbooks",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("meta", _JSON_TEXT),
        sa.Column("created_at", sa.String(40)),
        sa.Column("updated_at", sa.String(40)),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_table(
        p + "flowdetails",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column(
            "parent_uuid",
            sa.String(36),
            sa.ForeignKey(p + "logbooks.uuid", ondelete="CASCADE", name=p + "fd_book_fk"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32)),
        sa.Column("meta", _JSON_TEXT),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index(p + "fd_parent_idx", p + "flowdetails", ["parent_uuid"])
    op.create_table(
        p + "atomdetails",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column(
            "parent_uuid",
            sa.String(36),
            sa.ForeignKey(p + "flowdetails.uuid", ondelete="CASCADE", name=p + "ad_flow_fk"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("atom_type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32)),
        sa.Column("intention", sa.String(32)),
        sa.Column("results", _JSON_TEXT),
        sa.Column("failure", _JSON_TEXT),
        sa.Column("revert_results", _JSON_TEXT),
        sa.Column("revert_failure", _JSON_TEXT),
        sa.Column("meta", _JSON_TEXT),
        sa.Column("version", sa.String(64)),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index(p + "ad_parent_idx", p + "atomdetails", ["parent_uuid"])


def downgrade() -> None:
    """Drop the tables (children first)."""
    p = _prefix()
    op.drop_index(p + "ad_parent_idx", table_name=p + "atomdetails")
    op.drop_table(p + "atomdetails")
    op.drop_index(p + "fd_parent_idx", table_name=p + "flowdetails")
    op.drop_table(p + "flowdetails")
    op.drop_table(p + "logbooks")
