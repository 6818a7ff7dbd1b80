"""The engine side: find resources away from their target, post one job per resource, record the results.

A :class:`Driver` works the resources of its kinds in the database of a SQL
job board that shares the logbook's database (the resources table lives
there too).  One :meth:`Driver.step`:

1. *settles* every resource whose operation's job is final: a job COMPLETE
   with a SUCCESS flow moves ``current`` to the rule's ``leads_to`` and resets
   that rule's error count; any other end (REVERTED, FAILURE, CANCELLED,
   TRASHED) adds one to it and records the error, and past the rule's
   ``max_errors`` the resource is BROKEN, or its rollback state becomes its
   target (a new generation) when it has one;
2. *starts* the next operation of every resource that needs one: the rule
   for (current, target) names a registered flow factory; its job is posted
   with the resource's lock key (at most one claimed job per resource, across
   machines) and, after a failure, a delay from the rule's retry policy (a
   durable delayed job, not a sleeping thread).

Each resource is changed in one transaction that reads its row first (``FOR
UPDATE`` on PostgreSQL and MySQL; SQLite's write transaction excludes
everyone) and checks the operation in flight is still the one it is about to
settle, or that none is; the job is posted in that same transaction.  So
several drivers (one per conductor process) may work one kind: exactly one
settles an operation, exactly one starts the next, and a driver killed
half-way leaves nothing half-written.  Settling right after a settle starts
the next operation at once; a conductor the driver is :meth:`attached
<Driver.attach>` to settles each job as it consumes it.  A driver that missed
that (it was killed between the consume and the settle) settles on its next
step, since the job's end is in the jobs table.

Rows are data: a rule is found by the name stored on the row among the
reconciler's rules, and the flow by the rule's registered factory name; the
row names no code.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from flowkit import exceptions as exc
from flowkit.conductors.base import JOB_CANCELLED, JOB_CONSUMED, JOB_TRASHED, Conductor
from flowkit.engines.helpers import FACTORY_KEY
from flowkit.factories import FactoryRegistry, default_registry
from flowkit.jobs.backends.impl_sql import SQLJobBoard
from flowkit.jobs.base import JobState
from flowkit.persistence.models import FlowDetail, LogBook
from flowkit.reconcile._rules import Reconciler, ReconcilerRegistry, Rule, default_reconcilers
from flowkit.reconcile._store import Resources, clip
from flowkit.reconcile._values import ResourceStatus

__all__ = ["Driver", "DEFAULT_POLL", "DEFAULT_BATCH", "RESOURCE_KEY", "lock_key"]

LOG = logging.getLogger(__name__)

#: Longest (real seconds) a driver goes without looking for resources to work on.
DEFAULT_POLL = 0.25
#: How many resources one step settles or starts at most, of each.
DEFAULT_BATCH = 200
#: The key of a reconciler job's ``details`` naming its resource (``{"kind": ..., "id": ...}``).
RESOURCE_KEY = "resource"

_FINAL = (JobState.COMPLETE.value, JobState.CANCELLED.value, JobState.TRASHED.value)
_CONVERGING = ResourceStatus.CONVERGING.value


def lock_key(kind: str, resource_id: str) -> str:
    """The job board lock key of a resource (a digest when kind and id are too long for the board's keys)."""
    key = "reconcile:%s:%s" % (kind, resource_id)
    if len(key) <= SQLJobBoard.max_key_chars:
        return key
    return "reconcile:" + hashlib.sha256(("%s\x00%s" % (kind, resource_id)).encode("utf-8")).hexdigest()


class Driver:
    """Moves the resources of ``kinds`` toward their targets through jobs on ``board`` (see the module docs).

    ``board`` is a :class:`~flowkit.jobs.backends.impl_sql.SQLJobBoard`
    whose logbooks are in its own database.  ``kinds`` are looked up in
    ``reconcilers`` (default:
    ``default_reconcilers``); every rule's factory must
    be known to ``factories`` (default: the process-wide registry), checked
    here, so a missing one is an error at start, not a job failing later.
    ``poll`` bounds how long a running driver (:meth:`start`) waits between
    steps; ``batch`` how much one step takes on.
    """

    def __init__(
        self,
        board: SQLJobBoard,
        kinds: Iterable[str],
        *,
        reconcilers: ReconcilerRegistry | None = None,
        factories: FactoryRegistry | None = None,
        poll: float = DEFAULT_POLL,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        if not isinstance(board, SQLJobBoard):
            raise TypeError("a reconciler's driver needs the SQL job board, got %r" % (board,))
        board.connect()
        if not board.shares_logbook:
            raise ValueError(
                "board %r keeps its logbooks in another database; the resources, jobs and logbooks must share one"
                % (board.name,)
            )
        if not poll > 0:
            raise ValueError("poll must be positive, got %r" % (poll,))
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError("batch must be a positive int, got %r" % (batch,))
        registry = reconcilers if reconcilers is not None else default_reconcilers
        self.reconcilers: dict[str, Reconciler] = {}
        for kind in kinds:
            self.reconcilers[kind] = registry.get(kind)
        if not self.reconcilers:
            raise ValueError("a driver needs at least one kind of resource to work on")
        factories = factories if factories is not None else default_registry
        for reconciler in self.reconcilers.values():
            for rule in reconciler.rules:
                try:
                    factories.resolve(rule.factory_name)
                except exc.UnknownFactory as error:
                    raise exc.UnknownFactory(
                        "kind %r: rule %r names flow factory %r, which is not registered here: %s"
                        % (reconciler.kind, rule.name, rule.factory_name, error),
                        rule.factory_name,
                    ) from error
        self.board = board
        self.store = Resources(board.db, reconcilers=registry, clock=board.clock)
        self.poll = float(poll)
        self.batch = batch
        self._jobs = board.tables.jobs
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one step ----------------------------------------------------------------------------

    def step(self) -> int:
        """Settle the finished operations, then start the operations due; how many resources changed."""
        changed = 0
        for kind, resource_id, job_uuid in self._finished():
            changed += self._settle(kind, resource_id, job_uuid)
        for kind, resource_id in self._waiting():
            changed += self._advance(kind, resource_id)
        return changed

    def settle(self, job_uuid: str) -> bool:
        """Settle the resource whose operation ran as ``job_uuid``, if that job is final; whether it changed."""
        t = self.store.tables.resources
        found = self.board._read(
            lambda conn: conn.execute(sa.select(t.c.kind, t.c.id).where(t.c.op_job == job_uuid)).first(),
            "the resource of job %s" % (job_uuid,),
        )
        if found is None or found[0] not in self.reconcilers:
            return False
        return bool(self._settle(found[0], found[1], job_uuid))

    def _finished(self) -> list[tuple[str, str, str]]:
        t, j = self.store.tables.resources, self._jobs
        stmt = (
            sa.select(t.c.kind, t.c.id, t.c.op_job)
            .select_from(t.join(j, j.c.uuid == t.c.op_job))
            .where(t.c.kind.in_(list(self.reconcilers)), t.c.status == _CONVERGING, j.c.state.in_(_FINAL))
            .limit(self.batch)
        )
        return self.board._read(lambda conn: [tuple(row) for row in conn.execute(stmt)], "finished operations")

    def _waiting(self) -> list[tuple[str, str]]:
        t = self.store.tables.resources
        stmt = (
            sa.select(t.c.kind, t.c.id)
            .where(t.c.kind.in_(list(self.reconcilers)), t.c.status == _CONVERGING, t.c.op_job.is_(None))
            .limit(self.batch)
        )
        return self.board._read(lambda conn: [tuple(row) for row in conn.execute(stmt)], "resources to work on")

    # -- settling ------------------------------------------------------------------------------

    def _job_end(self, job_uuid: str) -> tuple[str | None, str | None, str | None, str | None]:
        """``(state, outcome, last_error, flow_uuid)`` of an operation's job, read outside any transaction."""
        j, o = self._jobs, self.store.tables.operations

        def read(conn: sa.Connection) -> tuple[Any, Any]:
            job = conn.execute(sa.select(j.c.state, j.c.outcome, j.c.last_error).where(j.c.uuid == job_uuid)).first()
            flow = conn.execute(sa.select(o.c.flow_uuid).where(o.c.job_uuid == job_uuid)).first()
            return job, flow

        job, flow = self.board._read(read, "job %s" % (job_uuid,))
        if job is None:
            return None, None, None, None
        return job[0], job[1], job[2], flow[0] if flow is not None else None

    def _flow_error(self, flow_uuid: str | None) -> str | None:
        """What failed in the operation's flow, from its logbook (None if nothing is recorded)."""
        if flow_uuid is None:
            return None
        try:
            with self.board.db.get_connection() as conn:
                fd = conn.get_flow_details(flow_uuid)
        except exc.FlowkitError as error:
            return "its flow detail %s cannot be read: %s" % (flow_uuid, error)
        for ad in fd:
            failure = ad.failure
            if failure is not None:
                return "%s: %s: %s" % (ad.name, failure.exception_type_name, failure.exception_str)
        return None

    def _settle(self, kind: str, resource_id: str, job_uuid: str) -> int:
        state, outcome, job_error, flow_uuid = self._job_end(job_uuid)
        if state is None:
            success, outcome, error = False, "MISSING", "its job %s is not on the board" % (job_uuid,)
        elif state not in _FINAL:
            return 0
        else:
            success = state == JobState.COMPLETE.value and outcome == "SUCCESS"
            if state != JobState.COMPLETE.value:
                outcome = state
            error = None
            if not success:
                error = self._flow_error(flow_uuid) or job_error or "the operation's flow ended %s" % (outcome,)
        reconciler = self.reconcilers[kind]

        def apply(conn: sa.Connection) -> int:
            row = self.store.row(conn, kind, resource_id, for_update=True)
            if row["op_job"] != job_uuid:
                return 0  # another driver settled it
            o = self.store.tables.operations
            op = conn.execute(sa.select(o).where(o.c.job_uuid == job_uuid)).mappings().first()
            rule = reconciler.rule(row["op_rule"])
            errors = dict(self.store.to_resource(row).errors)
            updates: dict[str, Any] = {"op_rule": None, "op_job": None, "op_generation": None}
            rule_name = str(row["op_rule"])
            current, target, generation = row["current_state"], row["target_state"], row["generation"]
            status = ResourceStatus.CONVERGING
            if success and op is not None:
                current = op["leads_to"]
                errors.pop(rule_name, None)
                updates.update(current_state=current, last_error=None, reason=None)
            else:
                errors[rule_name] = errors.get(rule_name, 0) + 1
                failures = errors[rule_name]
                updates["last_error"] = clip("%s failed: %s" % (rule_name, error))
                limit = rule.max_errors if rule is not None else 1
                if failures >= limit:
                    rollback = row["rollback_state"]
                    if rollback is not None and rollback != target:
                        target, generation = rollback, generation + 1
                        errors = {}
                        updates.update(
                            target_state=target,
                            generation=generation,
                            reason="rolled back to %r after %d failure(s) in a row of %s"
                            % (rollback, failures, rule_name),
                        )
                    else:
                        status = ResourceStatus.BROKEN
                        updates.update(
                            status=status.value,
                            observed_generation=generation,
                            reason="%s failed %d time(s) in a row (max_errors %d): %s"
                            % (rule_name, failures, limit, error),
                        )
                        updates["reason"] = clip(updates["reason"])
            updates["errors"] = _json_counts(errors)
            conn.execute(
                sa.update(o)
                .where(o.c.job_uuid == job_uuid)
                .values(ended_at=self.board.clock.now(), outcome=outcome, error=clip(error))
            )
            if status is ResourceStatus.BROKEN:
                self.store.update(conn, row, updates)
                return 1
            merged = {**row, **updates}
            self._plan_and_start(conn, merged, updates, errors)
            return 1

        return self._write(apply, "settle the operation of resource %s/%s" % (kind, resource_id))

    # -- starting ------------------------------------------------------------------------------

    def _advance(self, kind: str, resource_id: str) -> int:
        def apply(conn: sa.Connection) -> int:
            row = self.store.row(conn, kind, resource_id, for_update=True)
            if row["op_job"] is not None or row["status"] != _CONVERGING:
                return 0
            errors = dict(self.store.to_resource(row).errors)
            self._plan_and_start(conn, row, {}, errors)
            return 1

        return self._write(apply, "start an operation on resource %s/%s" % (kind, resource_id))

    def _plan_and_start(
        self, conn: sa.Connection, row: Mapping[str, Any], updates: dict[str, Any], errors: Mapping[str, int]
    ) -> None:
        """With no operation in flight: record the status the rules give and start the next operation, if any."""
        kind, resource_id = row["kind"], row["id"]
        reconciler = self.reconcilers[kind]
        facts = self.store.decode_facts(row)
        status, reason, rule = reconciler.plan(row["current_state"], row["target_state"], facts)
        updates["status"] = status.value
        if status is not ResourceStatus.CONVERGING:
            updates.update(reason=reason, observed_generation=row["generation"])
            self.store.update(conn, row, updates)
            return
        assert rule is not None
        try:
            job_uuid, flow_uuid = self._post(conn, row, rule, facts, errors.get(rule.name, 0))
        except (exc.JobFailure, ValueError, TypeError) as error:
            # Checked before the board writes anything: the resource is not looped on.
            updates.update(
                status=ResourceStatus.UNREACHABLE.value,
                reason=clip("the job of %s cannot be posted: %s" % (rule.name, error)),
                observed_generation=row["generation"],
            )
            self.store.update(conn, row, updates)
            return
        updates.update(op_rule=rule.name, op_job=job_uuid, op_generation=row["generation"])
        self.store.update(conn, row, updates)
        conn.execute(
            sa.insert(self.store.tables.operations).values(
                kind=kind,
                resource_id=resource_id,
                rule=rule.name,
                job_uuid=job_uuid,
                flow_uuid=flow_uuid,
                from_state=row["current_state"],
                target_state=row["target_state"],
                leads_to=rule.leads_to,
                generation=row["generation"],
                started_at=self.board.clock.now(),
            )
        )

    def _post(
        self, conn: sa.Connection, row: Mapping[str, Any], rule: Rule, facts: Any, failures: int
    ) -> tuple[str, str]:
        """Post the operation's job in this transaction; its uuid and its flow detail's."""
        kind, resource_id = row["kind"], row["id"]
        name = "%s/%s: %s" % (kind, resource_id, rule.name)
        fd = FlowDetail(name=name)
        fd.meta[FACTORY_KEY] = {"name": rule.factory_name, "args": [], "kwargs": {}}
        store = {
            "resource": {
                "kind": kind,
                "id": resource_id,
                "current": row["current_state"],
                "target": row["target_state"],
                "generation": row["generation"],
            },
            "facts": facts,
        }
        fd.meta["store"] = store
        book = LogBook(name=name)
        book.add(fd)
        delay = rule.backoff(failures)
        job = self.board.post(
            name,
            book=book,
            details={"flow_uuid": fd.uuid, "store": store, RESOURCE_KEY: {"kind": kind, "id": resource_id}},
            resources=(lock_key(kind, resource_id),),
            connection=conn,
            delay=delay if delay > 0 else None,
        )
        return job.uuid, fd.uuid

    def _write(self, fn: Any, what: str) -> int:
        try:
            with self.board.begin() as conn:
                return int(fn(conn))
        except sa.exc.SQLAlchemyError as error:
            raise exc.StorageFailure("could not %s: %s" % (what, error)) from error

    # -- running -------------------------------------------------------------------------------

    def attach(self, conductor: Conductor) -> None:
        """Settle each reconciler job as soon as ``conductor`` finishes it (and wake the running driver)."""

        def finished(event: str, details: Mapping[str, Any]) -> None:
            job = details.get("job")
            if job is None or not isinstance(getattr(job, "details", None), dict) or RESOURCE_KEY not in job.details:
                return
            try:
                self.settle(job.uuid)
            except exc.FlowkitError as error:
                LOG.warning("could not settle the operation of job %s at once: %s", job.uuid, error)
            self.wake()

        for event in (JOB_CONSUMED, JOB_CANCELLED, JOB_TRASHED):
            conductor.notifier.register(event, finished)

    def wake(self) -> None:
        """Make a running driver take its next step now."""
        self._wake.set()

    def start(self) -> None:
        """Step in a thread of its own until :meth:`stop`: at once when woken, else every ``poll`` seconds."""
        if self._thread is not None:
            raise exc.InvalidState("the driver is running already")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="reconcile-driver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread :meth:`start` started (after its current step)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def run(self, conductor: Conductor, max_dispatches: int | None = None) -> None:
        """Run ``conductor`` with this driver attached and stepping beside it, until the conductor stops."""
        self.attach(conductor)
        self.start()
        try:
            conductor.run(max_dispatches=max_dispatches)
        finally:
            self.stop()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = self.step() > 0
            except exc.FlowkitError as error:
                LOG.warning("reconciling %s: %s", ", ".join(self.reconcilers), error)
                busy = False
            if not busy:
                self._wake.wait(self.poll)
            self._wake.clear()


def _json_counts(errors: Mapping[str, int]) -> str:
    import json

    return json.dumps(dict(sorted(errors.items())), separators=(",", ":"))
