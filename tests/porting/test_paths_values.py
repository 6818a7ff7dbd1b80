"""Errors, failures, storage, logbook models and capture, imported as TaskFlow code imports them."""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from typing import Any

import pytest


def _m(package: str, path: str) -> Any:
    return importlib.import_module("%s.%s" % (package, path))


# -- exceptions -----------------------------------------------------------------------


def test_raise_with_cause_chains_the_exception_being_handled(package: str) -> None:
    exceptions = _m(package, "exceptions")
    with pytest.raises(exceptions.StorageFailure) as info:
        try:
            {}["missing"]
        except KeyError:
            exceptions.raise_with_cause(exceptions.StorageFailure, "could not read the logbook")
    assert "could not read the logbook" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)


def test_raise_with_cause_takes_an_explicit_cause(package: str) -> None:
    exceptions = _m(package, "exceptions")
    cause = OSError("disk gone")
    with pytest.raises(exceptions.StorageFailure) as info:
        exceptions.raise_with_cause(exceptions.StorageFailure, "no write", cause=cause)
    assert info.value.__cause__ is cause


def test_raise_with_cause_refuses_a_class_outside_the_library(package: str) -> None:
    exceptions = _m(package, "exceptions")
    with pytest.raises(ValueError):
        exceptions.raise_with_cause(KeyError, "not ours")


def test_invalid_format_is_a_library_error(package: str) -> None:
    exceptions = _m(package, "exceptions")
    assert issubclass(exceptions.InvalidFormat, exceptions.TaskFlowException)


# -- failures ---------------------------------------------------------------------------


def _failure(package: str) -> Any:
    failure = _m(package, "types.failure")
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        return failure.Failure()


def test_iterating_a_failure_yields_its_type_names_most_derived_first(package: str) -> None:
    assert list(_failure(package)) == ["ZeroDivisionError", "ArithmeticError", "Exception"]


def test_a_failure_of_a_user_class_iterates_qualified_names(package: str) -> None:
    failure = _m(package, "types.failure")

    class QuotaExceeded(LookupError):
        pass

    try:
        raise QuotaExceeded("over")
    except QuotaExceeded:
        names = list(failure.Failure())
    assert names[0].endswith("QuotaExceeded")
    assert names[1:] == ["LookupError", "Exception"]


def test_validate_accepts_what_to_dict_writes(package: str) -> None:
    failure = _m(package, "types.failure")
    assert failure.Failure.validate(_failure(package).to_dict()) is None


@pytest.mark.parametrize(
    "data",
    [
        {"x": 1},
        {"exception_str": "m", "traceback_str": "", "exc_type_names": []},
        {"exception_str": 3, "traceback_str": "", "exc_type_names": ["ValueError"]},
        {"exception_str": "m", "traceback_str": "", "exc_type_names": ["ValueError"], "version": -1},
        {"exception_str": "m", "traceback_str": "", "exc_type_names": ["ValueError"], "causes": [{"x": 1}]},
    ],
    ids=["no-keys", "no-type-names", "message-not-text", "negative-version", "bad-cause"],
)
def test_validate_refuses_what_is_not_a_failure(package: str, data: dict[str, Any]) -> None:
    exceptions = _m(package, "exceptions")
    failure = _m(package, "types.failure")
    with pytest.raises(exceptions.InvalidFormat):
        failure.Failure.validate(data)


# -- persistence_utils, storage and the models --------------------------------------------


def test_temporary_flow_detail_is_saved_in_the_backend(package: str) -> None:
    persistence_utils = _m(package, "utils.persistence_utils")
    impl_memory = _m(package, "persistence.backends.impl_memory")
    backend = impl_memory.MemoryBackend()
    book, flow_detail = persistence_utils.temporary_flow_detail(backend, meta={"purpose": "test"})
    with contextlib.closing(backend.get_connection()) as conn:
        stored = conn.get_logbook(book.uuid)
    assert [fd.uuid for fd in stored] == [flow_detail.uuid]
    assert stored.find(flow_detail.uuid).meta["purpose"] == "test"


def test_create_flow_detail_names_it_after_the_flow(package: str) -> None:
    persistence_utils = _m(package, "utils.persistence_utils")
    impl_memory = _m(package, "persistence.backends.impl_memory")
    linear_flow = _m(package, "patterns.linear_flow")
    backend = impl_memory.MemoryBackend()
    book = persistence_utils.temporary_log_book(backend)
    flow_detail = persistence_utils.create_flow_detail(linear_flow.Flow("orders"), book=book, backend=backend)
    assert flow_detail.name == "orders"
    with contextlib.closing(backend.get_connection()) as conn:
        assert [fd.name for fd in conn.get_logbook(book.uuid)] == ["orders"]


def test_create_flow_detail_without_a_backend_saves_nothing(package: str) -> None:
    persistence_utils = _m(package, "utils.persistence_utils")
    linear_flow = _m(package, "patterns.linear_flow")
    flow_detail = persistence_utils.create_flow_detail(linear_flow.Flow("orders"), meta={"k": 1})
    assert flow_detail.name == "orders"
    assert flow_detail.meta["k"] == 1


def test_storage_built_on_a_backend(package: str) -> None:
    persistence_utils = _m(package, "utils.persistence_utils")
    impl_memory = _m(package, "persistence.backends.impl_memory")
    storage = _m(package, "storage")
    backend = impl_memory.MemoryBackend()
    _, flow_detail = persistence_utils.temporary_flow_detail(backend)
    s = storage.Storage(flow_detail, backend=backend)
    assert s.backend is backend
    assert s.flow_uuid == flow_detail.uuid
    assert s.flow_name == flow_detail.name
    assert s.flow_meta is flow_detail.meta
    s.inject({"x": 1})
    assert s.fetch("x") == 1


class _Add:
    """Built per package: a task adding its two inputs."""

    @staticmethod
    def make(package: str) -> Any:
        task = _m(package, "task")

        class Add(task.Task):
            def execute(self, x: int, y: int) -> int:
                return x + y

        return Add


def test_storage_names_the_atom_details_of_a_run(package: str) -> None:
    engines = _m(package, "engines")
    linear_flow = _m(package, "patterns.linear_flow")
    persistence_utils = _m(package, "utils.persistence_utils")
    impl_memory = _m(package, "persistence.backends.impl_memory")
    backend = impl_memory.MemoryBackend()
    book, flow_detail = persistence_utils.temporary_flow_detail(backend)
    flow = linear_flow.Flow("sums").add(_Add.make(package)("add", provides="sum"))
    engine = engines.load(flow, store={"x": 1, "y": 2}, book=book, flow_detail=flow_detail, backend=backend)
    engine.run()
    atom_uuid = engine.storage.get_atom_uuid("add")
    with contextlib.closing(backend.get_connection()) as conn:
        stored = conn.get_flow_details(flow_detail.uuid)
    assert [ad.uuid for ad in stored if ad.name == "add"] == [atom_uuid]
    assert engine.storage.flow_uuid == flow_detail.uuid
    assert engine.storage.fetch("sum") == 3


def test_pformat_describes_the_logbook_its_flows_and_atoms(package: str) -> None:
    models = _m(package, "persistence.models")
    book = models.LogBook("orders-book")
    flow_detail = models.FlowDetail("orders", uuid="fd-1")
    flow_detail.add(models.TaskDetail("reserve", uuid="ad-1"))
    book.add(flow_detail)
    text = book.pformat()
    lines = text.splitlines()
    assert lines[0] == "LogBook: 'orders-book'"
    assert " - uuid = %s" % book.uuid in lines
    assert " FlowDetail: 'orders'" in lines
    assert "  - uuid = fd-1" in lines
    assert "  TaskDetail: 'reserve'" in lines
    assert "   - uuid = ad-1" in lines
    assert flow_detail.pformat().splitlines()[0] == "FlowDetail: 'orders'"
    assert flow_detail.pformat(indent=2).splitlines()[0] == "  FlowDetail: 'orders'"


# -- listeners and logging ---------------------------------------------------------------


def test_capture_listener_kinds_reach_format_capture(package: str) -> None:
    engines = _m(package, "engines")
    linear_flow = _m(package, "patterns.linear_flow")
    capturing = _m(package, "listeners.capturing")

    class TupleCapture(capturing.CaptureListener):
        @staticmethod
        def _format_capture(kind: str, state: Any, details: Any) -> Any:
            return (kind, str(state))

    flow = linear_flow.Flow("sums").add(_Add.make(package)("add"))
    engine = engines.load(flow, store={"x": 1, "y": 2})
    with TupleCapture(engine, capture_flow=True) as capture:
        engine.run()
    assert (capturing.CaptureListener.FLOW, "RUNNING") in capture.values
    assert (capturing.CaptureListener.TASK, "SUCCESS") in capture.values
    assert {kind for kind, _ in capture.values} == {"flow", "task"}
    assert capturing.CaptureListener.RETRY == "retry"


def test_blather_is_below_debug_and_trace_logs_at_it(package: str, caplog: pytest.LogCaptureFixture) -> None:
    tf_logging = _m(package, "logging")
    assert tf_logging.BLATHER == tf_logging.TRACE < tf_logging.DEBUG == logging.DEBUG
    log = tf_logging.getLogger("%s.tests.porting" % package)
    with caplog.at_level(tf_logging.BLATHER, logger="%s.tests.porting" % package):
        log.trace("chatty %s", "detail")
        log.warn("old spelling")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (tf_logging.BLATHER, "chatty detail"),
        (logging.WARNING, "old spelling"),
    ]


# -- backends as context managers ------------------------------------------------------------


def test_persistence_backend_context_manager(package: str, tmp_path: Any) -> None:
    backends = _m(package, "persistence.backends")
    models = _m(package, "persistence.models")
    conf = {"connection": "sqlite:///%s" % (tmp_path / "book.db")}
    with backends.backend(conf) as backend:
        with contextlib.closing(backend.get_connection()) as conn:
            conn.save_logbook(models.LogBook("kept"))
    with backends.backend(conf) as backend:
        with contextlib.closing(backend.get_connection()) as conn:
            assert [book.name for book in conn.get_logbooks()] == ["kept"]


def test_sqlalchemy_backend_takes_a_conf_dict(package: str, tmp_path: Any) -> None:
    impl_sqlalchemy = _m(package, "persistence.backends.impl_sqlalchemy")
    models = _m(package, "persistence.models")
    backend = impl_sqlalchemy.SQLAlchemyBackend({"connection": "sqlite:///%s" % (tmp_path / "conf.db")})
    try:
        with contextlib.closing(backend.get_connection()) as conn:
            conn.upgrade()
            conn.save_logbook(models.LogBook("from-conf"))
            assert [book.name for book in conn.get_logbooks()] == ["from-conf"]
    finally:
        backend.close()


def test_sqlalchemy_backend_conf_with_an_unknown_option_is_refused() -> None:
    from flowkit.persistence.backends.impl_sqlalchemy import SQLAlchemyBackend

    with pytest.raises(ValueError, match="'pool_sizee'"):
        SQLAlchemyBackend({"connection": "sqlite://", "pool_sizee": 3})
    with pytest.raises(ValueError, match="'durability' is 'full' in the conf"):
        SQLAlchemyBackend({"connection": "sqlite://", "durability": "full"}, durability="normal")


def test_job_board_context_manager_connects_and_closes(package: str) -> None:
    if package == "taskflow":
        pytest.skip("TaskFlow's boards need ZooKeeper, Redis or etcd; flowkit's memory board stands in")
    jobs_backends = _m(package, "jobs.backends")
    with jobs_backends.backend("porting", {"board": "memory"}) as board:
        board.post("job-1", details={"k": 1})
        assert [job.name for job in board.iterjobs()] == ["job-1"]


def test_no_stray_module_shadows_the_stdlib_logging() -> None:
    # flowkit.logging must never be what ``import logging`` finds inside flowkit.
    import flowkit.logging  # noqa: F401
    import flowkit.utils.persistence_utils as persistence_utils

    assert persistence_utils.logging is sys.modules["logging"]


def test_a_run_on_a_directory_backend_is_read_back_by_another_backend(package: str, tmp_path: Any) -> None:
    backends = _m(package, "persistence.backends")
    engines = _m(package, "engines")
    linear_flow = _m(package, "patterns.linear_flow")
    persistence_utils = _m(package, "utils.persistence_utils")
    states = _m(package, "states")
    conf = {"connection": "dir", "path": str(tmp_path / "books")}
    with backends.backend(conf) as backend:
        book, flow_detail = persistence_utils.temporary_flow_detail(backend)
        flow = linear_flow.Flow("sums").add(_Add.make(package)("add", provides="sum"))
        engines.load(flow, store={"x": 1, "y": 2}, book=book, flow_detail=flow_detail, backend=backend).run()
    with backends.backend(conf) as again:
        with contextlib.closing(again.get_connection()) as conn:
            stored = conn.get_logbook(book.uuid).find(flow_detail.uuid)
    assert stored.state == states.SUCCESS
    assert [(ad.name, ad.state, ad.results) for ad in stored if ad.name == "add"] == [("add", states.SUCCESS, 3)]


def test_job_boards_live_at_taskflows_module_paths(package: str) -> None:
    impl_redis = _m(package, "jobs.backends.impl_redis")
    base = _m(package, "jobs.base")
    assert issubclass(impl_redis.RedisJobBoard, base.JobBoard)
    if package == "flowkit":  # TaskFlow has no memory or SQL board
        assert issubclass(_m(package, "jobs.backends.impl_memory").MemoryJobBoard, base.JobBoard)
        assert issubclass(_m(package, "jobs.backends.impl_sql").SQLJobBoard, base.JobBoard)
