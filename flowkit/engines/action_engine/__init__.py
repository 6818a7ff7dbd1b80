"""TaskFlow's module path of the engine classes: :mod:`flowkit.engines.action_engine.engine`."""

__all__: list[str] = []
