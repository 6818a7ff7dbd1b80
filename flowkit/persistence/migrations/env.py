"""Alembic environment for the flowkit logbook schema.

flowkit calls this with ``config.attributes["connection"]`` (an open
SQLAlchemy connection already inside the transaction and holding the
database-level lock that serializes concurrent upgrades) and
``config.attributes["table_prefix"]``.  From the ``alembic`` command it
connects to ``sqlalchemy.url`` itself.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

from flowkit.persistence._sql.schema import DEFAULT_TABLE_PREFIX, check_table_prefix, make_tables

config = context.config
prefix = check_table_prefix(
    config.attributes.get("table_prefix") or config.get_main_option("flowkit.table_prefix") or DEFAULT_TABLE_PREFIX
)
config.attributes["table_prefix"] = prefix
options: dict[str, Any] = {
    # One version table per prefix, so two logbooks in one database migrate independently.
    "version_table": prefix + "alembic_version",
    "target_metadata": make_tables(prefix).metadata,
}

connection = config.attributes.get("connection")
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, **options)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
