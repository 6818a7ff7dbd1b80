"""Flow patterns: linear, unordered and graph flows (structure only)."""

__all__ = ["linear_flow", "unordered_flow", "graph_flow"]
