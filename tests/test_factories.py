"""flowkit.factories: what a flow detail's factory name may resolve to, and nothing else."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flowkit import states
from flowkit.cli import main
from flowkit.conductors import JOB_CONSUMED, fetch, post_flow
from flowkit.engines import flow_from_detail, load_from_detail, load_from_factory
from flowkit.exceptions import NotFound, UnknownFactory
from flowkit.factories import ENTRY_POINT_GROUP, FactoryRegistry, default_registry, flow_factory, register
from flowkit.jobs.backends.impl_memory import MemoryJobBoard
from flowkit.jobs.base import JobState
from flowkit.patterns import linear_flow
from flowkit.persistence import codec
from flowkit.persistence.backends import MemoryBackend
from flowkit.persistence.backends import fetch as fetch_backend
from flowkit.persistence.models import FlowDetail, LogBook
from tests.support import Name

ALLOWED = "tests.factory_modules.allowed"
CALLS: list[tuple[Any, ...]] = []


@flow_factory
def make_named(*names: str) -> Any:
    """One task per name (at least one); records each call in CALLS."""
    CALLS.append(names)
    return linear_flow.Flow("named").add(*(Name(name=n) for n in names or ("only",)))


@flow_factory("tests.custom-name")
def make_custom() -> Any:
    return linear_flow.Flow("custom").add(Name(name="custom"))


@flow_factory(name="tests.keyword-name")
def make_keyword() -> Any:
    return linear_flow.Flow("keyword").add(Name(name="keyword"))


def unregistered() -> Any:
    return linear_flow.Flow("unregistered").add(Name(name="x"))


def detail_naming(name: str, args: Any = (), kwargs: Any = None, flow: str = "stored") -> FlowDetail:
    detail = FlowDetail(name=flow)
    detail.meta["factory"] = {"name": name, "args": list(args) if isinstance(args, tuple) else args,
                              "kwargs": {} if kwargs is None else kwargs}
    return detail


# -- registering ------------------------------------------------------------------------------


def test_the_decorator_registers_under_the_import_path_or_a_given_name() -> None:
    assert default_registry.resolve("tests.test_factories:make_named") is make_named
    assert default_registry.resolve("tests.custom-name") is make_custom
    assert default_registry.resolve("tests.keyword-name") is make_keyword
    assert {"tests.test_factories:make_named", "tests.custom-name"} <= default_registry.names()
    assert "tests.custom-name" in default_registry and "tests.test_factories:unregistered" not in default_registry
    assert default_registry.name_of(make_custom) == "tests.custom-name"
    assert default_registry.name_of(unregistered) is None


def test_a_name_belongs_to_one_factory() -> None:
    registry = FactoryRegistry(entry_points=False)
    registry.register(make_named, "one")
    assert registry.register(make_named, "one") is make_named  # again: a no-op
    with pytest.raises(ValueError, match="'one' is already registered to"):
        registry.register(unregistered, "one")
    registry.unregister("one")
    registry.register(unregistered, "one")
    assert registry.resolve("one") is unregistered


def test_nameless_callables_need_a_name() -> None:
    registry = FactoryRegistry(entry_points=False)
    with pytest.raises(ValueError, match="register it under a name of your own"):
        registry.register(lambda: None)
    registry.register(lambda: make_named("l"), "a-lambda")
    assert registry.resolve("a-lambda")().name == "named"
    with pytest.raises(ValueError, match="must be callable"):
        registry.register(42, "x")  # type: ignore[arg-type]


def test_registering_in_a_custom_registry_and_resolving_there_only(engine_options: dict[str, Any]) -> None:
    registry = FactoryRegistry(entry_points=False)
    register(unregistered)  # in the default registry, which an explicit one does not consult
    try:
        with MemoryBackend() as backend:
            engine = load_from_factory(make_custom, backend=backend, factories=registry, **engine_options)
            # The name it already had (in the default registry) is not this registry's business.
            assert engine.flow_detail.meta["factory"]["name"] == "tests.test_factories:make_custom"
            assert registry.resolve("tests.test_factories:make_custom") is make_custom
            resumed = load_from_detail(engine.flow_detail, backend=backend, factories=registry, **engine_options)
            resumed.run()
            assert resumed.storage.get_flow_state() == states.SUCCESS
            with pytest.raises(UnknownFactory):
                flow_from_detail(detail_naming("tests.test_factories:unregistered"), factories=registry)
    finally:
        default_registry.unregister("tests.test_factories:unregistered")


def test_load_from_factory_registers_what_it_records(engine_options: dict[str, Any]) -> None:
    registry = FactoryRegistry(entry_points=False)
    with MemoryBackend() as backend:
        engine = load_from_factory(unregistered, backend=backend, factories=registry, **engine_options)
        assert registry.name_of(unregistered) == "tests.test_factories:unregistered"
        assert "tests.test_factories:unregistered" not in default_registry
        resumed = load_from_detail(engine.flow_detail, backend=backend, factories=registry, **engine_options)
        resumed.run()
        assert resumed.storage.fetch_all() == {}
        assert resumed.storage.get_flow_state() == states.SUCCESS


def test_unknown_names_are_refused_before_any_import() -> None:
    detail = detail_naming("tests.factory_modules.allowed_evil:make_pair", flow="evil")
    with pytest.raises(UnknownFactory) as raised:
        flow_from_detail(detail)
    assert "tests.factory_modules.allowed_evil" not in sys.modules
    assert isinstance(raised.value, NotFound)
    assert raised.value.flow_detail_uuid == detail.uuid
    assert str(raised.value).startswith(
        "cannot rebuild the flow of flow detail 'evil' (%s): factory "
        "'tests.factory_modules.allowed_evil:make_pair' is not registered in this process" % detail.uuid
    )


def test_a_huge_stored_name_is_cut_in_the_message() -> None:
    with pytest.raises(UnknownFactory) as raised:
        flow_from_detail(detail_naming("x" * 40_000))
    assert len(str(raised.value)) < 1_000


# -- the allowlist -------------------------------------------------------------------------------


def test_an_allowed_prefix_imports_names_under_it(engine_options: dict[str, Any]) -> None:
    flow = flow_from_detail(detail_naming(ALLOWED + ":make_pair", ["q"]), allowed_modules=[ALLOWED])
    assert [atom.name for atom in flow] == ["q-a", "q-b"]
    flow = flow_from_detail(detail_naming(ALLOWED + ".sub:make_single"), allowed_modules=["tests.factory_modules"])
    assert [atom.name for atom in flow] == ["only"]
    registry = FactoryRegistry(allowed_modules=[ALLOWED], entry_points=False)
    with MemoryBackend() as backend:
        detail = detail_naming(ALLOWED + ":make_pair", ["r"])
        book = LogBook(name="allowed")
        book.add(detail)
        with backend.get_connection() as conn:
            conn.save_logbook(book)
        engine = load_from_detail(detail, backend=backend, factories=registry, **engine_options)
        engine.run()
        assert engine.storage.fetch_all() == {}
        assert engine.storage.get_atom_state("r-b") == states.SUCCESS


def test_an_allowed_prefix_matches_whole_dotted_components() -> None:
    detail = detail_naming("tests.factory_modules.allowed_evil:make_pair")
    with pytest.raises(UnknownFactory, match="is not under the allowed modules 'tests.factory_modules.allowed'"):
        flow_from_detail(detail, allowed_modules=[ALLOWED])
    assert "tests.factory_modules.allowed_evil" not in sys.modules
    with pytest.raises(UnknownFactory, match="not under the allowed modules"):
        flow_from_detail(detail_naming("tests.factory_modules:allowed"), allowed_modules=[ALLOWED])


def test_an_allowed_module_does_not_lend_its_name_to_code_it_imported(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    for name in (ALLOWED + ":system", ALLOWED + ":linear_flow.Flow", ALLOWED + ":__builtins__"):
        with pytest.raises(UnknownFactory):
            flow_from_detail(detail_naming(name, ["touch %s" % marker]), allowed_modules=[ALLOWED])
    assert not marker.exists()


def test_bad_allowlists_are_refused() -> None:
    with pytest.raises(TypeError, match="not the string"):
        FactoryRegistry(allowed_modules="myapp")
    for bad in ("", "myapp.", ".myapp", "my app"):
        with pytest.raises(ValueError, match="is not a dotted module name"):
            flow_from_detail(detail_naming("myapp:make"), allowed_modules=[bad])


def test_the_command_line_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "sqlite:///%s" % (tmp_path / "cli.db")
    detail = detail_naming(ALLOWED + ".sub:make_single", flow="via-cli")
    book = LogBook(name="cli")
    book.add(detail)
    with fetch_backend(url) as backend, backend.get_connection() as conn:
        conn.save_logbook(book)
    assert main(["resume", detail.uuid, "--backend", url]) == 2
    assert "--allow-module PREFIX" in capsys.readouterr().err
    assert main(["resume", detail.uuid, "--backend", url, "--allow-module", ALLOWED + "_x"]) == 2
    assert "not under the allowed modules" in capsys.readouterr().err
    assert main(["resume", detail.uuid, "--backend", url, "--allow-module", "x", "--allow-module", ALLOWED]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "flow 'via-cli' (%s): SUCCESS" % detail.uuid
    assert main(["resume", detail.uuid, "--backend", url, "--import", "tests.no_such_module"]) == 2
    assert "--import tests.no_such_module: ModuleNotFoundError" in capsys.readouterr().err


# -- entry points -------------------------------------------------------------------------------


@pytest.fixture
def distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution (a dist-info on sys.path) declaring two flowkit factories."""
    info = tmp_path / "flowkit_test_factories-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flowkit-test-factories\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [%s]
            test.entry = tests.factory_modules.entry_a:make_entry
            test.taken = tests.factory_modules.entry_b:make_other
            tests.factory_modules.entry_a:make_entry = tests.factory_modules.entry_a:make_entry
            """
            % ENTRY_POINT_GROUP
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("tests.factory_modules.entry_a", "tests.factory_modules.entry_b"):
        monkeypatch.delitem(sys.modules, module, raising=False)


@pytest.mark.usefixtures("distribution")
def test_entry_points_are_found_lazily_and_loaded_once() -> None:
    registry = FactoryRegistry()
    registry.register(make_custom, "test.taken")
    assert "test.entry" in registry and "test.entry" in registry.names()
    assert "tests.factory_modules.entry_a" not in sys.modules  # known by name, not loaded
    flow = flow_from_detail(detail_naming("test.entry"), factories=registry)
    assert flow.name == "from-entry-point"
    from tests.factory_modules import entry_a

    assert registry.resolve("test.entry") is entry_a.make_entry
    assert registry.name_of(entry_a.make_entry) == "test.entry"
    assert entry_a.LOADS == [1]
    # Named like what load_from_factory records, as a package declaring its factories would.
    assert registry.resolve("tests.factory_modules.entry_a:make_entry") is entry_a.make_entry
    # A registered name wins over an entry point: that one is never loaded.
    assert registry.resolve("test.taken") is make_custom
    assert "tests.factory_modules.entry_b" not in sys.modules


@pytest.mark.usefixtures("distribution")
def test_entry_points_can_be_left_out() -> None:
    registry = FactoryRegistry(entry_points=False)
    assert "test.entry" not in registry
    with pytest.raises(UnknownFactory):
        registry.resolve("test.entry")


# -- what is read back is checked ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        ("abc", {}, "args must be a JSON list, got str"),
        ({"a": 1}, {}, "args must be a JSON list, got dict"),
        ([], ["x"], "kwargs must be a JSON object, got list"),
        ([], {1: "x"}, r"kwargs are not JSON data: kwargs has a key 1 of type int \(only str keys"),
        (["a", {1, 2}], {}, r"args are not JSON data: args\[1\] is a builtins.set, which is not JSON data"),
        ([float("nan")], {}, r"args are not JSON data: args\[0\] is nan, which JSON cannot represent"),
    ],
)
def test_non_json_factory_arguments_are_refused_on_load(args: Any, kwargs: Any, message: str) -> None:
    CALLS.clear()
    detail = detail_naming("tests.test_factories:make_named", args, kwargs, flow="odd-args")
    with pytest.raises(ValueError, match=r"flow detail 'odd-args' \(%s\): its factory record's %s" % (detail.uuid,
                                                                                                         message)):
        flow_from_detail(detail)
    assert CALLS == []  # the factory was never called


def test_absurdly_deep_arguments_are_refused() -> None:
    deep: list[Any] = []
    for _ in range(5_000):
        deep = [deep]
    CALLS.clear()
    with pytest.raises(ValueError, match="is nested more than %d levels deep" % (codec.MAX_DEPTH,)):
        flow_from_detail(detail_naming("tests.test_factories:make_named", [deep]))
    assert CALLS == []


def test_a_stored_store_that_is_not_json_is_refused() -> None:
    with MemoryBackend() as backend:
        detail = detail_naming("tests.test_factories:make_named", ["a"], flow="odd-store")
        detail.meta["store"] = ["not", "a", "dict"]
        with pytest.raises(ValueError, match=r"cannot resume flow detail 'odd-store' .*meta\['store'\]"):
            load_from_detail(detail, backend=backend)


# -- conductors ------------------------------------------------------------------------------------


def test_a_conductor_runs_only_what_its_registry_knows(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    from tests.conductors import flows

    registry = FactoryRegistry(entry_points=False)
    with MemoryBackend() as persistence, MemoryJobBoard("f", persistence=persistence) as board:
        post_flow(board, flows.one_line, store={"log": str(log), "job": "known"})
        seen: list[tuple[str, Any]] = []
        conductor = fetch("blocking", "strict", board, persistence=persistence, factories=registry)
        conductor.notifier.register("*", lambda event, details: seen.append((event, details)))
        conductor.run(max_dispatches=1)
        assert not log.exists()  # the default registry knows one_line; this conductor's does not
        assert JOB_CONSUMED not in [event for event, _ in seen]
        assert any("'tests.conductors.flows:one_line' is not registered" in str(d.get("reason")) for _, d in seen)

    with MemoryBackend() as persistence, MemoryJobBoard("g", persistence=persistence) as board:
        job = post_flow(board, flows.one_line, store={"log": str(log), "job": "allowed"})
        conductor = fetch(
            "blocking", "allowing", board, persistence=persistence, factories=registry,
            allowed_modules=["tests.conductors"],
        )
        conductor.run(max_dispatches=1)
        assert log.read_text().split()[:2] == ["run", "allowed"]
        assert board.state_of(job) == JobState.COMPLETE
