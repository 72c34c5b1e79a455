"""The decision rule, on hand-built model cards (pure unit tests, no serving)."""

from __future__ import annotations

import pytest

from router import Budget, LatencyModel, LatencyPrior, ModelCard, ModelLoad, Price, RouteReason, RouteRequest, Router
from router.errors import BudgetInfeasibleError, ContextLengthError, InvalidRequestError, UnknownModelError


def card(name, price, quality, ttft=50.0, tpot=10.0, ctx=4096, concurrency=1):
    return ModelCard(name=name, price=Price(price, price * 2), prior_quality=quality, context_length=ctx,
                     latency_prior=LatencyPrior(ttft, tpot), concurrency=concurrency)


CARDS = [card("small", 0.1, 0.4, tpot=10), card("medium", 0.5, 0.6, tpot=20), card("large", 2.0, 0.9, tpot=40)]
QUALITY = {"small": 0.4, "medium": 0.6, "large": 0.9}


def router(cards=CARDS):
    return Router(cards, LatencyModel(cards, quantile=0.5))


def req(budget=Budget(), max_tokens=100, prompt_tokens=20, pinned=None):
    return RouteRequest(prompt="p", prompt_tokens=prompt_tokens, max_tokens=max_tokens, budget=budget,
                        pinned_model=pinned)


def test_cheapest_feasible_without_budget():
    d = router().decide(req(), {}, QUALITY)
    assert d.model == "small" and d.reason is RouteReason.CHEAPEST_FEASIBLE and d.budget_met
    assert "cheapest of 3" in d.explanation
    assert {c.model for c in d.candidates} == {"small", "medium", "large"}


def test_quality_floor_picks_cheapest_model_above_it():
    assert router().decide(req(Budget(min_quality=0.5)), {}, QUALITY).model == "medium"
    assert router().decide(req(Budget(min_quality=0.85)), {}, QUALITY).model == "large"


def test_latency_budget_excludes_slow_models():
    # 100 tokens: small ~1050 ms, medium ~2050 ms, large ~4050 ms (median quantile)
    d = router().decide(req(Budget(max_latency_ms=3000, min_quality=0.5)), {}, QUALITY)
    assert d.model == "medium"
    assert d.prediction.latency_ms <= 3000


def test_cost_budget():
    # large costs (20*2 + 100*4)/1e6 = 4.4e-4; medium 1.1e-4
    d = router().decide(req(Budget(max_cost_usd=2e-4, min_quality=0.85)), {}, QUALITY)
    assert not d.budget_met and d.reason is RouteReason.BEST_EFFORT


def test_infeasible_strict_names_budget_and_best_value():
    with pytest.raises(BudgetInfeasibleError) as exc:
        router().decide(req(Budget(min_quality=0.95, strict=True)), {}, QUALITY)
    (u,) = exc.value.unmet
    assert u.budget == "min_quality" and u.best_achievable == 0.9 and u.best_model == "large"
    assert "min_quality" in exc.value.message


def test_jointly_infeasible_strict():
    # quality alone is met by large, latency alone by small, never both
    with pytest.raises(BudgetInfeasibleError) as exc:
        router().decide(req(Budget(max_latency_ms=1500, min_quality=0.85, strict=True)), {}, QUALITY)
    assert {u.budget for u in exc.value.unmet} == {"max_latency_ms", "min_quality"}
    assert "together" in exc.value.message


def test_infeasible_non_strict_returns_closest_flagged():
    d = router().decide(req(Budget(max_latency_ms=10)), {}, QUALITY)
    assert d.model == "small" and not d.budget_met and d.unmet == ("latency",)
    assert d.reason is RouteReason.BEST_EFFORT


def test_ties_break_on_quality_then_latency_then_name():
    # with spreading off (near-equal models are otherwise drawn among: test_spread.py)
    cards = [card("b", 1.0, 0.5, tpot=10), card("a", 1.0, 0.5, tpot=10), card("c", 1.0, 0.7, tpot=30)]
    r = Router(cards, LatencyModel(cards, quantile=0.5), near_equal=None)
    assert r.decide(req(), {}, {"a": 0.5, "b": 0.5, "c": 0.7}).model == "c"  # same cost: higher quality
    assert r.decide(req(), {}, {"a": 0.5, "b": 0.5, "c": 0.5}).model in ("a", "b")
    assert r.decide(req(), {}, {"a": 0.5, "b": 0.5, "c": 0.5}).model == "a"  # then latency, then name


def test_load_moves_traffic_to_idle_model():
    # medium is saturated: 6 requests queued ahead make it miss the budget; large is idle
    loads = {"medium": ModelLoad(in_flight=6)}
    d = router().decide(req(Budget(max_latency_ms=6000, min_quality=0.5)), loads, QUALITY)
    assert d.model == "large"
    assert router().decide(req(Budget(max_latency_ms=6000, min_quality=0.5)), {}, QUALITY).model == "medium"


def test_unhealthy_models_are_skipped():
    d = router().decide(req(), {"small": ModelLoad(healthy=False)}, QUALITY)
    assert d.model == "medium"


def test_pinned_model_is_honoured_and_flagged():
    d = router().decide(req(Budget(min_quality=0.8), pinned="small"), {}, QUALITY)
    assert d.model == "small" and d.reason is RouteReason.PINNED and not d.budget_met
    with pytest.raises(BudgetInfeasibleError):
        router().decide(req(Budget(min_quality=0.8, strict=True), pinned="small"), {}, QUALITY)


def test_unknown_pinned_model_lists_valid_ones():
    with pytest.raises(UnknownModelError) as exc:
        router().decide(req(pinned="huge"), {}, QUALITY)
    assert "large, medium, small" in exc.value.message


def test_context_length():
    cards = [card("short", 0.1, 0.4, ctx=100), card("long", 1.0, 0.6, ctx=10_000)]
    assert router(cards).decide(req(prompt_tokens=500), {}, {}).model == "long"
    with pytest.raises(ContextLengthError):
        router(cards).decide(req(prompt_tokens=50_000), {}, {})


def test_budget_validation():
    for bad in (dict(max_latency_ms=0), dict(max_cost_usd=-1), dict(min_quality=1.5)):
        with pytest.raises(InvalidRequestError):
            Budget(**bad)
