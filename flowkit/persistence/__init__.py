"""Logbooks: the durable record of every flow and atom state.

``models`` defines LogBook -> FlowDetail -> AtomDetail; ``backends`` stores
them (in memory, or in SQL through SQLAlchemy).  The engine writes through a
backend connection on every state change, so a flow can be resumed from it.
"""

__all__ = ["models", "backends", "base"]
