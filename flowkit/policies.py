"""Retry policies: an atom that failed runs again, after a durable backoff, before anyone is told.

A :class:`RetryPolicy` is set on a task (``Task(retry_policy=...)``,
``as_task(retry_policy=...)``), as the default of every atom of a flow that
sets none of its own (``Flow(name, retry_policy=...)``, the innermost flow
wins), or as the engine's default (``load(..., retry_policy=...)``).  The
compiler resolves each atom's policy once.

When a task with a policy fails and the policy says retry, the atom is not
failed: the attempt is recorded in its atom detail (``meta["attempts"]``, the
last :data:`MAX_RECORDED_ATTEMPTS` failed attempts), its attempt number goes up
(so ``self.context.idempotency_key`` changes), and it WAITs for the backoff as
a durable wait (``meta["wait"]``): a short one blocks ``run()``, a long one
parks the flow with ``run(park=True)``, and a resume after a crash keeps the
original due time.  Only when the policy is exhausted, or says no, does the
failure reach the enclosing retry controllers and reverts, as any failure
does; with ``on_exhausted="broken"`` the atom and the flow end BROKEN instead,
with nothing reverted, until ``engine.retry()`` (``flowkit retry``) runs it
again or ``engine.revert()`` (``flowkit revert``) undoes the flow.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from typing import Literal

from flowkit.types.failure import Failure

__all__ = [
    "RetryPolicy",
    "ATTEMPTS_KEY",
    "ERRORS_KEY",
    "MAX_RECORDED_ATTEMPTS",
]

#: The key of ``AtomDetail.meta`` holding the failed attempts of an atom with a policy:
#: a list of ``{"attempt": n, "started": t, "ended": t, "failure": Failure.to_dict()}``.
ATTEMPTS_KEY = "attempts"
#: The key of ``AtomDetail.meta`` counting the atom's failures since it last succeeded.
ERRORS_KEY = "errors"
#: How many failed attempts an atom detail keeps (the oldest are dropped).
MAX_RECORDED_ATTEMPTS = 20

_ON_EXHAUSTED = ("revert", "broken")

ExcSpec = tuple[type[BaseException] | str, ...]


def _number(owner: str, field: str, value: object, low: float, low_ok: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s: %s must be a number, got %r" % (owner, field, value))
    number = float(value)
    if not math.isfinite(number) or number < low or (not low_ok and number == low):
        raise ValueError(
            "%s: %s must be a finite number %s %s, got %r" % (owner, field, ">=" if low_ok else ">", low, value)
        )
    return number


def _exc_spec(owner: str, field: str, value: object) -> ExcSpec:
    items = (value,) if isinstance(value, (type, str)) else value
    if not isinstance(items, (tuple, list)):
        raise TypeError("%s: %s must be a tuple of exception classes or names, got %r" % (owner, field, value))
    for item in items:
        ok = isinstance(item, str) and item or isinstance(item, type) and issubclass(item, BaseException)
        if not ok:
            raise TypeError("%s: %s must hold exception classes or their names, got %r" % (owner, field, item))
    return tuple(items)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a failed atom runs again.

    - ``max_attempts``: attempts in all, the first included (1: never retry).
    - The delay before attempt ``n + 1`` (after ``n`` failed attempts) is
      ``d = initial_delay * backoff ** (n - 1)``, capped at ``max_delay`` when
      given, then, with ``jitter`` ``j > 0``, multiplied by ``1 + j * u`` with
      ``u`` uniform in ``[-1, 1]``: so it lies in ``[d * (1 - j), d * (1 + j)]``.
      The due time is worked out once, when the attempt fails, and stored.
    - A failure is retried when it matches ``retry_on`` (exception classes or
      names, matched on the failure's type names, so nothing is imported),
      does not match ``non_retryable`` (which wins), and ``retry_if(failure)``,
      when given, returns true.  A ``retry_if`` that raises means "do not
      retry"; the failure that then reaches the flow says so.
    - ``on_exhausted``: ``"revert"`` hands the last failure on as any failure
      (retry controllers, then reverts); ``"broken"`` ends the atom and the
      flow BROKEN (see :mod:`flowkit.policies`).

    Bad values raise ``TypeError``/``ValueError`` at construction; a task
    given a bad policy names itself (see :meth:`check`).
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float | None = None
    jitter: float = 0.0
    retry_on: ExcSpec = (Exception,)
    retry_if: Callable[[Failure], bool] | None = None
    non_retryable: ExcSpec = ()
    on_exhausted: Literal["revert", "broken"] = "revert"

    def __post_init__(self) -> None:
        self._validate("RetryPolicy")

    def _validate(self, owner: str) -> None:
        set_ = object.__setattr__
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError("%s: max_attempts must be an int, got %r" % (owner, attempts))
        if attempts < 1:
            raise ValueError("%s: max_attempts must be at least 1, got %r" % (owner, attempts))
        set_(self, "initial_delay", _number(owner, "initial_delay", self.initial_delay, 0.0))
        set_(self, "backoff", _number(owner, "backoff", self.backoff, 1.0))
        if self.max_delay is not None:
            set_(self, "max_delay", _number(owner, "max_delay", self.max_delay, 0.0))
        jitter = _number(owner, "jitter", self.jitter, 0.0)
        if jitter > 1.0:
            raise ValueError("%s: jitter must be in [0, 1], got %r" % (owner, self.jitter))
        set_(self, "jitter", jitter)
        set_(self, "retry_on", _exc_spec(owner, "retry_on", self.retry_on))
        set_(self, "non_retryable", _exc_spec(owner, "non_retryable", self.non_retryable))
        if self.retry_if is not None and not callable(self.retry_if):
            raise TypeError("%s: retry_if must be callable (failure -> bool), got %r" % (owner, self.retry_if))
        if self.on_exhausted not in _ON_EXHAUSTED:
            raise ValueError("%s: on_exhausted must be 'revert' or 'broken', got %r" % (owner, self.on_exhausted))

    @classmethod
    def check(cls, policy: object, owner: str) -> RetryPolicy | None:
        """``policy`` if it is a RetryPolicy (or None); TypeError naming ``owner`` otherwise."""
        if policy is None or isinstance(policy, RetryPolicy):
            return policy
        raise TypeError("%s: retry_policy must be a flowkit.RetryPolicy, got %r" % (owner, policy))

    def delay(self, failed: int, u: float | None = None) -> float:
        """Seconds to wait after ``failed`` (>= 1) failed attempts; ``u`` in [-1, 1] is the jitter draw."""
        seconds = self.initial_delay * self.backoff ** (failed - 1)
        if self.max_delay is not None:
            seconds = min(self.max_delay, seconds)
        if self.jitter:
            if u is None:
                u = random.uniform(-1.0, 1.0)
            seconds *= 1.0 + self.jitter * u
        return max(0.0, seconds)

    def decide(self, failure: Failure, failed: int) -> tuple[bool, str]:
        """``(retry, why_not)`` for a failure after ``failed`` failed attempts (``why_not`` empty on retry)."""
        if self.non_retryable and failure.check(*self.non_retryable):
            return False, "%s is not retryable" % failure.exception_type_name
        if not failure.check(*self.retry_on):
            return False, "%s is not one of retry_on" % failure.exception_type_name
        if self.retry_if is not None:
            try:
                wanted = bool(self.retry_if(failure))
            except Exception as error:
                return False, "retry_if raised %s: %s, so it was not retried" % (type(error).__name__, error)
            if not wanted:
                return False, "retry_if said no"
        if failed >= self.max_attempts:
            return False, "all %d attempts failed" % self.max_attempts
        return True, ""
