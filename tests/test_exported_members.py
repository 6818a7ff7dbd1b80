"""Pin the public surface: a change to any ``__all__`` shows up here, in review.

The TaskFlow-compatible module paths are part of the surface: a TaskFlow user ports by
replacing ``taskflow`` with ``flowkit`` in imports.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

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
        "Sleep",
        "WaitFor",
        "LinearFlow",
        "UnorderedFlow",
        "GraphFlow",
        "load",
        "run",
        "start",
        "result",
        "FlowHandle",
        "signals",
        "as_task",
        "RetryPolicy",
        "Failure",
        "states",
        "exceptions",
        "__version__",
    },
    "flowkit.task": {
        "Task",
        "FunctorTask",
        "heartbeat",
        "current_context",
        "MapFunctorTask",
        "ReduceFunctorTask",
        "TaskContext",
        "EVENT_UPDATE_PROGRESS",
    },
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
    "flowkit.patterns.graph_flow": {"Flow", "TargetedFlow", "Depth"},
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
        "BROKEN",
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
        "InvalidFormat",
        "raise_with_cause",
        "AtomNotPicklable",
        "NotFound",
        "UnknownFactory",
        "UnknownChoice",
        "MissingConnection",
        "InvalidState",
        "StorageFailure",
        "ExecutionFailure",
        "WrappedFailure",
        "FlowDetailLocked",
        "FlowChanged",
        "ResultNotStorable",
        "ExecutorLost",
        "Cancelled",
        "WaitTimeout",
        "HeartbeatTimeout",
        "Broken",
        "SignalAlreadySent",
        "NotStarted",
        "JobFailure",
        "UnclaimableJob",
        "NotOwner",
        "LeaseLost",
        "LockLost",
        "CorruptLogbook",
        "InconsistentLogbook",
        "RuleError",
        "UnknownKind",
        "ResourceExists",
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
        "JobStatus",
        "FencedBackend",
    },
    "flowkit.jobs.base": {
        "JobState",
        "JobPriority",
        "Claim",
        "CancelRequest",
        "FailureRecord",
        "JobStatus",
        "Job",
        "JobBoard",
        "DEFAULT_LEASE_TTL",
        "DEFAULT_MAX_DETAILS_BYTES",
        "MAX_ERROR_CHARS",
        "MAX_OUTCOME_CHARS",
        "TRANSITIONS",
        "check_job_transition",
        "FencedBackend",
        "FencedConnection",
    },
    "flowkit.persistence.codec": {
        "canonical",
        "copy",
        "same",
        "to_data",
        "from_data",
        "encode",
        "encoded_size",
        "ValueType",
        "register_type",
        "unregister_type",
        "MAX_DEPTH",
        "FAILURE_KEY",
        "TYPE_KEY",
    },
    "flowkit.persistence.base": {
        "Backend",
        "Connection",
        "FlowLock",
        "ProcessFlowLock",
        "DEFAULT_MAX_RESULT_BYTES",
        "check_max_result_bytes",
    },
    "flowkit.jobs.backends": {"fetch", "backend", "KINDS", "DEFAULT_REDIS_URL", "DEFAULT_SQLITE_URL"},
    "flowkit.jobs.backends.impl_memory": {"MemoryJobBoard"},
    "flowkit.jobs.backends.impl_sql": {"SQLJobBoard", "JobTables", "make_job_tables", "DEFAULT_POLL_INTERVAL"},
    "flowkit.jobs.backends.impl_redis": {"RedisJobBoard", "KEY_PREFIX"},
    "flowkit.testing.jobboards": {"JobBoardTests", "FakeClock", "MakeBoard"},
    "flowkit.testing.clock": {"VirtualClock"},
    "flowkit.clock": {"Clock", "SYSTEM", "as_clock"},
    "flowkit.waits": {"Wait", "Sleep", "WaitFor", "WAIT_KEY", "WAKE_KEY"},
    "flowkit.reconcile": {
        "Rule",
        "Reconciler",
        "ReconcilerRegistry",
        "default_reconcilers",
        "register",
        "DEFAULT_MAX_ERRORS",
        "Resources",
        "KEEP",
        "DEFAULT_MAX_FACTS_BYTES",
        "Driver",
        "lock_key",
        "RESOURCE_KEY",
        "DEFAULT_POLL",
        "DEFAULT_BATCH",
        "Resource",
        "ResourceStatus",
        "STATUS_TRANSITIONS",
        "Operation",
    },
    "flowkit.policies": {"RetryPolicy", "ATTEMPTS_KEY", "ERRORS_KEY", "MAX_RECORDED_ATTEMPTS"},
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
    "flowkit.listeners.claims": {"CheckingClaimListener"},
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
    # changing flows: the recorded structure, migrations, and the plan of a resume
    "flowkit.versioning": {
        "Difference",
        "Migration",
        "compare",
        "apply_migration",
        "check_resume",
        "fingerprint",
        "STRUCTURE_KEY",
        "CHANGES_KEY",
        "DROPPED_KEY",
        "MAX_RECORDED_ATOMS",
    },
    "flowkit.plan": {"Plan", "PlanStep", "Action", "plan_flow_detail"},
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
        "JOB_PARKED",
    },
    "flowkit.conductors.backends": {"fetch", "CONDUCTORS", "BlockingConductor", "NonBlockingConductor"},
    "flowkit.conductors.posting": {"post_flow"},
    "flowkit.conductors.cli": {"add_commands", "board_conf", "DEFAULT_BOARD_NAME"},
    "flowkit.metrics": {
        "enable_metrics",
        "disable_metrics",
        "FlowkitMetrics",
        "MetricsListener",
        "serve_metrics",
        "MetricsServer",
        "INSTALL_HINT",
    },
    "flowkit.tracing": {
        "enable_tracing",
        "disable_tracing",
        "tracing_enabled",
        "TracingListener",
        "TRACER_NAME",
        "INSTALL_HINT",
    },
    "flowkit.web": {"create_app", "ACTIONS", "INTERRUPTED", "LIMITS", "SESSION_COOKIE"},
    "flowkit.web.cli": {"add_commands", "DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV"},
    "flowkit.atom": {"Atom", "AtomKind", "ProvidesSpec", "RebindSpec", "RequiresSpec"},
    "flowkit.cli": {"main", "DEFAULT_BACKEND", "BACKEND_ENV", "EXIT_CODES"},
    "flowkit.conductors.backends.impl_blocking": {"BlockingConductor"},
    "flowkit.conductors.backends.impl_nonblocking": {"NonBlockingConductor", "default_max_simultaneous_jobs"},
    "flowkit.conductors.base": {
        "Conductor",
        "JOB_CLAIMED",
        "RUNNING_START",
        "RUNNING_END",
        "JOB_CONSUMED",
        "JOB_CANCELLING",
        "JOB_CANCELLED",
        "JOB_ABANDONED",
        "JOB_LOST",
        "JOB_TRASHED",
        "JOB_PARKED",
        "JOB_KEY",
        "DEFAULT_SIGNAL_POLL",
        "EVENTS",
        "DEFAULT_WAIT_TIMEOUT",
        "DEFAULT_MAX_CONDUCTOR_FAILURES",
        "DEFAULT_BACKOFF",
        "DEFAULT_MAX_BACKOFF",
    },
    "flowkit.decorators": {"as_task", "TaskFactory"},
    "flowkit.engines.distributed": {
        "DistributedExecutor",
        "DaskFlag",
        "DaskChannel",
        "INSTALL_HINT",
        "local_cluster_options",
    },
    "flowkit.engines.engine": {"Engine", "EngineStatistics"},
    "flowkit.engines.executors": {
        "AtomExecutor",
        "Outcome",
        "SerialExecutor",
        "ThreadExecutor",
        "ProcessExecutor",
        "GreenThreadExecutor",
        "WrappedExecutor",
        "FileFlag",
        "FileChannel",
        "run_execute",
        "run_revert",
        "make_executor",
    },
    "flowkit.engines.helpers": {
        "load_from_factory",
        "flow_from_detail",
        "load_from_detail",
        "save_factory_details",
        "FACTORY_KEY",
    },
    "flowkit.flow": {"Flow", "Item"},
    "flowkit.persistence": {"models", "backends", "base"},
    "flowkit.persistence.backends": {"fetch", "backend", "Backend", "MemoryBackend", "SQLAlchemyBackend"},
    "flowkit.persistence.backends.impl_memory": {"MemoryBackend"},
    "flowkit.persistence.backends.impl_dir": {"DirBackend", "DirConnection"},
    "flowkit.persistence.backends.impl_sqlalchemy": {
        "SQLAlchemyBackend",
        "SQLAlchemyConnection",
        "DURABILITIES",
        "normalize_url",
        "lock_key",
        "mysql_lock_name",
    },
    "flowkit.persistence.models": {
        "LogBook",
        "FlowDetail",
        "AtomDetail",
        "TaskDetail",
        "RetryDetail",
        "to_data",
        "atom_detail_from_data",
        "ATTEMPT_KEY",
        "flow_detail_from_data",
        "logbook_from_data",
    },
    "flowkit.signals": {
        "send",
        "get",
        "subscribe",
        "MAX_SIGNAL_BYTES",
        "MAX_IDEMPOTENCY_KEY_LENGTH",
        "DEFAULT_SIGNAL_POLL",
    },
    "flowkit.cancellation": {
        "request",
        "CancelRequest",
        "pending_request",
        "CANCEL_KEY",
        "CANCEL_POLL",
        "MAX_REASON_LENGTH",
    },
    "flowkit.storage": {"Storage", "extract_result", "provided_result"},
    "flowkit.starts": {
        "start",
        "flow_uuid",
        "NAMESPACE",
        "FlowHandle",
        "result",
        "FINAL_STATES",
        "FIRST_POLL",
        "MAX_POLL",
    },
    "flowkit.testing": {"persistence", "jobboards", "clock"},
    "flowkit.testing.persistence": {"PersistenceBackendTests", "sample_logbook", "same_records"},
    "flowkit.types.notifier": {"Notifier", "RestrictedNotifier", "Listener"},
    "flowkit.types.cancellation": {"CancelToken", "CancelFlag", "FLAG_POLL"},
    "flowkit.types.heartbeat": {
        "Pulse",
        "HeartbeatChannel",
        "HEARTBEAT_POLL",
        "SEND_EVERY",
        "SAVE_EVERY",
        "HEARTBEAT_KEY",
    },
    # TaskFlow's module paths
    "flowkit.utils.persistence_utils": {"temporary_log_book", "temporary_flow_detail", "create_flow_detail"},
    "flowkit.logging": {
        "getLogger",
        "BLATHER",
        "TRACE",
        "CRITICAL",
        "FATAL",
        "ERROR",
        "WARNING",
        "WARN",
        "INFO",
        "DEBUG",
        "NOTSET",
    },
    "flowkit.deciders": {"Depth", "pick_widest"},
    "flowkit.formatters": {"FailureFormatter", "AtomNode"},
    "flowkit.engines.action_engine.engine": {
        "ActionEngine",
        "SerialActionEngine",
        "ParallelActionEngine",
        "DistributedActionEngine",
        "ENGINE_CLASSES",
    },
    "flowkit.types.graph": {"Graph", "DiGraph", "OrderedGraph", "OrderedDiGraph", "merge_graphs"},
    # packages whose modules are imported by name, and re-export nothing
    "flowkit.utils": set(),
    "flowkit.engines.action_engine": set(),
    "flowkit.types": set(),
    "flowkit.persistence.migrations": set(),
    "flowkit.persistence.migrations.versions": set(),
}


def _assigned_names(tree: ast.Module) -> set[str]:
    """The names a module assigns at top level."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def _modules_declaring_all() -> set[str]:
    """Every module under ``flowkit/`` without an underscore in its name that assigns ``__all__``.

    Read from the source, so a module is found even when importing it needs an
    optional dependency.
    """
    package = Path(__file__).resolve().parent.parent / "flowkit"
    found = set()
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if any(part.startswith("_") for part in parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if "__all__" in _assigned_names(tree):
            found.add(".".join(parts))
    return found


def test_every_public_module_is_pinned() -> None:
    # A module that becomes public (loses its underscore, or gains an __all__) must be added above.
    declared = _modules_declaring_all()
    assert sorted(declared - set(PUBLIC_MODULES)) == []
    assert sorted(set(PUBLIC_MODULES) - declared) == []


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
    import flowkit.starts
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
    assert flowkit.start is flowkit.starts.start
    assert flowkit.result is flowkit.starts.result
    assert flowkit.FlowHandle is flowkit.starts.FlowHandle
    assert flowkit.Failure is Failure
    assert flowkit.states is states
    assert flowkit.exceptions is exceptions


def test_every_exception_is_under_the_root() -> None:
    from flowkit import exceptions

    for name in exceptions.__all__:
        if name == "raise_with_cause":  # the one function: it raises them
            continue
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
