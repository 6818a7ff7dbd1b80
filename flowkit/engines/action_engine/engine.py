"""The classes ``engines.load()`` returns, one per engine mode, under TaskFlow's names.

Code written for TaskFlow checks what it was given::

    engine = engines.load(flow, engine="parallel")
    assert isinstance(engine, ParallelActionEngine)

Every mode runs on the same :class:`~flowkit.engines.engine.Engine`; the
modes differ only in the executor their atoms run on, so these subclasses
add nothing but their name.
"""

from __future__ import annotations

from flowkit.engines.engine import Engine

__all__ = ["ActionEngine", "SerialActionEngine", "ParallelActionEngine", "DistributedActionEngine", "ENGINE_CLASSES"]


class ActionEngine(Engine):
    """The base of the engines ``load()`` returns (TaskFlow's ``ActionEngine``)."""


class SerialActionEngine(ActionEngine):
    """``engine="serial"``: atoms run one at a time in the thread that calls ``run()``."""


class ParallelActionEngine(ActionEngine):
    """``engine="parallel"``: atoms run on a thread or process pool (or the executor given)."""


class DistributedActionEngine(ActionEngine):
    """``engine="distributed"``: atoms run on a Dask cluster (TaskFlow's worker-based engine has this place)."""


#: The engine mode -> the class ``load()`` builds for it.
ENGINE_CLASSES: dict[str, type[ActionEngine]] = {
    "serial": SerialActionEngine,
    "parallel": ParallelActionEngine,
    "distributed": DistributedActionEngine,
}
