"""Migration scripts, applied in order by alembic."""

__all__: list[str] = []
