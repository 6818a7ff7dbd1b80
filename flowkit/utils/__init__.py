"""TaskFlow's ``utils`` module paths that user code imports: :mod:`flowkit.utils.persistence_utils`."""

__all__: list[str] = []
