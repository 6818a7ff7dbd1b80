"""Small value types shared by every layer: captured failures, notifiers, the cancel token."""

__all__: list[str] = []
