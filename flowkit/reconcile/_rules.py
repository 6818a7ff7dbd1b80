"""Rules and the reconciler that holds them: which operation moves a resource toward its target.

A :class:`Rule` says: a resource of this kind whose current state is
``current`` and whose target is ``target`` is moved by running the flow that
the factory ``flow`` builds; on success its current state becomes
``leads_to``.  ``leads_to`` may be a step on the way (``absent`` toward
``attached`` leads to ``detached``, whence another rule goes on).

:class:`Reconciler` checks its rules once, when it is built, and raises
:class:`~flowkit.exceptions.RuleError` naming them when: a rule names a state
the kind does not have; two rules share a (current, target); a rule leads
back to where it starts; following the rules toward a target goes round in a
circle.  A (current, target) pair that no chain of rules connects is not an
error (not every state needs to reach every other); it is reported by
:meth:`Reconciler.unreachable` and a resource there is marked UNREACHABLE
with that reason instead of being looped on.

Rules name flow factories by their registered name (see
:mod:`flowkit.factories`): what the database records is that name, never
code.  A factory given as a callable is registered under its own name.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flowkit.exceptions import RuleError, UnknownKind
from flowkit.factories import FactoryRegistry, default_registry
from flowkit.persistence._sql.resources_schema import MAX_KIND_CHARS, MAX_STATE_CHARS
from flowkit.policies import RetryPolicy
from flowkit.reconcile._values import ResourceStatus

__all__ = [
    "Rule",
    "Reconciler",
    "ReconcilerRegistry",
    "default_reconcilers",
    "register",
    "DEFAULT_MAX_ERRORS",
]

#: Consecutive failures of one rule's operation before the resource is BROKEN (or rolled back).
DEFAULT_MAX_ERRORS = 3

# The longest rule name: the operations table's column.
_MAX_RULE_CHARS = 190


def _name(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise RuleError("%s must be a non-empty string without surrounding spaces, got %r" % (what, value))
    if len(value) > limit or "\x00" in value:
        raise RuleError("%s must be at most %d characters without NUL, got %r" % (what, limit, value[:80]))
    return value


@dataclasses.dataclass(frozen=True)
class Rule:
    """One operation: from ``current`` toward ``target`` run ``flow``; on success the state is ``leads_to``.

    ``flow`` is a registered flow factory's name (or the factory itself,
    registered under its ``"module:qualname"`` name when the reconciler is
    built); it is called with no arguments and the flow's store holds
    ``resource`` (kind, id, current, target, generation) and ``facts``.
    ``leads_to`` defaults to ``target``.  After ``max_errors`` failures in a
    row the resource is BROKEN, or driven to its rollback state; between
    failures the next try waits ``retry.delay(failures)`` seconds (none
    without a policy; only its delays are used).  ``when``, if given, is
    asked with the resource's facts whether the rule applies; when it says
    no, the resource is UNREACHABLE until its facts or its target change.
    """

    name: str
    current: str
    target: str
    flow: str | Callable[..., Any]
    leads_to: str | None = None
    max_errors: int = DEFAULT_MAX_ERRORS
    retry: RetryPolicy | None = None
    when: Callable[[Any], bool] | None = None

    def __post_init__(self) -> None:
        _name(self.name, "a rule's name", _MAX_RULE_CHARS)
        what = "rule %r" % (self.name,)
        _name(self.current, "%s: current" % what, MAX_STATE_CHARS)
        _name(self.target, "%s: target" % what, MAX_STATE_CHARS)
        if self.leads_to is None:
            object.__setattr__(self, "leads_to", self.target)
        _name(self.leads_to, "%s: leads_to" % what, MAX_STATE_CHARS)
        if self.leads_to == self.current:
            raise RuleError(
                "%s leads from %r back to %r: it would never get anywhere" % (what, self.current, self.current)
            )
        if self.current == self.target:
            raise RuleError(
                "%s goes from %r toward %r: a resource at its target needs no operation"
                % (what, self.current, self.target)
            )
        if isinstance(self.flow, str):
            _name(self.flow, "%s: flow" % what, 255)
        elif not callable(self.flow):
            raise RuleError("%s: flow must be a registered factory's name or a factory, got %r" % (what, self.flow))
        if isinstance(self.max_errors, bool) or not isinstance(self.max_errors, int) or self.max_errors < 1:
            raise RuleError("%s: max_errors must be a positive int, got %r" % (what, self.max_errors))
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise RuleError("%s: retry must be a flowkit.RetryPolicy, got %r" % (what, self.retry))
        if self.when is not None and not callable(self.when):
            raise RuleError("%s: when must be a callable taking the facts, got %r" % (what, self.when))

    @property
    def factory_name(self) -> str:
        """The registered name of the flow factory (set once the reconciler is built)."""
        assert isinstance(self.flow, str), "the reconciler registers a factory given as a callable"
        return self.flow

    def backoff(self, failures: int) -> float:
        """Seconds before the next try after ``failures`` (>= 1) failures in a row (0 without a policy)."""
        if self.retry is None or failures < 1:
            return 0.0
        return self.retry.delay(failures)

    def applies(self, facts: Any) -> tuple[bool, str]:
        """Whether the rule applies to a resource with ``facts``; the reason when it does not."""
        if self.when is None:
            return True, ""
        try:
            if self.when(facts):
                return True, ""
        except Exception as error:
            return False, "rule %r: its condition on the facts raised %s: %s" % (self.name, type(error).__name__, error)
        return False, "rule %r does not apply to the resource's facts" % (self.name,)


class Reconciler:
    """The rules of one ``kind`` of resource, checked when built (see the module docs).

    ``states`` lists every state the kind has; ``initial`` (default: the
    first) is where a new resource starts unless ``create`` says otherwise.
    ``factories`` is where a rule's callable factory is registered (default:
    the process-wide registry).
    """

    def __init__(
        self,
        kind: str,
        *,
        states: Iterable[str],
        rules: Iterable[Rule],
        initial: str | None = None,
        factories: FactoryRegistry | None = None,
    ) -> None:
        self.kind = _name(kind, "a reconciler's kind", MAX_KIND_CHARS)
        if isinstance(states, str):
            raise RuleError("kind %r: states must be a list of names, not the string %r" % (kind, states))
        names = [_name(state, "kind %r: a state" % (kind,), MAX_STATE_CHARS) for state in states]
        if not names:
            raise RuleError("kind %r has no states" % (kind,))
        repeated = sorted({state for state in names if names.count(state) > 1})
        if repeated:
            raise RuleError("kind %r lists state(s) %s more than once" % (kind, ", ".join(map(repr, repeated))))
        self.states: tuple[str, ...] = tuple(names)
        self.initial = names[0] if initial is None else initial
        if self.initial not in self.states:
            raise RuleError("kind %r: initial state %r is not one of its states %s" % (kind, initial, self._known()))
        registry = factories if factories is not None else default_registry
        built: list[Rule] = []
        for rule in rules:
            if not isinstance(rule, Rule):
                raise RuleError("kind %r: rules must be flowkit.reconcile.Rule values, got %r" % (kind, rule))
            if not isinstance(rule.flow, str):
                name = registry.name_of(rule.flow)
                if name is None:
                    try:
                        registry.register(rule.flow)
                    except ValueError as error:
                        raise RuleError("kind %r: rule %r: %s" % (kind, rule.name, error)) from error
                    name = registry.name_of(rule.flow)
                assert name is not None
                rule = dataclasses.replace(rule, flow=name)
            built.append(rule)
        self.rules: tuple[Rule, ...] = tuple(built)
        self._by_name: dict[str, Rule] = {}
        self._by_pair: dict[tuple[str, str], Rule] = {}
        for rule in self.rules:
            self._add(rule)
        self._unreachable = self._walk()

    def _known(self) -> str:
        return "(%s)" % ", ".join(self.states)

    def _add(self, rule: Rule) -> None:
        for field in ("current", "target", "leads_to"):
            state = getattr(rule, field)
            if state not in self.states:
                raise RuleError(
                    "kind %r: rule %r has %s %r, which is not one of its states %s"
                    % (self.kind, rule.name, field, state, self._known())
                )
        if rule.name in self._by_name:
            raise RuleError("kind %r has two rules named %r" % (self.kind, rule.name))
        other = self._by_pair.get((rule.current, rule.target))
        if other is not None:
            raise RuleError(
                "kind %r: rules %r and %r both go from %r toward %r; one (current, target) takes one rule"
                % (self.kind, other.name, rule.name, rule.current, rule.target)
            )
        self._by_name[rule.name] = rule
        self._by_pair[(rule.current, rule.target)] = rule

    def _walk(self) -> dict[tuple[str, str], str]:
        """Follow the rules from every state toward every other; raise on a circle, return the dead ends."""
        unreachable: dict[tuple[str, str], str] = {}
        for target in self.states:
            for start in self.states:
                if start == target:
                    continue
                seen = [start]
                state = start
                while state != target:
                    rule = self._by_pair.get((state, target))
                    if rule is None:
                        if state == start:
                            why = "no rule of kind %r goes from %r toward %r" % (self.kind, start, target)
                        else:
                            why = "kind %r: from %r toward %r the rules lead to %r, and no rule goes on from there" % (
                                self.kind, start, target, state,
                            )  # fmt: skip
                        unreachable[(start, target)] = why
                        break
                    state = str(rule.leads_to)
                    if state in seen:
                        loop = " -> ".join([*seen[seen.index(state) :], state])
                        raise RuleError(
                            "kind %r: toward %r the rules go round in a circle (%s); a resource would never get there"
                            % (self.kind, target, loop)
                        )
                    seen.append(state)
        return unreachable

    # -- asking ---------------------------------------------------------------------------------

    def check_state(self, state: object, what: str) -> str:
        """``state`` if the kind has it; ValueError naming ``what``, the kind and its states otherwise."""
        if not isinstance(state, str) or state not in self.states:
            raise ValueError("%s: %r is not a state of kind %r %s" % (what, state, self.kind, self._known()))
        return state

    def rule_for(self, current: str, target: str) -> Rule | None:
        """The rule from ``current`` toward ``target`` (None if there is none)."""
        return self._by_pair.get((current, target))

    def rule(self, name: str) -> Rule | None:
        """The rule called ``name`` (None if there is none)."""
        return self._by_name.get(name)

    def path(self, current: str, target: str) -> tuple[Rule, ...]:
        """The rules that take a resource from ``current`` to ``target``, in order (empty when there already)."""
        rules: list[Rule] = []
        while current != target:
            rule = self._by_pair.get((current, target))
            if rule is None:
                raise ValueError(self.why_unreachable(current, target) or "unreachable")
            rules.append(rule)
            current = str(rule.leads_to)
        return tuple(rules)

    def why_unreachable(self, current: str, target: str) -> str | None:
        """Why no chain of rules leads from ``current`` to ``target``; None when one does."""
        return self._unreachable.get((current, target))

    def plan(self, current: str, target: str, facts: Any) -> tuple[ResourceStatus, str | None, Rule | None]:
        """What a resource at ``current`` with ``target`` and ``facts`` needs next, with no operation in flight.

        ``(CONVERGED, None, None)`` at the target; ``(UNREACHABLE, reason,
        None)`` when no chain of rules leads there or the next rule does not
        apply to the facts; else ``(CONVERGING, None, rule)``: run ``rule``.
        """
        if current == target:
            return ResourceStatus.CONVERGED, None, None
        why = self.why_unreachable(current, target)
        rule = self.rule_for(current, target)
        if why is not None or rule is None:
            return ResourceStatus.UNREACHABLE, why or "no rule goes from %r toward %r" % (current, target), None
        applies, why_not = rule.applies(facts)
        if not applies:
            return ResourceStatus.UNREACHABLE, why_not, None
        return ResourceStatus.CONVERGING, None, rule

    def unreachable(self) -> Mapping[tuple[str, str], str]:
        """Every (current, target) pair no chain of rules connects, with the reason."""
        return dict(self._unreachable)

    def same_rules(self, other: Reconciler) -> bool:
        """Whether ``other`` has the same states, initial state and rules (a module imported twice)."""
        return (self.kind, self.states, self.initial, self.rules) == (
            other.kind,
            other.states,
            other.initial,
            other.rules,
        )

    def __repr__(self) -> str:
        return "<Reconciler %r: %d states, %d rules>" % (self.kind, len(self.states), len(self.rules))


class ReconcilerRegistry:
    """Reconcilers by kind; one kind has one rule set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_kind: dict[str, Reconciler] = {}

    def add(self, reconciler: Reconciler) -> Reconciler:
        """Register ``reconciler`` for its kind; RuleError if another with different rules has that kind.

        Registering one with the same rules again (a module imported twice)
        returns the one registered first.
        """
        if not isinstance(reconciler, Reconciler):
            raise TypeError("register() takes a flowkit.reconcile.Reconciler, got %r" % (reconciler,))
        with self._lock:
            known = self._by_kind.get(reconciler.kind)
            if known is None:
                self._by_kind[reconciler.kind] = reconciler
                return reconciler
        if known is reconciler or known.same_rules(reconciler):
            return known
        raise RuleError(
            "two reconcilers for kind %r with different rules: %s and %s; one kind has one rule set"
            % (reconciler.kind, _describe(known), _describe(reconciler))
        )

    def remove(self, kind: str) -> None:
        """Forget the reconciler of ``kind`` (tests)."""
        with self._lock:
            self._by_kind.pop(kind, None)

    def get(self, kind: str) -> Reconciler:
        """The reconciler of ``kind``; :class:`~flowkit.exceptions.UnknownKind` if none is registered."""
        with self._lock:
            found = self._by_kind.get(kind) if isinstance(kind, str) else None
            known = sorted(self._by_kind)
        if found is None:
            raise UnknownKind(
                "no reconciler is registered for kind %r (known: %s); import the module that registers it"
                % (str(kind)[:80], ", ".join(known) or "none")
            )
        return found

    def kinds(self) -> tuple[str, ...]:
        """The registered kinds, sorted."""
        with self._lock:
            return tuple(sorted(self._by_kind))

    def __contains__(self, kind: object) -> bool:
        with self._lock:
            return kind in self._by_kind


def _describe(reconciler: Reconciler) -> str:
    rules = ", ".join("%s: %s->%s" % (r.name, r.current, r.target) for r in reconciler.rules)
    return "[%s]" % rules


#: The process-wide reconcilers (what the ``flowkit`` commands and the default store use).
default_reconcilers = ReconcilerRegistry()


def register(reconciler: Reconciler, registry: ReconcilerRegistry | None = None) -> Reconciler:
    """Register ``reconciler`` in ``registry`` (default: ``default_reconcilers``).

    See :meth:`ReconcilerRegistry.add`; returns the reconciler registered for the kind.
    """
    return (registry if registry is not None else default_reconcilers).add(reconciler)
