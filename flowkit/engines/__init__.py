"""Load a flow into an engine and run it.

``load(flow, store=..., engine="serial" | "parallel" | "distributed", ...)`` returns an
:class:`Engine`; ``run(...)`` loads, runs and returns every result.
``load_from_factory()`` records how to rebuild the flow in its flow detail so
that ``load_from_detail()`` can resume it in another process after a crash.
"""

from __future__ import annotations

from flowkit.engines._loading import ENGINE_MODES, load, run
from flowkit.engines.engine import Engine, EngineStatistics
from flowkit.engines.helpers import flow_from_detail, load_from_detail, load_from_factory, save_factory_details

__all__ = [
    # running a flow
    "load",
    "run",
    "Engine",
    "EngineStatistics",
    "ENGINE_MODES",
    # rebuilding a flow from its logbook
    "load_from_factory",
    "load_from_detail",
    "flow_from_detail",
    "save_factory_details",
]
