"""Pin the public surface: a change to any ``__all__`` shows up here, in review.

The TaskFlow-compatible module paths are part of the surface: a TaskFlow user ports by
replacing ``taskflow`` with ``flowkit`` in imports.
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC_MODULES: dict[str, set[str]] = {
    "flowkit": {
        "Task",
        "FunctorTask",
        "Retry",
        "Decision",
        "Times",
        "ForEach",
        "ParameterizedForEach",
        "AlwaysRevert",
        "AlwaysRevertAll",
        "LinearFlow",
        "UnorderedFlow",
        "GraphFlow",
        "load",
        "run",
        "as_task",
        "Failure",
        "states",
        "exceptions",
        "__version__",
    },
    "flowkit.task": {"Task", "FunctorTask", "EVENT_UPDATE_PROGRESS"},
    "flowkit.retry": {
        "Decision",
        "RETRY",
        "REVERT",
        "REVERT_ALL",
        "History",
        "Retry",
        "Times",
        "ForEach",
        "ParameterizedForEach",
        "AlwaysRevert",
        "AlwaysRevertAll",
    },
    "flowkit.patterns": {"linear_flow", "unordered_flow", "graph_flow"},
    "flowkit.patterns.linear_flow": {"Flow"},
    "flowkit.patterns.unordered_flow": {"Flow"},
    "flowkit.patterns.graph_flow": {"Flow", "Depth"},
    "flowkit.states": {
        "State",
        "Intention",
        "PENDING",
        "RUNNING",
        "SUCCESS",
        "FAILURE",
        "REVERTING",
        "REVERTED",
        "REVERT_FAILURE",
        "SUSPENDED",
        "SUSPENDING",
        "RESUMING",
        "RETRYING",
        "IGNORE",
        "SCHEDULING",
        "WAITING",
        "ANALYZING",
        "GAME_OVER",
        "UNDEFINED",
        "EXECUTE",
        "REVERT",
        "RETRY",
        "check_flow_transition",
        "check_atom_transition",
        "check_task_transition",
        "check_retry_transition",
    },
    "flowkit.exceptions": {
        "FlowkitError",
        "TaskFlowException",
        "DefinitionError",
        "Duplicate",
        "DependencyFailure",
        "MissingDependencies",
        "AmbiguousDependency",
        "InvalidName",
        "AtomNotPicklable",
        "NotFound",
        "UnknownFactory",
        "InvalidState",
        "StorageFailure",
        "ExecutionFailure",
        "WrappedFailure",
        "FlowDetailLocked",
        "ResultNotStorable",
        "ExecutorLost",
        "Cancelled",
        "JobFailure",
        "UnclaimableJob",
        "NotOwner",
        "LeaseLost",
        "LockLost",
        "CorruptLogbook",
        "InconsistentLogbook",
    },
    "flowkit.jobs": {
        "JobBoard",
        "Job",
        "Claim",
        "CancelRequest",
        "JobState",
        "JobPriority",
        "DEFAULT_LEASE_TTL",
        "DEFAULT_MAX_DETAILS_BYTES",
        "FailureRecord",
        "FencedBackend",
    },
    "flowkit.jobs.base": {
        "JobState",
        "JobPriority",
        "Claim",
        "CancelRequest",
        "FailureRecord",
        "Job",
        "JobBoard",
        "DEFAULT_LEASE_TTL",
        "DEFAULT_MAX_DETAILS_BYTES",
        "MAX_ERROR_CHARS",
        "TRANSITIONS",
        "check_job_transition",
        "FencedBackend",
        "FencedConnection",
    },
    "flowkit.persistence.codec": {"canonical", "encode", "encoded_size", "MAX_DEPTH", "FAILURE_KEY"},
    "flowkit.persistence.base": {
        "Backend",
        "Connection",
        "FlowLock",
        "ProcessFlowLock",
        "DEFAULT_MAX_RESULT_BYTES",
        "check_max_result_bytes",
    },
    "flowkit.jobs.backends": {"fetch", "KINDS", "DEFAULT_REDIS_URL", "DEFAULT_SQLITE_URL"},
    "flowkit.jobs.impl_memory": {"MemoryJobBoard"},
    "flowkit.jobs.impl_sql": {"SQLJobBoard", "JobTables", "make_job_tables", "DEFAULT_POLL_INTERVAL"},
    "flowkit.jobs.impl_redis": {"RedisJobBoard", "KEY_PREFIX"},
    "flowkit.testing.jobboards": {"JobBoardTests", "FakeClock", "MakeBoard"},
    "flowkit.types.failure": {"Failure"},
    "flowkit.listeners": {
        "Listener",
        "DumpingListener",
        "ANY",
        "LoggingListener",
        "DynamicLoggingListener",
        "PrintingListener",
        "DurationListener",
        "PrintingDurationListener",
        "CaptureListener",
        "ProgressListener",
    },
    "flowkit.listeners.base": {"Listener", "ANY", "DumpingListener", "Event", "format_event", "mask_values", "MASK"},
    "flowkit.listeners.logging": {"LoggingListener", "DynamicLoggingListener"},
    "flowkit.listeners.printing": {"PrintingListener"},
    "flowkit.listeners.timing": {
        "DurationListener",
        "PrintingDurationListener",
        "DURATION_KEY",
        "REVERT_DURATION_KEY",
        "START_OFFSET_KEY",
    },
    "flowkit.listeners.capturing": {"CaptureListener", "FLOW", "TASK", "RETRY"},
    "flowkit.listeners.progress": {"ProgressListener"},
    "flowkit.graphs": {
        "to_dot",
        "STATE_COLORS",
        "render",
        "dot_program",
        "FORMATS",
        "GraphvizNotFound",
        "RenderFailed",
    },
    "flowkit.engines": {
        "load",
        "run",
        "Engine",
        "EngineStatistics",
        "ENGINE_MODES",
        "load_from_factory",
        "load_from_detail",
        "flow_from_detail",
        "save_factory_details",
    },
    "flowkit.factories": {"register", "flow_factory", "FactoryRegistry", "default_registry", "ENTRY_POINT_GROUP"},
    "flowkit.conductors": {
        "Conductor",
        "BlockingConductor",
        "NonBlockingConductor",
        "fetch",
        "post_flow",
        "EVENTS",
        "JOB_CLAIMED",
        "RUNNING_START",
        "RUNNING_END",
        "JOB_CONSUMED",
        "JOB_CANCELLING",
        "JOB_CANCELLED",
        "JOB_ABANDONED",
        "JOB_LOST",
        "JOB_TRASHED",
    },
    "flowkit.conductors.backends": {"fetch", "CONDUCTORS", "BlockingConductor", "NonBlockingConductor"},
    "flowkit.conductors.posting": {"post_flow"},
    "flowkit.conductors.cli": {"add_commands", "board_conf", "DEFAULT_BOARD_NAME"},
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES))
def test_module_all_is_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == PUBLIC_MODULES[module_name]


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES))
def test_every_exported_name_exists_and_is_listed_once(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert hasattr(module, name), "%s.__all__ names %r, which is missing" % (module_name, name)


def test_top_level_names_are_the_module_objects() -> None:
    import flowkit
    import flowkit.engines
    import flowkit.patterns.graph_flow
    import flowkit.patterns.linear_flow
    import flowkit.patterns.unordered_flow
    import flowkit.retry
    import flowkit.task
    from flowkit import exceptions, states
    from flowkit.types.failure import Failure

    assert flowkit.Task is flowkit.task.Task
    assert flowkit.FunctorTask is flowkit.task.FunctorTask
    assert flowkit.Retry is flowkit.retry.Retry
    assert flowkit.Times is flowkit.retry.Times
    assert flowkit.Decision is flowkit.retry.Decision
    assert flowkit.LinearFlow is flowkit.patterns.linear_flow.Flow
    assert flowkit.UnorderedFlow is flowkit.patterns.unordered_flow.Flow
    assert flowkit.GraphFlow is flowkit.patterns.graph_flow.Flow
    assert flowkit.load is flowkit.engines.load
    assert flowkit.run is flowkit.engines.run
    assert flowkit.Failure is Failure
    assert flowkit.states is states
    assert flowkit.exceptions is exceptions


def test_every_exception_is_under_the_root() -> None:
    from flowkit import exceptions

    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.FlowkitError), name


def test_exception_tree() -> None:
    from flowkit import exceptions as exc

    assert issubclass(exc.Duplicate, exc.DefinitionError)
    assert issubclass(exc.DependencyFailure, exc.DefinitionError)
    assert issubclass(exc.MissingDependencies, exc.DependencyFailure)
    assert issubclass(exc.AmbiguousDependency, exc.DefinitionError)
    assert issubclass(exc.InvalidName, exc.DefinitionError)
    assert not issubclass(exc.NotFound, exc.DefinitionError)
    assert not issubclass(exc.WrappedFailure, exc.DefinitionError)
