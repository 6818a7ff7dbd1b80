"""The job board parks jobs and records outcomes: parked, park_reason, woken, outcome; an index on due times.

Revision ID: 0005
Revises: 0004

A job can be posted with a delay, parked by its owner until a due time or a
wake-up, and consumed with its flow's outcome.  ``parked`` and ``woken`` are
0/1 flags (a wake that came while the job was claimed makes the owner's park
due at once); ``jobs_board_due_idx`` on (board, state, due_at) keeps
``next_due()`` and the claimable-job query cheap with many waiting jobs.
``upgrade()`` adds only what is missing (like 0002 and 0003); concurrent
upgrades are serialized by flowkit's upgrade lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# A frozen copy of the definitions (see 0001).
_JSON_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _prefix() -> str:
    return str(context.config.attributes["table_prefix"])


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("parked", sa.Integer, nullable=False, server_default="0"),
        sa.Column("park_reason", _JSON_TEXT),
        sa.Column("woken", sa.Integer, nullable=False, server_default="0"),
        sa.Column("outcome", sa.String(32)),
    ]


def upgrade() -> None:
    """Add the waiting and outcome columns and the due-time index to ``<prefix>jobs`` unless they exist."""
    table = _prefix() + "jobs"
    inspector = sa.inspect(op.get_bind())
    existing = {column["name"] for column in inspector.get_columns(table)}
    for column in _columns():
        if column.name not in existing:
            op.add_column(table, column)
    index = _prefix() + "jobs_board_due_idx"
    if index not in {found["name"] for found in inspector.get_indexes(table)}:
        op.create_index(index, table, ["board", "state", "due_at"])


def downgrade() -> None:
    """Drop the index and the columns (SQLite rebuilds the table to drop them)."""
    op.drop_index(_prefix() + "jobs_board_due_idx", table_name=_prefix() + "jobs")
    with op.batch_alter_table(_prefix() + "jobs") as batch:
        for column in _columns():
            batch.drop_column(column.name)
