"""A reconciler checks its rules when it is built, with errors naming the rules and states."""

from __future__ import annotations

import pytest

from flowkit import exceptions as exc
from flowkit.factories import FactoryRegistry
from flowkit.reconcile import Reconciler, ReconcilerRegistry, ResourceStatus, Rule
from tests.reconcile.conftest import public_ip

STATES = ["absent", "detached", "attached"]


def test_paths_follow_intermediate_states() -> None:
    rec = public_ip()
    assert [r.name for r in rec.path("absent", "attached")] == ["allocate_for_attach", "attach"]
    assert [r.name for r in rec.path("attached", "absent")] == ["detach_for_release", "release"]
    assert rec.path("detached", "detached") == ()
    assert rec.unreachable() == {}
    assert rec.plan("absent", "attached", None)[2] is rec.rule("allocate_for_attach")


def test_two_rules_for_one_pair_are_refused() -> None:
    with pytest.raises(exc.RuleError, match="rules 'a' and 'b' both go from 'absent' toward 'attached'"):
        Reconciler(
            "ip",
            states=STATES,
            rules=[Rule("a", "absent", "attached", "f"), Rule("b", "absent", "attached", "g", leads_to="detached")],
        )


def test_unknown_states_and_bad_fields_name_the_rule() -> None:
    with pytest.raises(exc.RuleError, match=r"rule 'x' has target 'gone', which is not one of its states \(absent"):
        Reconciler("ip", states=STATES, rules=[Rule("x", "absent", "gone", "f")])
    with pytest.raises(exc.RuleError, match="rule 'x': max_errors must be a positive int, got 0"):
        Rule("x", "absent", "attached", "f", max_errors=0)
    with pytest.raises(exc.RuleError, match="rule 'x' leads from 'absent' back to 'absent'"):
        Rule("x", "absent", "attached", "f", leads_to="absent")
    with pytest.raises(exc.RuleError, match="rule 'x': retry must be a flowkit.RetryPolicy"):
        Rule("x", "absent", "attached", "f", retry=3)  # type: ignore[arg-type]
    with pytest.raises(exc.RuleError, match="kind 'ip' lists state\\(s\\) 'a' more than once"):
        Reconciler("ip", states=["a", "a"], rules=[])
    with pytest.raises(exc.RuleError, match="kind 'ip' has two rules named 'x'"):
        Reconciler(
            "ip", states=STATES, rules=[Rule("x", "absent", "attached", "f"), Rule("x", "attached", "absent", "f")]
        )


def test_a_circle_toward_a_target_is_refused() -> None:
    with pytest.raises(
        exc.RuleError, match=r"toward 'attached' the rules go round in a circle \(absent -> detached -> absent\)"
    ):
        Reconciler(
            "ip",
            states=STATES,
            rules=[
                Rule("a", "absent", "attached", "f", leads_to="detached"),
                Rule("b", "detached", "attached", "f", leads_to="absent"),
            ],
        )


def test_dead_ends_are_reported_not_refused() -> None:
    rec = Reconciler("ip", states=STATES, rules=[Rule("a", "absent", "attached", "f", leads_to="detached")])
    assert rec.why_unreachable("absent", "attached") == (
        "kind 'ip': from 'absent' toward 'attached' the rules lead to 'detached', and no rule goes on from there"
    )
    assert rec.plan("attached", "absent", None) == (
        ResourceStatus.UNREACHABLE,
        "no rule of kind 'ip' goes from 'attached' toward 'absent'",
        None,
    )
    assert len(rec.unreachable()) == 6


def test_a_rule_may_look_at_the_facts() -> None:
    rule = Rule("attach", "detached", "attached", "f", when=lambda facts: bool(facts and facts.get("server")))
    rec = Reconciler("ip", states=STATES[1:], rules=[rule])
    assert rec.plan("detached", "attached", {"server": "vm-1"}) == (ResourceStatus.CONVERGING, None, rule)
    assert rec.plan("detached", "attached", {}) == (
        ResourceStatus.UNREACHABLE,
        "rule 'attach' does not apply to the resource's facts",
        None,
    )


def make_flow() -> None:  # pragma: no cover - never built here
    raise AssertionError


def test_a_factory_given_as_a_callable_is_registered_by_name() -> None:
    registry = FactoryRegistry(entry_points=False)
    rec = Reconciler("ip", states=STATES, rules=[Rule("a", "absent", "attached", make_flow)], factories=registry)
    assert rec.rule("a").flow == "tests.reconcile.test_rules:make_flow"  # type: ignore[union-attr]
    assert registry.resolve("tests.reconcile.test_rules:make_flow") is make_flow

    def local() -> None:  # pragma: no cover - never built here
        raise AssertionError

    with pytest.raises(exc.RuleError, match="kind 'ip': rule 'a': flow factory .* cannot be imported by name"):
        Reconciler("ip", states=STATES, rules=[Rule("a", "absent", "attached", local)], factories=registry)


def test_one_kind_has_one_rule_set() -> None:
    registry = ReconcilerRegistry()
    first = registry.add(public_ip())
    assert registry.add(public_ip()) is first  # the same rules again: a module imported twice
    with pytest.raises(exc.RuleError, match="two reconcilers for kind 'public_ip' with different rules"):
        registry.add(public_ip(max_errors=5))
    assert registry.get("public_ip") is first
    with pytest.raises(exc.UnknownKind, match="no reconciler is registered for kind 'disk'"):
        registry.get("disk")
