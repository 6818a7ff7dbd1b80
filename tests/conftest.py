"""The engine matrix.

Every engine-level test takes the ``load`` (or ``run``) fixture, which is parametrized by
engine mode, so the whole behaviour suite runs once per mode. ``FLOWKIT_ENGINE_MODE`` picks
one mode (``tox -e serial`` / ``tox -e parallel`` / ``tox -e distributed``); unset, every mode
runs (``distributed`` only where Dask is installed).

A test that does not take the mode fixture (a job board contract, a CLI message, a process
race whose conductors pick their own engine) does not depend on the mode, so with one mode
selected it runs in one env only: in ``distributed`` if it needs a Dask cluster (the
``dask_client`` or ``distributed`` fixtures), else in ``serial``. ``tox -e parallel`` thus runs
the tests that take the mode fixture; ``tox`` (every env) runs each test at least once.

A test about something only some modes can show (two atoms running at once in this
process, say) says so with ``@pytest.mark.modes("parallel")``: it is not collected in the
other modes, rather than skipped inside the test.

Adding a mode is one entry in ``ENGINE_MODES``: the options that ``flowkit.engines.load``
needs to run a flow that way. The distributed mode also gets ``client=``: one LocalCluster of
worker processes (``dask_client``), started once per test session and shared by every test.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import flowkit.engines
from tests.support import unavailable

# mode name -> keyword options for flowkit.engines.load()/run()
ENGINE_MODES: dict[str, dict[str, Any]] = {
    "serial": {"engine": "serial"},
    "parallel": {"engine": "parallel", "executor": "threads", "max_workers": 2},
    # plus client=<the session's dask_client>, added by engine_options
    "distributed": {"engine": "distributed"},
}

ENV_VAR = "FLOWKIT_ENGINE_MODE"

HAVE_DASK = importlib.util.find_spec("distributed") is not None


def selected_modes() -> list[str]:
    wanted = os.environ.get(ENV_VAR, "").strip()
    if not wanted:
        return [m for m in ENGINE_MODES if m != "distributed" or HAVE_DASK]
    if wanted == "distributed" and not HAVE_DASK:
        raise pytest.UsageError("%s=distributed needs Dask: pip install -e '.[test,distributed]'" % ENV_VAR)
    if wanted not in ENGINE_MODES:
        raise pytest.UsageError(
            "%s=%r is not a known engine mode (known: %s)" % (ENV_VAR, wanted, ", ".join(sorted(ENGINE_MODES)))
        )
    return [wanted]


#: Fixtures that start or need a Dask cluster: a test taking one without the mode fixture
#: belongs to the distributed mode.
_DASK_FIXTURES = frozenset({"dask_client", "distributed"})


def _home_mode(item: pytest.Item) -> str | None:
    """The one mode a mode-independent test runs in (None: it runs in every mode)."""
    names = set(getattr(item, "fixturenames", ()))
    if "engine_mode" in names:
        return None
    return "distributed" if names & _DASK_FIXTURES else next(iter(ENGINE_MODES))


def _runs_here(item: pytest.Item, wanted: str) -> bool:
    """Whether ``item`` belongs to this run: its mode is one it is for, and (when one mode is selected) that one."""
    callspec = getattr(item, "callspec", None)
    mode = callspec.params.get("engine_mode") if callspec is not None else None
    marker = item.get_closest_marker("modes")
    if marker is not None:
        if mode is None:
            raise pytest.UsageError("%s: @pytest.mark.modes needs the engine_mode fixture (or load/run)" % item.nodeid)
        if not marker.args or set(marker.args) - set(ENGINE_MODES):
            raise pytest.UsageError(
                "%s: @pytest.mark.modes%r: name one or more of %s" % (item.nodeid, marker.args, ", ".join(ENGINE_MODES))
            )
        if mode not in marker.args:
            return False
    home = _home_mode(item)
    return not wanted or home is None or home == wanted


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out what belongs to another run.

    A test marked ``@pytest.mark.modes("parallel", ...)`` is only for those engine modes
    (what it shows cannot happen in the others): its other modes are deselected, not
    skipped. With one mode selected, the mode-independent tests that run in another env are
    left out too.
    """
    wanted = os.environ.get(ENV_VAR, "").strip()
    kept: list[pytest.Item] = []
    elsewhere: list[pytest.Item] = []
    for item in items:
        (kept if _runs_here(item, wanted) else elsewhere).append(item)
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> str:
    return "flowkit engine modes: %s (%s=%r)" % (
        ", ".join(selected_modes()),
        ENV_VAR,
        os.environ.get(ENV_VAR, ""),
    )


@pytest.fixture(params=selected_modes())
def engine_mode(request: pytest.FixtureRequest) -> str:
    """The engine mode this test runs in (one of ``ENGINE_MODES``)."""
    return request.param


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A ``distributed.Client`` on a LocalCluster of 2 worker processes, 1 thread each.

    Started once per session (a cluster takes seconds to start) and shared by every test
    that runs in distributed mode. Tests that kill workers or the scheduler start their own.
    """
    distributed = pytest.importorskip("distributed", reason="the distributed engine mode needs Dask")
    from flowkit.engines.distributed import local_cluster_options

    with distributed.LocalCluster(**local_cluster_options(2)) as cluster, distributed.Client(
        cluster, set_as_default=False
    ) as client:
        yield client


@pytest.fixture
def engine_options(engine_mode: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The keyword options that select ``engine_mode`` in ``load()``/``run()``."""
    options = dict(ENGINE_MODES[engine_mode])
    if engine_mode == "distributed":
        options["client"] = request.getfixturevalue("dask_client")
    return options


LoadFn = Callable[..., Any]


@pytest.fixture
def load(engine_options: dict[str, Any]) -> LoadFn:
    """``load(flow, store=None, **kw)``: ``flowkit.engines.load`` in the current mode."""

    def _load(flow: Any, store: dict[str, Any] | None = None, **kw: Any) -> Any:
        return flowkit.engines.load(flow, store=store, **{**engine_options, **kw})

    return _load


@pytest.fixture
def run(engine_options: dict[str, Any]) -> LoadFn:
    """``run(flow, store=None, **kw)``: ``flowkit.engines.run`` in the current mode."""

    def _run(flow: Any, store: dict[str, Any] | None = None, **kw: Any) -> Any:
        return flowkit.engines.run(flow, store=store, **{**engine_options, **kw})

    return _run


@pytest.fixture
def dot_program() -> str:
    """Graphviz's ``dot``: skips when it is not installed, except under ``CI=true``, where that fails."""
    from flowkit import graphs

    found = graphs.dot_program()
    if found is None:
        message = "Graphviz 'dot' is not installed (apt-get install graphviz)"
        unavailable(message)
    return found

