"""Engine classes, decider depths, targeted flows and map/reduce tasks, as TaskFlow code uses them.

Each test runs in every engine mode on flowkit; on TaskFlow (when installed)
in serial and parallel, its two local engines.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from tests.conftest import ENGINE_MODES


def _m(package: str, path: str) -> Any:
    return importlib.import_module("%s.%s" % (package, path))


@pytest.fixture
def engine_conf(package: str, engine_mode: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """``engines.load`` keyword options selecting ``engine_mode`` in ``package``."""
    if package == "taskflow":
        if engine_mode == "distributed":
            pytest.skip("TaskFlow has no Dask engine")
        return {"engine": engine_mode}
    options = dict(ENGINE_MODES[engine_mode])
    if engine_mode == "distributed":
        options["client"] = request.getfixturevalue("dask_client")
    return options


def _named_task(package: str) -> Any:
    task = _m(package, "task")

    class Named(task.Task):
        def execute(self) -> str:
            return self.name

    return Named


# -- the engine classes ----------------------------------------------------------------


def test_load_returns_the_engine_class_of_its_mode(package: str) -> None:
    engines = _m(package, "engines")
    engine_module = _m(package, "engines.action_engine.engine")
    linear_flow = _m(package, "patterns.linear_flow")
    named = _named_task(package)
    serial = engines.load(linear_flow.Flow("f").add(named("a")), engine="serial")
    parallel = engines.load(linear_flow.Flow("f").add(named("a")), engine="parallel", max_workers=2)
    assert isinstance(serial, engine_module.SerialActionEngine)
    assert isinstance(parallel, engine_module.ParallelActionEngine)
    assert not isinstance(serial, engine_module.ParallelActionEngine)
    assert isinstance(serial, engine_module.ActionEngine) and isinstance(parallel, engine_module.ActionEngine)
    assert serial.options == {}
    assert parallel.options == {"max_workers": 2}
    with_executor = engines.load(linear_flow.Flow("f").add(named("a")), engine="parallel", executor="threads")
    assert with_executor.options == {"executor": "threads"}
    parallel.run()
    assert parallel.storage.fetch_all() == {}


def test_a_distributed_engine_is_an_action_engine(dask_client: Any) -> None:
    from flowkit import engines
    from flowkit.engines.action_engine import engine as engine_module
    from flowkit.patterns import linear_flow

    flow = linear_flow.Flow("f").add(_named_task("flowkit")("a", provides="x"))
    engine = engines.load(flow, engine="distributed", client=dask_client)
    assert type(engine) is engine_module.DistributedActionEngine
    assert isinstance(engine, engine_module.ActionEngine)
    assert engine.options == {"client": dask_client}
    engine.run()
    assert engine.storage.fetch("x") == "a"


def test_options_cannot_be_changed_through_the_engine() -> None:
    from flowkit import engines
    from flowkit.patterns import linear_flow

    engine = engines.load(linear_flow.Flow("f").add(_named_task("flowkit")("a")), defer_reverts=True)
    assert engine.options == {"defer_reverts": True}
    with pytest.raises(TypeError):
        engine.options["defer_reverts"] = False  # type: ignore[index]


# -- decider depths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "ignored"),
    [
        ("ALL", {"b", "c", "d", "s1", "after"}),
        ("FLOW", {"b", "c", "d"}),
        ("NEIGHBORS", {"b", "c"}),
        ("ATOM", {"b"}),
    ],
)
def test_decider_depth_decides_what_is_ignored(
    package: str, engine_conf: dict[str, Any], depth: str, ignored: set[str]
) -> None:
    engines = _m(package, "engines")
    deciders = _m(package, "deciders")
    graph_flow = _m(package, "patterns.graph_flow")
    linear_flow = _m(package, "patterns.linear_flow")
    states = _m(package, "states")
    named = _named_task(package)
    a, b, c, d, s1, after = (named(n) for n in ("a", "b", "c", "d", "s1", "after"))
    sub = linear_flow.Flow("sub").add(s1)
    g = graph_flow.Flow("g").add(a, b, c, d, sub)
    g.link(a, b, decider=lambda history: False, decider_depth=getattr(deciders.Depth, depth))
    g.link(b, c)
    g.link(c, d)
    g.link(b, sub)
    flow = linear_flow.Flow("outer").add(g, after)
    engine = engines.load(flow, **engine_conf)
    engine.run()
    seen = {name: engine.storage.get_atom_state(name) for name in ("a", "b", "c", "d", "s1", "after")}
    assert {name for name, state in seen.items() if state == states.IGNORE} == ignored
    assert {name for name, state in seen.items() if state == states.SUCCESS} == set(seen) - ignored
    assert engine.storage.get_flow_state() == states.SUCCESS


def test_decider_depth_strings_are_read_in_any_case(package: str) -> None:
    deciders = _m(package, "deciders")
    assert deciders.Depth.translate("neighbors") is deciders.Depth.NEIGHBORS
    assert deciders.Depth.translate(deciders.Depth.FLOW) is deciders.Depth.FLOW
    with pytest.raises(ValueError):
        deciders.Depth.translate("SOMETIMES")
    assert deciders.pick_widest([deciders.Depth.ATOM, deciders.Depth.FLOW]) is deciders.Depth.FLOW


@pytest.mark.parametrize("depth", ["FLOW", "NEIGHBORS"])
def test_a_decider_that_said_no_before_a_crash_still_ignores_the_rest(engine_conf: dict[str, Any], depth: str) -> None:
    # A crash between ignoring the target and reaching what follows it leaves
    # the target IGNORE and the rest PENDING in the logbook.  The resume does
    # not ask the decider again (its target is done), yet must ignore the rest.
    from flowkit import engines, states
    from flowkit.deciders import Depth
    from flowkit.patterns import graph_flow
    from flowkit.persistence.backends.impl_memory import MemoryBackend
    from flowkit.utils import persistence_utils

    named = _named_task("flowkit")
    asked: list[Any] = []

    def make_flow() -> Any:
        a, b, c = named("a"), named("b"), named("c")
        flow = graph_flow.Flow("g").add(a, b, c)
        flow.link(a, b, decider=lambda history: asked.append(history) or False, decider_depth=Depth(depth))
        flow.link(b, c)
        return flow

    backend = MemoryBackend()
    book, flow_detail = persistence_utils.temporary_flow_detail(backend)
    engines.load(make_flow(), book=book, flow_detail=flow_detail, backend=backend, **engine_conf).run()
    with backend.get_connection() as conn:
        stored = conn.get_flow_details(flow_detail.uuid)
        assert {ad.name: ad.state for ad in stored} == {"a": states.SUCCESS, "b": states.IGNORE, "c": states.IGNORE}
        c = next(ad for ad in stored if ad.name == "c")
        c.reset(states.PENDING)
        conn.update_atom_details(c)
        stored.state = states.RUNNING
        conn.update_flow_details(stored)
        conn.flush()
    resumed = engines.load(make_flow(), flow_detail=stored, backend=backend, **engine_conf)
    resumed.run()
    assert len(asked) == 1
    assert resumed.storage.get_atom_state("c") == states.IGNORE
    assert resumed.storage.get_flow_state() == states.SUCCESS


# -- targeted flows ------------------------------------------------------------------------


def _chain(package: str) -> tuple[Any, list[Any]]:
    task = _m(package, "task")
    graph_flow = _m(package, "patterns.graph_flow")

    class Step(task.Task):
        def execute(self, **inputs: Any) -> str:
            return self.name + "".join(sorted(inputs.values()))

    a = Step("a", provides="x")
    b = Step("b", provides="y", requires=["x"])
    c = Step("c", provides="z", requires=["y"])
    lone = Step("lone", provides="w")
    flow = graph_flow.TargetedFlow("targeted")
    flow.add(a, b, c, lone)
    return flow, [a, b, c, lone]


def test_targeted_flow_runs_only_the_target_and_what_it_needs(package: str, engine_conf: dict[str, Any]) -> None:
    engines = _m(package, "engines")
    flow, (a, b, c, lone) = _chain(package)
    flow.set_target(b)
    assert {item.name for item in flow} == {"a", "b"}
    assert engines.run(flow, **engine_conf) == {"x": "a", "y": "ba"}


def test_targeted_flow_follows_links_and_forgets_the_target_on_reset(
    package: str, engine_conf: dict[str, Any]
) -> None:
    engines = _m(package, "engines")
    flow, (a, b, c, lone) = _chain(package)
    flow.link(lone, b)
    flow.set_target(b)
    assert {item.name for item in flow} == {"a", "b", "lone"}
    assert set(engines.run(flow, **engine_conf)) == {"x", "y", "w"}
    flow.reset_target()
    assert set(engines.run(flow, **engine_conf)) == {"x", "y", "z", "w"}


def test_targeting_an_item_not_in_the_flow_is_refused(package: str) -> None:
    flow, _ = _chain(package)
    stranger = _named_task(package)("stranger")
    with pytest.raises(ValueError):
        flow.set_target(stranger)


# -- map and reduce tasks ---------------------------------------------------------------------


def test_map_functor_task_maps_over_its_inputs_in_order(package: str, engine_conf: dict[str, Any]) -> None:
    engines = _m(package, "engines")
    task = _m(package, "task")
    linear_flow = _m(package, "patterns.linear_flow")

    def double(value: int) -> int:
        return value * 2

    flow = linear_flow.Flow("map").add(
        task.MapFunctorTask(double, requires=["b", "a"], provides=("db", "da")),
        task.MapFunctorTask(double, name="as-list", requires=["a", "b"], provides="doubled"),
    )
    results = engines.run(flow, store={"a": 1, "b": 10}, **engine_conf)
    assert (results["db"], results["da"], results["doubled"]) == (20, 2, [2, 20])


def test_reduce_functor_task_folds_its_inputs_in_order(package: str, engine_conf: dict[str, Any]) -> None:
    engines = _m(package, "engines")
    task = _m(package, "task")
    linear_flow = _m(package, "patterns.linear_flow")
    flow = linear_flow.Flow("reduce").add(
        task.ReduceFunctorTask(lambda left, right: left + right, name="join", requires=["c", "a", "b"], provides="s")
    )
    assert engines.run(flow, store={"a": "A", "b": "B", "c": "C"}, **engine_conf)["s"] == "CAB"


def test_map_and_reduce_functors_are_checked_when_made(package: str) -> None:
    task = _m(package, "task")
    with pytest.raises(ValueError):
        task.MapFunctorTask(lambda left, right: left, requires=["a"])
    with pytest.raises(ValueError):
        task.ReduceFunctorTask(lambda value: value, requires=["a", "b"])
    with pytest.raises(ValueError):
        task.ReduceFunctorTask(lambda left, right: left, requires=["a"])
    with pytest.raises(ValueError):
        task.MapFunctorTask("not callable", requires=["a"])
    with pytest.raises(TypeError):
        task.MapFunctorTask(lambda value: value, requires=3)
