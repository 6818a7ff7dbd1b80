"""A job board in Redis (redis-py); every state change is one Lua script, so it is atomic.

Keys, all under ``flowkit:jobs:<board name>:`` (with ``%`` and ``:`` in the
name written ``%25`` and ``%3A``, so no board's keys lie inside another's
namespace: board ``a`` never owns ``flowkit:jobs:a:b:...``)::

    job:<uuid>       hash: name, details, book_uuid, book_name, priority, created_at,
                     idempotency_key, resources, state, owner, token, expires_at, cancel,
                     attempts, last_error, failed_by, due_at, parked, park_reason, woken, outcome
    open             sorted set of jobs not yet final (score: priority rank, then post order)
    ready            sorted set of the open jobs not under a claim and due (same score as ``open``)
    leases           sorted set of claimed jobs (score: when the lease expires)
    delayed          sorted set of unclaimed jobs with a due time: delayed posts, failed attempts
                     with a backoff, parked jobs (score: due time)
    seq              post counter (the order within a priority)
    idem             hash: idempotency key -> job uuid
    lock:<resource>  hash: holder (job uuid), token, expires
    events           pub/sub channel: a message on every post, finish and cancel

The scripts read the resource lock keys named inside the job, so the board
needs a single Redis server (not Redis Cluster).

A job parked until woken is in neither ``ready`` nor ``delayed`` (only in
``open``): nothing but :meth:`RedisJobBoard.wake` makes it claimable.
``next_due`` is one ``ZRANGEBYSCORE`` of ``delayed``.

``claim_next`` is one script: it first moves the jobs whose lease ran out
from ``leases``, and those come due in ``delayed``, back to ``ready``, then
claims the first job of ``ready`` whose resources are free.  A conductor therefore gets a job in one round
trip whatever the number of jobs on the board, and conductors racing for
jobs never collide (the script runs atomically).

``wait()`` subscribes to ``events`` and sleeps on the subscription (waking at
the next lease expiry or due time, on the board's clock, when one comes
sooner, since nothing is published when a lease lapses or a job comes due).
A jump of the board's clock (a virtual clock in tests) is published on
``events`` too, so waiters look again.  Fencing is the default of
:meth:`~flowkit.jobs.base.JobBoard.fenced_backend`: the claim is checked
just before each logbook flush, because the logbook lives elsewhere; a lease
lost during that one flush is noticed at the next.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flowkit import exceptions as exc
from flowkit._imports import missing_extra
from flowkit.clock import Clock
from flowkit.jobs.base import (
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_DETAILS_BYTES,
    CancelRequest,
    Claim,
    FailureRecord,
    Job,
    JobBoard,
    JobPriority,
    JobState,
    JobStatus,
    Posting,
    _clip_error,
)
from flowkit.persistence.base import Backend

__all__ = ["RedisJobBoard", "KEY_PREFIX"]

LOG = logging.getLogger(__name__)

#: Every key of a board named N starts with ``KEY_PREFIX + N + ":"`` (``%`` and ``:`` of N percent-encoded).
KEY_PREFIX = "flowkit:jobs:"

# What SCAN's MATCH pattern treats as special: each is matched literally once backslash-escaped.
_GLOB_SPECIAL = frozenset("*?[]\\")


def _namespace(name: str) -> str:
    """The key prefix of board ``name``: the name cannot contain the ``:`` that ends it."""
    return KEY_PREFIX + name.replace("%", "%25").replace(":", "%3A") + ":"


def _literal_pattern(text: str) -> str:
    """A SCAN MATCH pattern that matches exactly ``text``."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


_PRIORITIES = list(JobPriority)

# KEYS: job, open, seq, idem, ready, delayed.
# ARGV: idempotency key or "", rank, uuid, channel, due time or "", field, value, ...
_POST = """
local idem = ARGV[1]
if idem ~= '' then
  local existing = redis.call('HGET', KEYS[4], idem)
  if existing then return existing end
end
local seq = redis.call('INCR', KEYS[3])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'seq', seq, 'token', 0, 'state', 'UNCLAIMED')
local score = tonumber(ARGV[2]) * 1e12 + seq
redis.call('ZADD', KEYS[2], score, ARGV[3])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'due_at', ARGV[5])
  redis.call('ZADD', KEYS[6], tonumber(ARGV[5]), ARGV[3])
else
  redis.call('ZADD', KEYS[5], score, ARGV[3])
end
if idem ~= '' then redis.call('HSET', KEYS[4], idem, ARGV[3]) end
redis.call('PUBLISH', ARGV[4], 'post')
return ARGV[3]
"""

# try_claim(job key, uuid, who, now, expires, lock prefix, ready, leases, delayed): one job, atomically.
_TRY_CLAIM = """
local function try_claim(j, uuid, who, now, expires, lockp, ready, leases, delayed)
  if redis.call('EXISTS', j) == 0 then return {'notfound'} end
  local st = redis.call('HGET', j, 'state')
  if st == 'CLAIMED' and tonumber(redis.call('HGET', j, 'expires_at')) > now then
    return {'claimed', redis.call('HGET', j, 'owner'), redis.call('HGET', j, 'expires_at')}
  end
  if st ~= 'UNCLAIMED' and st ~= 'CLAIMED' then return {'final', st} end
  local due = redis.call('HGET', j, 'due_at')
  if st == 'UNCLAIMED' and due and tonumber(due) > now then return {'notdue', due} end
  if st == 'UNCLAIMED' and not due and redis.call('HEXISTS', j, 'parked') == 1 then return {'parked'} end
  local res = cjson.decode(redis.call('HGET', j, 'resources'))
  local busy = {}
  for _, key in ipairs(res) do
    local lk = lockp .. key
    local holder = redis.call('HGET', lk, 'holder')
    if holder and holder ~= uuid and tonumber(redis.call('HGET', lk, 'expires')) > now then
      table.insert(busy, key)
    end
  end
  if #busy > 0 then return {'busy', table.concat(busy, ', ')} end
  local token = redis.call('HINCRBY', j, 'token', 1)
  redis.call('HSET', j, 'state', 'CLAIMED', 'owner', who, 'expires_at', expires)
  redis.call('HDEL', j, 'parked', 'park_reason', 'woken')
  redis.call('ZREM', ready, uuid)
  redis.call('ZREM', delayed, uuid)
  redis.call('ZADD', leases, tonumber(expires), uuid)
  for _, key in ipairs(res) do
    redis.call('HSET', lockp .. key, 'holder', uuid, 'token', token, 'expires', expires)
  end
  return {'ok', tostring(token)}
end
"""

# KEYS: job, ready, leases, delayed.  ARGV: who, now, expires, lock prefix, uuid
_CLAIM = (
    _TRY_CLAIM
    + """
return try_claim(KEYS[1], ARGV[5], ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], KEYS[2], KEYS[3], KEYS[4])
"""
)

# KEYS: ready, leases, open, delayed.  ARGV: who, now, expires, lock prefix, job key prefix
# Returns {} when nothing is claimable, else {uuid, token, field, value, ...} (the job's hash).
_CLAIM_NEXT = (
    _TRY_CLAIM
    + """
local now = tonumber(ARGV[2])
for _, set in ipairs({KEYS[2], KEYS[4]}) do
  for _, uuid in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', now)) do
    redis.call('ZREM', set, uuid)
    local score = redis.call('ZSCORE', KEYS[3], uuid)
    if score then redis.call('ZADD', KEYS[1], score, uuid) end
  end
end
local start = 0
while true do
  local batch = redis.call('ZRANGE', KEYS[1], start, start + 99)
  if #batch == 0 then return {} end
  for _, uuid in ipairs(batch) do
    local j = ARGV[5] .. uuid
    local out = try_claim(j, uuid, ARGV[1], now, ARGV[3], ARGV[4], KEYS[1], KEYS[2], KEYS[4])
    if out[1] == 'ok' then
      local reply = {uuid, out[2]}
      for _, v in ipairs(redis.call('HGETALL', j)) do table.insert(reply, v) end
      return reply
    end
    if out[1] ~= 'busy' then redis.call('ZREM', KEYS[1], uuid) start = start - 1 end
  end
  start = start + #batch
end
"""
)

# KEYS: job, leases, ready.  ARGV: token, now, expires, lock prefix, uuid
_RENEW = """
local j = KEYS[1]
local st = redis.call('HGET', j, 'state')
if not st then return {'notfound'} end
local exp = tonumber(redis.call('HGET', j, 'expires_at') or '0')
if st ~= 'CLAIMED' or redis.call('HGET', j, 'token') ~= ARGV[1] or exp <= tonumber(ARGV[2]) then
  return {'lost'}
end
redis.call('HSET', j, 'expires_at', ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[5])
for _, key in ipairs(cjson.decode(redis.call('HGET', j, 'resources'))) do
  local lk = ARGV[4] .. key
  if redis.call('HGET', lk, 'holder') == ARGV[5] then redis.call('HSET', lk, 'expires', ARGV[3]) end
end
return {'ok'}
"""

# KEYS: job, open, ready, leases, delayed.
# ARGV: who, token or "", action, lock prefix, uuid, channel, error or "", due time (fail, park) or "",
#       outcome (consume) or reason (park) or "", now
_FINISH = """
local j = KEYS[1]
local st = redis.call('HGET', j, 'state')
if not st then return {'notfound'} end
if st ~= 'CLAIMED' or redis.call('HGET', j, 'owner') ~= ARGV[1]
   or (ARGV[2] ~= '' and redis.call('HGET', j, 'token') ~= ARGV[2]) then
  return {'notowner'}
end
local new
if ARGV[3] == 'consume' then
  if redis.call('HEXISTS', j, 'cancel') == 1 then new = 'CANCELLED' else new = 'COMPLETE' end
elseif ARGV[3] == 'abandon' or ARGV[3] == 'fail' or ARGV[3] == 'park' then new = 'UNCLAIMED' else new = 'TRASHED' end
local due = ARGV[8]
if ARGV[3] == 'park' and redis.call('HEXISTS', j, 'woken') == 1 then due = ARGV[10] end
if ARGV[7] ~= '' then
  redis.call('HINCRBY', j, 'attempts', 1)
  redis.call('HSET', j, 'last_error', ARGV[7])
  local failed = {}
  local stored = redis.call('HGET', j, 'failed_by')
  if stored then failed = cjson.decode(stored) end
  local seen = false
  for _, name in ipairs(failed) do if name == ARGV[1] then seen = true end end
  if not seen then table.insert(failed, ARGV[1]) end
  redis.call('HSET', j, 'failed_by', cjson.encode(failed))
end
redis.call('HSET', j, 'state', new)
redis.call('HDEL', j, 'owner', 'expires_at', 'due_at', 'parked', 'park_reason', 'woken')
redis.call('ZREM', KEYS[4], ARGV[5])
redis.call('ZREM', KEYS[5], ARGV[5])
if ARGV[3] == 'consume' and ARGV[9] ~= '' then redis.call('HSET', j, 'outcome', ARGV[9]) end
if ARGV[3] == 'park' then
  redis.call('HSET', j, 'parked', '1')
  if ARGV[9] ~= '' then redis.call('HSET', j, 'park_reason', ARGV[9]) end
  redis.call('ZREM', KEYS[3], ARGV[5])
end
if (ARGV[3] == 'fail' or ARGV[3] == 'park') and due ~= '' then
  redis.call('HSET', j, 'due_at', due)
  redis.call('ZADD', KEYS[5], tonumber(due), ARGV[5])
elseif ARGV[3] == 'park' then
  -- parked until woken: in no set a claimer looks at
elseif new == 'UNCLAIMED' then
  redis.call('ZADD', KEYS[3], redis.call('ZSCORE', KEYS[2], ARGV[5]), ARGV[5])
else
  redis.call('HDEL', j, 'cancel')
  redis.call('ZREM', KEYS[2], ARGV[5])
  redis.call('ZREM', KEYS[3], ARGV[5])
end
for _, key in ipairs(cjson.decode(redis.call('HGET', j, 'resources'))) do
  local lk = ARGV[4] .. key
  if redis.call('HGET', lk, 'holder') == ARGV[5] then redis.call('DEL', lk) end
end
redis.call('PUBLISH', ARGV[6], new)
return {'ok', new}
"""

# KEYS: job, open, ready, delayed.  ARGV: uuid, channel
_RESTORE = """
local j = KEYS[1]
local st = redis.call('HGET', j, 'state')
if not st then return {'notfound'} end
if st ~= 'TRASHED' then return {'nottrashed', st} end
redis.call('HSET', j, 'state', 'UNCLAIMED', 'attempts', 0)
redis.call('HDEL', j, 'owner', 'expires_at', 'failed_by', 'due_at', 'cancel', 'parked', 'park_reason', 'woken')
local score = tonumber(redis.call('HGET', j, 'priority')) * 1e12 + tonumber(redis.call('HGET', j, 'seq'))
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('ZADD', KEYS[3], score, ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'UNCLAIMED')
return {'ok'}
"""

# KEYS: job, open, ready, leases, delayed.  ARGV: now, mode, lock prefix, uuid, channel
_CANCEL = """
local j = KEYS[1]
local st = redis.call('HGET', j, 'state')
if not st then return 'notfound' end
local live = st
if st == 'CLAIMED' and tonumber(redis.call('HGET', j, 'expires_at')) <= tonumber(ARGV[1]) then live = 'UNCLAIMED' end
if live == 'UNCLAIMED' then
  redis.call('HSET', j, 'state', 'CANCELLED')
  redis.call('HDEL', j, 'owner', 'expires_at', 'cancel', 'parked', 'park_reason', 'woken')
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[4])
  redis.call('ZREM', KEYS[5], ARGV[4])
  for _, key in ipairs(cjson.decode(redis.call('HGET', j, 'resources'))) do
    local lk = ARGV[3] .. key
    if redis.call('HGET', lk, 'holder') == ARGV[4] then redis.call('DEL', lk) end
  end
  redis.call('PUBLISH', ARGV[5], 'CANCELLED')
  return 'CANCELLED'
end
if live == 'CLAIMED' then redis.call('HSET', j, 'cancel', ARGV[2]) end
return live
"""

# KEYS: job, open, ready, delayed.  ARGV: now, uuid, channel
_WAKE = """
local j = KEYS[1]
local st = redis.call('HGET', j, 'state')
if not st then return 'notfound' end
if st == 'CLAIMED' then
  redis.call('HSET', j, 'woken', '1')
  return 'claimed'
end
if st ~= 'UNCLAIMED' or redis.call('HEXISTS', j, 'parked') == 0 then return 'notparked' end
local due = redis.call('HGET', j, 'due_at')
if not due or tonumber(due) > tonumber(ARGV[1]) then
  redis.call('HSET', j, 'due_at', ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('ZADD', KEYS[3], redis.call('ZSCORE', KEYS[2], ARGV[2]), ARGV[2])
  redis.call('PUBLISH', ARGV[3], 'wake')
end
return 'woken'
"""


class RedisJobBoard(JobBoard):
    """Jobs in Redis; see the module docs.  ``url`` is a ``redis://`` URL."""

    def __init__(
        self,
        name: str,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        persistence: Backend | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        clock: Clock | Callable[[], float] | None = None,
        max_details_bytes: int = DEFAULT_MAX_DETAILS_BYTES,
    ) -> None:
        super().__init__(
            name, persistence=persistence, lease_ttl=lease_ttl, clock=clock, max_details_bytes=max_details_bytes
        )
        try:
            import redis
        except ImportError as error:
            raise missing_extra(error, "the Redis job board") from error

        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.prefix = _namespace(name)
        self._channel = self.prefix + "events"
        self._open = self.prefix + "open"
        self._ready = self.prefix + "ready"
        self._leases = self.prefix + "leases"
        self._delayed = self.prefix + "delayed"
        self._post_script = self.client.register_script(_POST)
        self._claim = self.client.register_script(_CLAIM)
        self._claim_next = self.client.register_script(_CLAIM_NEXT)
        self._renew = self.client.register_script(_RENEW)
        self._finish_script = self.client.register_script(_FINISH)
        self._cancel = self.client.register_script(_CANCEL)
        self._restore = self.client.register_script(_RESTORE)
        self._wake = self.client.register_script(_WAKE)

    def _key(self, uuid: str) -> str:
        return self.prefix + "job:" + uuid

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        import redis

        try:
            return fn()
        except redis.RedisError as error:
            raise exc.JobFailure(
                "could not %s on Redis board %r at %s: %s" % (what, self.name, self.url, error)
            ) from error

    # -- records ----------------------------------------------------------------------------

    def _job(self, uuid: str, h: Mapping[str, str]) -> Job:
        return Job(
            self,
            uuid=uuid,
            name=h["name"],
            details=json.loads(h.get("details") or "{}"),
            book_uuid=h.get("book_uuid") or None,
            book_name=h.get("book_name") or None,
            priority=_PRIORITIES[int(h["priority"])],
            created_on=datetime.datetime.fromtimestamp(float(h["created_at"]), datetime.timezone.utc),
            idempotency_key=h.get("idempotency_key") or None,
            resources=json.loads(h.get("resources") or "[]"),
        )

    def _hash(self, uuid: str) -> dict[str, str]:
        h: dict[str, str] = self._call(lambda: self.client.hgetall(self._key(uuid)), "read job %s" % (uuid,))
        if not h:
            raise exc.NotFound("no job %s on board %r" % (uuid, self.name))
        return h

    @staticmethod
    def _live(h: Mapping[str, str], now: float) -> JobState:
        state = JobState(h["state"])
        if state is JobState.CLAIMED and float(h["expires_at"]) <= now:
            return JobState.UNCLAIMED
        return state

    # -- posting and reading ------------------------------------------------------------------

    def _post(self, posting: Posting, connection: Any) -> Job:
        """Add the job in one server-side step (see :meth:`~flowkit.jobs.base.JobBoard.post`)."""
        name, book, idempotency_key = posting.name, posting.book, posting.idempotency_key
        prio, keys, encoded = posting.priority, posting.resources, posting.details_json
        if idempotency_key is not None:
            existing = self._call(lambda: self.client.hget(self.prefix + "idem", idempotency_key), "post")
            if existing:
                return self.get_job(existing)
        if book is not None and self.persistence is not None:
            with self.persistence.get_connection() as conn:
                conn.save_logbook(book)
                conn.flush()
        uuid = str(uuidlib.uuid4())
        fields: list[str] = []
        for key, value in (
            ("name", name),
            ("details", encoded),
            ("book_uuid", book.uuid if book is not None else ""),
            ("book_name", book.name if book is not None else ""),
            ("priority", str(prio.rank)),
            ("created_at", repr(self.clock())),
            ("idempotency_key", idempotency_key or ""),
            ("resources", json.dumps(list(keys))),
        ):
            fields += [key, value]
        posted = self._call(
            lambda: self._post_script(
                keys=[
                    self._key(uuid),
                    self._open,
                    self.prefix + "seq",
                    self.prefix + "idem",
                    self._ready,
                    self._delayed,
                ],
                args=[
                    idempotency_key or "",
                    prio.rank,
                    uuid,
                    self._channel,
                    "" if posting.due_at is None else repr(posting.due_at),
                    *fields,
                ],
            ),
            "post job %r" % (name,),
        )
        return self.get_job(posted)

    def get_job(self, job_uuid: str) -> Job:
        """The job ``job_uuid``; NotFound if absent."""
        return self._job(job_uuid, self._hash(job_uuid))

    def _open_hashes(self) -> list[tuple[str, dict[str, str]]]:
        def read() -> list[tuple[str, dict[str, str]]]:
            uuids: list[str] = list(self.client.zrange(self._open, 0, -1))  # type: ignore[arg-type]
            pipe = self.client.pipeline(transaction=False)
            for uuid in uuids:
                pipe.hgetall(self._key(uuid))
            return [(u, h) for u, h in zip(uuids, pipe.execute()) if h]

        result: list[tuple[str, dict[str, str]]] = self._call(read, "list jobs")
        return result

    def _all_hashes(self) -> list[tuple[str, dict[str, str]]]:
        """Every job of the board, final ones too, by priority then post order (a SCAN: for operators)."""
        job_prefix = self.prefix + "job:"

        def read() -> list[tuple[str, dict[str, str]]]:
            keys = sorted(self.client.scan_iter(match=_literal_pattern(job_prefix) + "*", count=500))
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            found = [(k[len(job_prefix) :], h) for k, h in zip(keys, pipe.execute()) if h]
            return sorted(found, key=lambda item: (int(item[1]["priority"]), int(item[1].get("seq") or 0)))

        result: list[tuple[str, dict[str, str]]] = self._call(read, "list every job")
        return result

    def iterjobs(
        self, only_unclaimed: bool = False, ensure_fresh: bool = False, *, include_final: bool = False
    ) -> Iterator[Job]:
        """Jobs not yet final (or all), by priority then age (see :meth:`~flowkit.jobs.base.JobBoard.iterjobs`)."""
        now = self.clock()
        hashes = self._all_hashes() if include_final else self._open_hashes()
        return iter(
            [self._job(u, h) for u, h in hashes if not only_unclaimed or self._live(h, now) is JobState.UNCLAIMED]
        )

    def state_of(self, job: Job | str) -> JobState:
        """The job's state now."""
        return self._live(self._hash(self._uuid_of(job)), self.clock())

    def find_owner(self, job: Job | str) -> str | None:
        """The owner of the job's live claim, or None."""
        h = self._hash(self._uuid_of(job))
        return h.get("owner") if self._live(h, self.clock()) is JobState.CLAIMED else None

    # -- claims ---------------------------------------------------------------------------------

    def claim(self, job: Job | str, who: str, *, ttl: float | None = None) -> Claim:
        """Lease the job to ``who`` (see :meth:`~flowkit.jobs.base.JobBoard.claim`)."""
        seconds = self._ttl(ttl)
        uuid = self._uuid_of(job)
        now = self.clock()
        expires = now + seconds
        out = self._call(
            lambda: self._claim(
                keys=[self._key(uuid), self._ready, self._leases, self._delayed],
                args=[who, repr(now), repr(expires), self.prefix + "lock:", uuid],
            ),
            "claim job %s" % (uuid,),
        )
        if out[0] == "ok":
            return Claim(uuid, who, int(out[1]), expires)
        if out[0] == "notfound":
            raise exc.NotFound("no job %s on board %r" % (uuid, self.name))
        if out[0] == "claimed":
            raise exc.UnclaimableJob("job %s is claimed by %r until %s" % (uuid, out[1], out[2]))
        if out[0] == "busy":
            raise exc.UnclaimableJob("job %s needs resource(s) %s held by another claimed job" % (uuid, out[1]))
        if out[0] in ("notdue", "parked"):
            h = self._hash(uuid)
            due = float(out[1]) if out[0] == "notdue" else None
            raise self._not_due(uuid, h["name"], due, now, int(h.get("attempts") or 0), h.get("last_error"))
        raise exc.UnclaimableJob("job %s is %s" % (uuid, out[1]))

    def claim_next(self, who: str, *, ttl: float | None = None) -> tuple[Job, Claim] | None:
        """Claim the first claimable job in one server-side step.

        See :meth:`~flowkit.jobs.base.JobBoard.claim_next`.
        """
        seconds = self._ttl(ttl)
        now = self.clock()
        expires = now + seconds
        out = self._call(
            lambda: self._claim_next(
                keys=[self._ready, self._leases, self._open, self._delayed],
                args=[who, repr(now), repr(expires), self.prefix + "lock:", self.prefix + "job:"],
            ),
            "claim a job",
        )
        if not out:
            return None
        uuid, token, fields = out[0], int(out[1]), out[2:]
        job = self._job(uuid, dict(zip(fields[::2], fields[1::2])))
        return job, Claim(uuid, who, token, expires)

    @property
    def job_count(self) -> int:
        """How many jobs are not final (one ZCARD)."""
        count: int = self._call(lambda: self.client.zcard(self._open), "count jobs")
        return count

    def _lost(self, claim: Claim, h: Mapping[str, str] | None) -> exc.LeaseLost:
        now = self.clock()
        if not h:
            return exc.LeaseLost("the claim of %r on job %s: the job is gone" % (claim.owner, claim.job_uuid))
        if h["state"] == "CLAIMED" and int(h["token"]) == claim.token:
            return exc.LeaseLost(
                "the claim of %r on job %s (token %d) expired %.3fs ago"
                % (claim.owner, claim.job_uuid, claim.token, now - float(h["expires_at"]))
            )
        return exc.LeaseLost(
            "the claim of %r on job %s (token %d) is gone: the job is %s with token %s"
            % (claim.owner, claim.job_uuid, claim.token, self._live(h, now).value, h["token"])
        )

    def renew(self, claim: Claim, *, ttl: float | None = None) -> Claim:
        """Extend a current claim (see :meth:`~flowkit.jobs.base.JobBoard.renew`)."""
        seconds = self._ttl(ttl)
        now = self.clock()
        expires = now + seconds
        uuid = claim.job_uuid
        out = self._call(
            lambda: self._renew(
                keys=[self._key(uuid), self._leases, self._ready],
                args=[str(claim.token), repr(now), repr(expires), self.prefix + "lock:", uuid],
            ),
            "renew the claim on job %s" % (uuid,),
        )
        if out[0] != "ok":
            raise self._lost(claim, self.client.hgetall(self._key(uuid)))  # type: ignore[arg-type]
        return dataclasses.replace(claim, expires_at=expires)

    def ensure_current(self, claim: Claim) -> CancelRequest | None:
        """LeaseLost unless ``claim`` is current; the pending cancel request, or None."""
        # The fields it needs, not the whole hash: this runs before every logbook flush.
        key = self._key(claim.job_uuid)
        fields = self._call(lambda: self.client.hmget(key, "state", "token", "expires_at", "cancel"), "check a claim")
        state, token, expires, mode = fields
        if state != "CLAIMED" or int(token) != claim.token or float(expires) <= self.clock():
            raise self._lost(claim, self._call(lambda: self.client.hgetall(key), "check a claim"))
        return None if not mode else CancelRequest(claim.job_uuid, mode == "revert")

    def _finish(
        self,
        job: Job | str,
        who: str,
        token: int | None,
        action: str,
        error: str | None = None,
        due: float | None = None,
        note: str | None = None,
    ) -> None:
        uuid = self._uuid_of(job)
        args = [who, "" if token is None else str(token), action, self.prefix + "lock:", uuid, self._channel]
        # An empty error would read as "no failure" in the script.
        args += ["" if error is None else (_clip_error(error) or "?"), "" if due is None else repr(due)]
        args += [note or "", repr(self.clock())]
        out = self._call(
            lambda: self._finish_script(
                keys=[self._key(uuid), self._open, self._ready, self._leases, self._delayed], args=args
            ),
            "%s job %s" % (action, uuid),
        )
        if out[0] == "notfound":
            raise exc.NotFound("no job %s on board %r" % (uuid, self.name))
        if out[0] != "ok":
            h = self._hash(uuid)
            holder = "%r (token %s)" % (h.get("owner"), h["token"]) if h["state"] == "CLAIMED" else "nobody"
            raise exc.NotOwner(
                "%r cannot %s job %s (%r): it is %s, claimed by %s"
                % (who, action, uuid, h["name"], self._live(h, self.clock()).value, holder)
            )

    def consume(self, job: Job | str, who: str, *, token: int | None = None, outcome: str | None = None) -> None:
        """COMPLETE (CANCELLED if a cancel was requested), ``outcome`` recorded; owner only."""
        self._finish(job, who, token, "consume", note=self._check_outcome(outcome))

    def park(
        self,
        job: Job | str,
        who: str,
        *,
        due: float | None,
        token: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Back to UNCLAIMED until ``due`` (None: until woken), no failure counted; owner only."""
        when = self._check_due(due)
        # An empty reason is stored as none.
        self._finish(job, who, token, "park", due=when, note=None if reason is None else _clip_error(reason))

    def wake(self, job: Job | str) -> bool:
        """Make a parked job due now in one server-side step (see :meth:`~flowkit.jobs.base.JobBoard.wake`)."""
        uuid = self._uuid_of(job)
        out = self._call(
            lambda: self._wake(
                keys=[self._key(uuid), self._open, self._ready, self._delayed],
                args=[repr(self.clock()), uuid, self._channel],
            ),
            "wake job %s" % (uuid,),
        )
        if out == "notfound":
            raise exc.NotFound("no job %s on board %r" % (uuid, self.name))
        return bool(out == "woken")

    def status_of(self, job: Job | str) -> JobStatus:
        """The job's state, due time, parking and outcome."""
        h = self._hash(self._uuid_of(job))
        state = self._live(h, self.clock())
        waiting = state is JobState.UNCLAIMED
        due = h.get("due_at")
        return JobStatus(
            state,
            float(due) if due and waiting else None,
            bool(h.get("parked")) and waiting,
            h.get("park_reason") or None,
            h.get("outcome") or None,
            (h.get("owner") or None) if h["state"] == "CLAIMED" else None,
            float(h["expires_at"]) if h["state"] == "CLAIMED" and h.get("expires_at") else None,
        )

    def next_due(self) -> float | None:
        """The earliest due time of an unclaimed job not due yet (one ZRANGEBYSCORE); None if none."""
        now = self.clock()
        found = self._call(
            lambda: self.client.zrangebyscore(self._delayed, "(%r" % (now,), "+inf", start=0, num=1, withscores=True),
            "read the next due job",
        )
        return float(found[0][1]) if found else None

    def abandon(self, job: Job | str, who: str, *, token: int | None = None) -> None:
        """Back to UNCLAIMED; owner only."""
        self._finish(job, who, token, "abandon")

    def fail(self, job: Job | str, who: str, error: str, *, token: int | None = None, delay: float = 0.0) -> None:
        """Back to UNCLAIMED after ``delay``, the failure recorded; owner only."""
        due = self.clock() + self._check_delay(delay)
        self._finish(job, who, token, "fail", error, due)

    def trash(self, job: Job | str, who: str, *, token: int | None = None, error: str | None = None) -> None:
        """TRASHED (the failure recorded, with ``error``); owner only."""
        self._finish(job, who, token, "trash", error)

    def restore(self, job: Job | str) -> JobState:
        """TRASHED -> UNCLAIMED with a fresh count (see :meth:`~flowkit.jobs.base.JobBoard.restore`)."""
        uuid = self._uuid_of(job)
        out = self._call(
            lambda: self._restore(
                keys=[self._key(uuid), self._open, self._ready, self._delayed], args=[uuid, self._channel]
            ),
            "restore job %s" % (uuid,),
        )
        if out[0] == "notfound":
            raise exc.NotFound("no job %s on board %r" % (uuid, self.name))
        if out[0] != "ok":
            h = self._hash(uuid)
            raise self._not_restorable(uuid, h["name"], self._live(h, self.clock()))
        return JobState.UNCLAIMED

    def failures_of(self, job: Job | str) -> FailureRecord:
        """The job's failed attempts."""
        uuid = self._uuid_of(job)
        state, attempts, error, failed_by, due = self._call(
            lambda: self.client.hmget(self._key(uuid), "state", "attempts", "last_error", "failed_by", "due_at"),
            "read job %s" % (uuid,),
        )
        if state is None:
            raise exc.NotFound("no job %s on board %r" % (uuid, self.name))
        return FailureRecord(
            int(attempts or 0),
            error or None,
            tuple(json.loads(failed_by)) if failed_by else (),
            float(due) if due else None,
        )

    # -- cancellation --------------------------------------------------------------------------------

    def cancel(self, job: Job | str, *, revert: bool = True) -> JobState:
        """Cancel the job (see :meth:`~flowkit.jobs.base.JobBoard.cancel`)."""
        uuid = self._uuid_of(job)
        out = self._call(
            lambda: self._cancel(
                keys=[self._key(uuid), self._open, self._ready, self._leases, self._delayed],
                args=[
                    repr(self.clock()),
                    "revert" if revert else "suspend",
                    self.prefix + "lock:",
                    uuid,
                    self._channel,
                ],
            ),
            "cancel job %s" % (uuid,),
        )
        if out == "notfound":
            raise exc.NotFound("no job %s on board %r" % (uuid, self.name))
        return JobState(out)

    def cancel_requested(self, job: Job | str) -> CancelRequest | None:
        """The pending cancel request, or None."""
        uuid = self._uuid_of(job)
        state, mode = self._call(lambda: self.client.hmget(self._key(uuid), "state", "cancel"), "read job %s" % (uuid,))
        if state is None:
            raise exc.NotFound("no job %s on board %r" % (uuid, self.name))
        return None if not mode else CancelRequest(uuid, mode == "revert")

    # -- waiting ----------------------------------------------------------------------------------------

    def _claimable(self) -> tuple[list[Job], float | None]:
        """The claimable jobs, and the board-clock time something may next become claimable (None: nothing will).

        Reads only the candidates (``ready``, and the members of ``delayed``
        and ``leases`` whose time has come) and the first future score of
        each of those two sets: jobs parked or delayed for later cost nothing.
        """
        now = self.clock()

        def read() -> tuple[list[str], list[Any], list[tuple[str, float]]]:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrange(self._ready, 0, -1)
            pipe.zrangebyscore(self._delayed, "-inf", repr(now))
            pipe.zrangebyscore(self._leases, "-inf", repr(now))
            pipe.zrangebyscore(self._delayed, "(%r" % (now,), "+inf", start=0, num=1, withscores=True)
            pipe.zrangebyscore(self._leases, "(%r" % (now,), "+inf", start=0, num=1, withscores=True)
            ready, due, lapsed, next_due, next_expiry = pipe.execute()
            uuids = list(dict.fromkeys([*ready, *due, *lapsed]))
            pipe = self.client.pipeline(transaction=False)
            for uuid in uuids:
                pipe.hgetall(self._key(uuid))
            return uuids, pipe.execute(), [*next_due, *next_expiry]

        uuids, found, upcoming = self._call(read, "list claimable jobs")
        hashes = [(u, h) for u, h in zip(uuids, found) if h]
        hashes.sort(key=lambda item: (int(item[1]["priority"]), int(item[1].get("seq") or 0)))
        keys = sorted({k for _, h in hashes for k in json.loads(h.get("resources") or "[]")})
        held: set[str] = set()
        if keys:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self.prefix + "lock:" + key, "holder", "expires")
            for key, (holder, expires) in zip(keys, self._call(pipe.execute, "read resource locks")):
                if holder and float(expires) > now:
                    held.add(key)
        jobs = [
            self._job(u, h)
            for u, h in hashes
            if self._live(h, now) is JobState.UNCLAIMED
            and (float(h["due_at"]) <= now if h.get("due_at") else not h.get("parked"))
            and not (held & set(json.loads(h.get("resources") or "[]")))
        ]
        times = [float(score) for _, score in upcoming]
        return jobs, (min(times) if times else None)

    def _clock_jumped(self) -> None:
        """Tell this board's waiters to look again (they sleep on the events channel)."""
        try:
            self.client.publish(self._channel, "clock")
        except Exception as error:  # the waiter still looks again within a second
            LOG.debug("board %r could not publish a clock jump: %s", self.name, error)

    def _wait_until(self, ready: Callable[[], tuple[bool, float | None]], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        unsubscribe = self.clock.on_change(self._clock_jumped)
        try:
            # Subscribe before looking, so nothing published in between is missed.
            self._call(lambda: pubsub.subscribe(self._channel), "subscribe to board events")
            while True:
                done, next_time = ready()
                if done:
                    return True
                until = self.clock.timeout(next_time)
                delay = 1.0 if until is None else min(1.0, until)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    delay = min(delay, left)
                # Drain what arrived, then look again.
                message = pubsub.get_message(timeout=max(delay, 0.001))
                while message is not None:
                    message = pubsub.get_message(timeout=0)
        finally:
            unsubscribe()
            pubsub.close()

    def wait(self, timeout: float | None = None) -> Iterator[Job]:
        """Sleep on the board's pub/sub channel until a job is claimable; NotFound on timeout."""
        found: list[Job] = []

        def ready() -> tuple[bool, float | None]:
            jobs, next_expiry = self._claimable()
            found[:] = jobs
            return bool(jobs), next_expiry

        if not self._wait_until(ready, timeout):
            raise exc.NotFound("no claimable job on board %r within %ss" % (self.name, timeout))
        return iter(found)

    def wait_for_job(self, job: Job | str, timeout: float | None = None) -> bool:
        """Sleep on the board's pub/sub channel until the job is final; False on timeout."""
        uuid = self._uuid_of(job)
        return self._wait_until(lambda: (self.state_of(uuid).final, None), timeout)

    # -- lifecycle --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the Redis connection pool."""
        self.client.close()

    def clear(self) -> None:
        """Delete every key of this board, and no other board's (tests, tear-down)."""
        keys = list(self.client.scan_iter(match=_literal_pattern(self.prefix) + "*", count=500))
        if keys:
            self.client.delete(*keys)

    def __repr__(self) -> str:
        return "<RedisJobBoard %r %s>" % (self.name, self.url)
