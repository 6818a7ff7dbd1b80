"""The job board records failed attempts: attempts, last_error, failed_by, due_at.

Revision ID: 0003
Revises: 0002

A conductor that cannot build a job's flow gives the job back with its error
and a backoff instead of trashing it; these columns hold what it recorded.
``upgrade()`` adds only the columns that are missing (like 0002, safe where
they exist); concurrent upgrades are serialized by flowkit's upgrade lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# A frozen copy of the definitions (see 0001).
_JSON_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _prefix() -> str:
    return str(context.config.attributes["table_prefix"])


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", _JSON_TEXT),
        sa.Column("failed_by", _JSON_TEXT),
        sa.Column("due_at", sa.Double),
    ]


def upgrade() -> None:
    """Add the failure columns to ``<prefix>jobs`` unless they exist."""
    table = _prefix() + "jobs"
    existing = {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}
    missing = [column for column in _columns() if column.name not in existing]
    for column in missing:
        op.add_column(table, column)


def downgrade() -> None:
    """Drop the failure columns (SQLite rebuilds the table to drop them)."""
    with op.batch_alter_table(_prefix() + "jobs") as batch:
        for column in _columns():
            batch.drop_column(column.name)
