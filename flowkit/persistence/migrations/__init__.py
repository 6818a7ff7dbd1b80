"""Alembic migrations of the SQL logbook schema.

``SQLAlchemyConnection.upgrade()`` runs them programmatically (no alembic.ini
needed); ``env.py`` also works with the ``alembic`` command when the config
sets ``sqlalchemy.url`` (and optionally ``flowkit.table_prefix``).
"""

__all__: list[str] = []
