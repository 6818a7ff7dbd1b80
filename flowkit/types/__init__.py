"""Small value types shared by every layer: captured failures and notifiers."""

__all__: list[str] = []
