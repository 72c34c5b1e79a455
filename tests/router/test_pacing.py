"""Spend pacing (router/pacing.py): pure unit tests on hand-built model cards."""

from __future__ import annotations

import pytest

from router import Budget, LatencyModel, LatencyPrior, ModelCard, Price, RouteReason, RouteRequest, Router
from router.errors import BudgetInfeasibleError
from router.pacing import Pace, decide_paced, furthest_ahead, pace, paced_budget


def card(name, price, quality, tpot=10.0):
    return ModelCard(name=name, price=Price(price, price * 2), prior_quality=quality, context_length=4096,
                     latency_prior=LatencyPrior(50.0, tpot))


CARDS = [card("small", 0.1, 0.3, tpot=10), card("medium", 0.5, 0.5, tpot=20), card("large", 2.0, 0.9, tpot=40)]
QUALITY = {"small": 0.3, "medium": 0.5, "large": 0.9}
DEFAULTS = Budget(min_quality=0.8)  # the pool's default floor: 'large' unless paced


def router():
    return Router(CARDS, LatencyModel(CARDS, quantile=0.5))


def req(asked=None, defaults=DEFAULTS, pinned=None):
    from router import merge_budget

    return RouteRequest(prompt="p", prompt_tokens=20, max_tokens=100, budget=merge_budget(asked, defaults),
                        pinned_model=pinned)


def at(spent, budget=10.0, elapsed=0.5, full_at=0.1):
    return Pace("key k", "day", spent, budget, elapsed, full_at)


# ----------------------------------------------------------------------------- the pace
def test_even_pace_ahead_and_behind():
    p = pace("key k", "day", spent_usd=3.0, budget_usd=10.0, elapsed_s=6 * 3600, period_s=24 * 3600)
    assert p.expected_usd == pytest.approx(2.5)
    assert p.ahead and p.ahead_usd == pytest.approx(0.5) and p.ahead_fraction == pytest.approx(0.05)
    assert p.strength == pytest.approx(0.5)  # half of the way to full_at (0.1)
    behind = pace("key k", "day", 1.0, 10.0, 6 * 3600, 24 * 3600)
    assert not behind.ahead and behind.ahead_usd == pytest.approx(-1.5) and behind.strength == 0.0
    assert at(5.0).strength == 0.0  # exactly at even pace
    assert at(9.0).strength == 1.0  # far ahead: capped at 1


def test_elapsed_is_clamped_to_the_period_and_values_are_checked():
    assert pace("k", "day", 0, 1, -5, 10).elapsed == 0.0
    assert pace("k", "day", 0, 1, 50, 10).elapsed == 1.0
    with pytest.raises(ValueError, match="budget_usd"):
        Pace("k", "day", 0, 0, 0.5)
    with pytest.raises(ValueError, match="period_s"):
        pace("k", "day", 0, 1, 1, 0)
    with pytest.raises(ValueError, match="full_at"):
        Pace("k", "day", 0, 1, 0.5, full_at=0)


def test_furthest_ahead_picks_the_key_or_its_team():
    key, team = at(6.0), Pace("team t", "month", 50.0, 100.0, 0.2)
    assert furthest_ahead([key, team]) is team  # 30% ahead against 10%
    assert furthest_ahead([]) is None


# ----------------------------------------------------------------------------- the budget
def test_floor_is_lowered_in_proportion_and_the_requests_own_budgets_are_kept():
    assert paced_budget(None, DEFAULTS, None) == DEFAULTS
    assert paced_budget(None, DEFAULTS, at(4.0)) == DEFAULTS  # behind pace
    assert paced_budget(None, DEFAULTS, at(5.5)).min_quality == pytest.approx(0.4)  # halfway to full_at
    assert paced_budget(None, DEFAULTS, at(7.0)).min_quality == 0.0
    own = Budget(min_quality=0.45, max_latency_ms=5000)
    assert paced_budget(own, DEFAULTS, at(9.0)) == own  # the request's own floor: untouched
    latency_only = Budget(max_latency_ms=5000, max_cost_usd=1.0)
    b = paced_budget(latency_only, DEFAULTS, at(9.0))
    assert (b.max_latency_ms, b.max_cost_usd, b.min_quality) == (5000, 1.0, 0.0)
    assert paced_budget(None, Budget(max_latency_ms=100), at(9.0)) == Budget(max_latency_ms=100)  # no floor


# ----------------------------------------------------------------------------- the decision
def test_unpaced_and_behind_pace_route_on_the_default_floor():
    for p in (None, at(1.0)):
        d, used = decide_paced(router(), req(), None, DEFAULTS, p, {}, QUALITY)
        assert d.model == "large" and d.reason is RouteReason.CHEAPEST_FEASIBLE and used.budget == DEFAULTS


def test_ahead_of_pace_routes_cheaper_and_says_so():
    d, used = decide_paced(router(), req(), None, DEFAULTS, at(5.3), {}, QUALITY)  # strength 0.3: floor 0.56
    assert used.budget.min_quality == pytest.approx(0.56)
    assert d.model == "large"  # 0.56 still needs large: unchanged, not flagged
    d, used = decide_paced(router(), req(), None, DEFAULTS, at(5.5), {}, QUALITY)  # floor 0.4
    assert d.model == "medium" and d.reason is RouteReason.BUDGET_PACED and d.budget_met
    assert used.budget.min_quality == pytest.approx(0.4)
    assert "budget_paced: key k has spent $5.5 of its $10 day budget" in d.explanation
    assert "(5.0% of it) ahead of even pace" in d.explanation
    assert "floor 0.8 is lowered to 0.4" in d.explanation and "unpaced: large" in d.explanation
    d, _ = decide_paced(router(), req(), None, DEFAULTS, at(8.0), {}, QUALITY)
    assert d.model == "small" and d.reason is RouteReason.BUDGET_PACED


def test_pacing_keeps_every_budget_the_request_asked_for():
    own = Budget(min_quality=0.45)
    d, used = decide_paced(router(), req(own), own, DEFAULTS, at(9.0), {}, QUALITY)
    assert d.model == "medium" and d.reason is RouteReason.CHEAPEST_FEASIBLE and used.budget.min_quality == 0.45
    # its own latency budget: 'small' is the only model within 1200 ms; paced, it is chosen and fits
    fast = Budget(max_latency_ms=1200)
    d, used = decide_paced(router(), req(fast), fast, DEFAULTS, at(9.0), {}, QUALITY)
    assert d.model == "small" and d.prediction.latency_ms <= 1200 and d.budget_met
    assert d.reason is RouteReason.BUDGET_PACED
    # unpaced, the default floor made it a best-effort answer (closest: small, missing the floor)
    unpaced, _ = decide_paced(router(), req(fast), fast, DEFAULTS, None, {}, QUALITY)
    assert unpaced.model == "small" and not unpaced.budget_met and unpaced.reason is RouteReason.BEST_EFFORT
    assert "unpaced, no model met every budget with the default floor" in d.explanation


def test_pinned_requests_are_never_paced():
    d, used = decide_paced(router(), req(pinned="large"), None, DEFAULTS, at(9.0), {}, QUALITY)
    assert d.model == "large" and d.reason is RouteReason.PINNED and used.budget == DEFAULTS


def test_strict_request_infeasible_only_through_the_default_floor_is_served_when_paced():
    strict = Budget(strict=True)
    defaults = Budget(min_quality=0.95)  # no model reaches it: strict -> 422 unpaced
    with pytest.raises(BudgetInfeasibleError):
        decide_paced(router(), req(strict, defaults), strict, defaults, None, {}, QUALITY)
    d, used = decide_paced(router(), req(strict, defaults), strict, defaults, at(9.0), {}, QUALITY)
    assert d.model == "small" and d.reason is RouteReason.BUDGET_PACED
    assert "unpaced, no model met every budget with the default floor" in d.explanation and used.budget.strict


def test_a_paced_best_effort_answer_stays_flagged_best_effort():
    tight = Budget(max_latency_ms=500)  # no model makes 500 ms for 100 tokens: small is closest either way
    d, used = decide_paced(router(), req(tight), tight, DEFAULTS, at(9.0), {}, QUALITY)
    assert d.reason is RouteReason.BEST_EFFORT and not d.budget_met and d.unmet == ("latency",)  # not quality
    assert d.explanation.startswith("budget_paced: ") and used.budget.min_quality == 0.0


def test_one_draw_among_near_equal_models_and_no_word_of_pacing_when_the_floor_is_met_anyway():
    cards = [card("a", 1.0, 0.9), card("b", 1.01, 0.9), card("cheap", 0.1, 0.3)]
    draws = []

    def draw():
        draws.append(1)
        return 0.99  # the last of the near-equal models

    r = Router(cards, LatencyModel(cards, quantile=0.5), draw=draw)
    quality = {"a": 0.9, "b": 0.9, "cheap": 0.3}
    d, used = decide_paced(r, req(), None, DEFAULTS, at(5.3), {}, quality)  # floor 0.8 -> 0.56: a or b still
    assert d.model == "b" and d.reason is RouteReason.CHEAPEST_FEASIBLE and len(draws) == 1
    assert "budget_paced" not in d.explanation and used.budget.min_quality == pytest.approx(0.56)
    d, _ = decide_paced(r, req(), None, DEFAULTS, at(9.0), {}, quality)  # floor dropped: the cheap model
    assert d.model == "cheap" and d.reason is RouteReason.BUDGET_PACED and len(draws) == 1
    assert "unpaced: a" in d.explanation  # the cheapest that met the default floor, no draw taken
