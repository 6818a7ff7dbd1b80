"""Everything flowkit stores in SQL, in one place (internal).

- :mod:`~flowkit.persistence._sql.store`: the engine, the writer connection,
  group commit and the statements compiled once per backend;
  :class:`~flowkit.persistence._sql.store.SQLStore` is what the logbook
  backend and the SQL job board share.
- :mod:`~flowkit.persistence._sql.schema`: the logbook tables and the
  conversion between records and rows.
- :mod:`~flowkit.persistence._sql.jobs_schema`: the job board's tables.
- :mod:`~flowkit.persistence._sql.connection`: buffered writes, reads and
  flow locks of one logbook connection.
- :mod:`~flowkit.persistence._sql.locks`: flow-detail and upgrade locks.
- :mod:`~flowkit.persistence._sql._libpq`: a durable PostgreSQL step's
  upsert, prepared once per session and run on psycopg's libpq connection.

The migrations stay in ``flowkit/persistence/migrations``: that is the
alembic script location users' own ``alembic.ini`` files point at.

The public faces are :mod:`flowkit.persistence.backends.impl_sqlalchemy` and
:mod:`flowkit.jobs.backends.impl_sql`.  This package's ``__init__`` imports nothing,
so naming :data:`DEFAULT_SQLITE_URL` does not load SQLAlchemy.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SQLITE_URL"]

#: Where the SQL job board keeps jobs when neither its conf nor its persistence backend names a database.
DEFAULT_SQLITE_URL = "sqlite:///flowkit.db"
