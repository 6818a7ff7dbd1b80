"""load_from_factory() / flow_from_detail() / load_from_detail(): rebuild a flow from its logbook.

These run in one process against the memory backend; ``tests/persistence/test_crash_resume.py``
kills real processes and resumes against a database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowkit import states
from flowkit.engines import flow_from_detail, load_from_detail, load_from_factory
from flowkit.exceptions import UnknownFactory, WrappedFailure
from flowkit.factories import flow_factory
from flowkit.patterns import linear_flow
from flowkit.persistence.backends import MemoryBackend
from flowkit.persistence.backends.impl_memory import MemoryConnection
from flowkit.persistence.models import FlowDetail, LogBook, flow_detail_from_data, to_data
from tests.support import BoomError, Capture, Const, Double, Fail, Undoable


@flow_factory
def make_chain(start: int, fail: bool = False) -> Any:
    """a -> b -> c doubling ``start``; with ``fail``, a failing last task reverts it all."""
    flow = linear_flow.Flow("chain").add(
        Const(name="a", provides="x", inject={"value": start}),
        Double(name="b", provides="y", rebind=["x"]),
        Double(name="c", provides="z", rebind=["y"]),
    )
    if fail:
        flow.add(Undoable(name="undo"), Fail(name="boom"))
    return flow


class Factories:
    """Holds a static factory, which is importable by its qualified name."""

    @staticmethod
    @flow_factory
    def chain(start: int) -> Any:
        return make_chain(start)


def not_a_flow() -> Any:
    return 42


def test_load_from_factory_records_how_to_rebuild(engine_options: dict[str, Any]) -> None:
    engine = load_from_factory(make_chain, factory_args=[3], factory_kwargs={"fail": False}, **engine_options)
    record = engine.flow_detail.meta["factory"]
    assert record == {
        "name": "tests.engines.test_load_from_detail:make_chain",
        "args": [3],
        "kwargs": {"fail": False},
    }
    engine.run()
    assert engine.storage.fetch("z") == 12


def test_static_method_factories_are_importable(engine_options: dict[str, Any]) -> None:
    engine = load_from_factory(Factories.chain, factory_args=(2,), **engine_options)
    assert engine.flow_detail.meta["factory"]["name"].endswith(":Factories.chain")
    assert flow_from_detail(engine.flow_detail).name == "chain"


def test_unimportable_factories_are_refused() -> None:
    def nested(start: int) -> Any:
        return make_chain(start)

    with pytest.raises(ValueError, match="cannot be imported by name"):
        load_from_factory(lambda: make_chain(1))
    with pytest.raises(ValueError, match="<locals>"):
        load_from_factory(nested, factory_args=[1])


def test_non_json_factory_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="factory_kwargs of 'tests.engines.test_load_from_detail:make_chain'"):
        load_from_factory(make_chain, factory_args=[1], factory_kwargs={"fail": object()})


def test_a_factory_must_return_a_flow() -> None:
    with pytest.raises(TypeError, match="returned 'int', not a flow"):
        load_from_factory(not_a_flow)


def test_flow_from_detail_without_a_record_names_the_flow_detail() -> None:
    detail = FlowDetail(name="orphan")
    with pytest.raises(ValueError, match=r"flow detail 'orphan' \(%s\): it has no factory record" % detail.uuid):
        flow_from_detail(detail)


def test_flow_from_detail_with_a_factory_that_is_gone() -> None:
    detail = FlowDetail(name="gone")
    detail.meta["factory"] = {"name": "tests.no_such_module:make", "args": [], "kwargs": {}}
    with pytest.raises(UnknownFactory, match="flow detail 'gone'.*'tests.no_such_module:make' is not registered"):
        flow_from_detail(detail)
    detail.meta["factory"] = {"name": "tests.engines.test_load_from_detail:missing", "args": [], "kwargs": {}}
    with pytest.raises(UnknownFactory, match="'tests.engines.test_load_from_detail:missing' is not registered"):
        flow_from_detail(detail)
    # Allowed to be imported, but not there.
    with pytest.raises(UnknownFactory, match="has no 'missing'"):
        flow_from_detail(detail, allowed_modules=["tests.engines"])


def test_flow_from_detail_when_the_factory_fails() -> None:
    detail = FlowDetail(name="bad-args")
    detail.meta["factory"] = {"name": "tests.engines.test_load_from_detail:make_chain", "args": [], "kwargs": {}}
    with pytest.raises(ValueError, match="flow detail 'bad-args'.*failed .TypeError"):
        flow_from_detail(detail)


def test_resume_a_suspended_flow_with_a_rebuilt_flow(engine_options: dict[str, Any]) -> None:
    with MemoryBackend() as backend:
        first = load_from_factory(make_chain, factory_args=[5], backend=backend, **engine_options)
        first_capture = Capture(first)

        def suspend_after_a(state: Any, details: dict[str, Any]) -> None:
            if details["atom_name"] == "a" and state == states.SUCCESS:
                first.suspend()

        first.atom_notifier.register("*", suspend_after_a)
        first.run()
        assert first.storage.get_flow_state() == states.SUSPENDED

        with backend.get_connection() as conn:
            detail = conn.get_flow_details(first.flow_detail.uuid)
        second = load_from_detail(detail, backend=backend, **engine_options)
        assert second.flow is not first.flow
        second_capture = Capture(second)
        second.run()

        assert second.storage.get_flow_state() == states.SUCCESS
        assert second.storage.fetch("z") == 20
        assert first_capture.executed("a") == 1 and second_capture.executed("a") == 0
        assert second_capture.executed("b") == 1 and second_capture.executed("c") == 1
        with backend.get_connection() as conn:
            books = list(conn.get_logbooks())
        # Resuming kept the flow detail in its logbook rather than filing it in a new one.
        assert len(books) == 1 and [fd.uuid for fd in books[0]] == [detail.uuid]


def test_finished_flows_can_be_loaded_and_inspected(engine_options: dict[str, Any]) -> None:
    with MemoryBackend() as backend:
        done = load_from_factory(make_chain, factory_args=[1], backend=backend, **engine_options)
        done.run()
        failed = load_from_factory(
            make_chain, factory_args=[1], factory_kwargs={"fail": True}, backend=backend, **engine_options
        )
        with pytest.raises(BoomError):
            failed.run()

        inspected = load_from_detail(done.flow_detail, backend=backend, **engine_options)
        assert inspected.storage.get_flow_state() == states.SUCCESS
        assert inspected.storage.fetch_all() == {"x": 1, "y": 2, "z": 4}

        inspected = load_from_detail(failed.flow_detail, backend=backend, **engine_options)
        assert inspected.storage.get_flow_state() == states.REVERTED
        assert inspected.storage.get_atom_state("undo") == states.REVERTED
        assert inspected.storage.get_failures()["boom"].check(BoomError)


# -- crash windows, reproduced in one process ---------------------------------------------


class _FlushSnapshots(MemoryConnection):
    """A memory connection that records the logbook's image at every flush.

    A backend may buffer writes until ``flush()`` (group commit), so the image at a
    flush is exactly what a process killed before the next flush leaves behind.
    """

    def flush(self) -> None:
        for fd_uuid in list(self.backend.flows):
            self.backend.images.append(to_data(self.get_flow_details(fd_uuid)))  # type: ignore[attr-defined]


class _SnapshotBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, Any]] = []

    def get_connection(self) -> MemoryConnection:
        return _FlushSnapshots(self)


def _resume_image(image: dict[str, Any], engine_options: dict[str, Any]) -> Any:
    """Load the flow detail as it was in ``image`` into a fresh backend and resume it."""
    detail = flow_detail_from_data(image)
    book = LogBook(name="crashed")
    book.add(detail)
    backend = MemoryBackend()
    with backend.get_connection() as conn:
        conn.save_logbook(book)
    engine = load_from_detail(detail, backend=backend, **engine_options)
    from tests.persistence.crash_child import CrashTestError

    try:
        engine.run()
    except CrashTestError as error:  # the failing task ran (again) after the image
        assert str(error) == "boom failed"
    except WrappedFailure as error:
        # Failures read back from a logbook are data (no exception object), so
        # the one that reverted the flow comes back wrapped.
        assert [failure.exception_str for failure in error] == ["boom failed"]
    return engine


SCENARIO_OUTCOMES = {
    "linear": (states.SUCCESS, "after_d", ["a", "b", "c", "d"]),
    "unordered": (states.SUCCESS, "after_d", ["a", "d"]),
    "revert": (states.REVERTED, None, None),
    "retry": (states.SUCCESS, "after_c", ["a", "b", "flaky", "c"]),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIO_OUTCOMES))
def test_resume_from_every_durable_image(tmp_path: Path, engine_options: dict[str, Any], scenario: str) -> None:
    """A crash right after any flush leaves an image that resumes to the same end.

    This covers the windows a child process is unlikely to be killed in, such as
    between a retry region's record and the resets of its scope (a bug once: the
    record went first, and a crash in between left a controller nothing scheduled).
    """
    from tests.persistence import crash_child

    final_state, symbol, value = SCENARIO_OUTCOMES[scenario]
    backend = _SnapshotBackend()
    engine = load_from_factory(
        crash_child.make_flow,
        factory_kwargs={"scenario": scenario, "journal": str(tmp_path / "journal.txt")},
        store={"start": []},
        backend=backend,
        **engine_options,
    )
    try:
        engine.run()
    except crash_child.CrashTestError:
        pass
    assert engine.storage.get_flow_state() == final_state
    # At least: the first atom's RUNNING record, a later round, the flow's end.  How many
    # more depends on how completions batch (a parallel round is one flush).
    assert len(backend.images) >= 3
    for number, image in enumerate(backend.images):
        resumed = _resume_image(image, engine_options)
        assert resumed.storage.get_flow_state() == final_state, "image %d: %r" % (number, image)
        if symbol is not None:
            assert resumed.storage.fetch(symbol) == value, "image %d: %r" % (number, image)
