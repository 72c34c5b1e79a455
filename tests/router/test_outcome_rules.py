"""Policy moved out of serve/gateway.py: admission's next model, cascade escalation, budget outcome."""

from __future__ import annotations

import pytest

from router.admission import admission_order, redirected
from router.cascade import escalated
from router.outcome import judge_budget
from router.types import Budget, Decision, Prediction, RouteReason


def pred(model, cost, quality=0.5, fits=True, context=True):
    return Prediction(model, ttft_ms=10, latency_ms=100, quality=quality, cost_usd=cost, fits_latency=fits,
                      fits_quality=True, fits_cost=True, fits_context=context)


def decision(reason=RouteReason.CHEAPEST_FEASIBLE, met=True, **extra):
    cands = (pred("a", 1.0), pred("b", 3.0, 0.9), pred("c", 2.0, 0.7, fits=False), pred("d", 0.5, context=False))
    return Decision(model="a", reason=reason, explanation="x", prediction=cands[0], budget_met=met,
                    candidates=cands, **extra)


def test_admission_order_keeps_the_budget_while_it_is_met():
    assert admission_order(decision()) == ("a", "b")  # c misses a budget, d does not fit the context
    assert admission_order(decision(met=False)) == ("a", "c", "b")  # best effort: cheapest that fits
    assert admission_order(decision(RouteReason.PINNED)) == ("a",)


def test_redirected_judges_the_new_model_and_keeps_the_route():
    d = decision(met=False, unmet=("latency",))
    assert redirected(d, "a") is d
    moved = redirected(d, "c")
    assert moved.model == "c" and moved.prediction.model == "c" and moved.reason is d.reason
    assert moved.unmet == ("latency",) and not moved.budget_met and "a is saturated" in moved.explanation
    fine = redirected(d, "b")
    assert fine.unmet == () and fine.budget_met and fine.candidates == d.candidates


def test_escalation_decision():
    d = decision(escalate_to="b", escalate_below_confidence=-1.0)
    up = escalated(d, -2.5)
    assert up.model == "b" and up.reason is RouteReason.CASCADE and up.prediction.model == "b"
    assert "-2.500 below its calibrated threshold -1.000" in up.explanation and up.escalate_to is None
    assert "a failed" in escalated(d, None, failed=True).explanation
    assert "no tokens" in escalated(d, None).explanation
    with pytest.raises(ValueError, match="no escalation target"):
        escalated(decision(), -2.0)


def test_budget_outcome_after_the_fact():
    p = pred("a", 1.0, quality=0.6)
    out = judge_budget(Budget(max_latency_ms=500, min_quality=0.5, max_cost_usd=0.01), p, e2e_ms=600, cost_usd=0.001)
    assert (out.latency, out.quality, out.cost, out.met) == (False, True, True, False)
    none = judge_budget(Budget(), p, e2e_ms=None, cost_usd=1.0)
    assert (none.latency, none.quality, none.cost, none.met) == (None, None, None, True)
