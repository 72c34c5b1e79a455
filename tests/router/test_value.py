"""The value rule (router/value.py and its use in Router): pure unit tests on hand-built model cards."""

from __future__ import annotations

import pytest

from router import Budget, LatencyModel, LatencyPrior, ModelCard, Price, RouteReason, RouteRequest, Router, merge_budget
from router.admission import admission_order
from router.errors import InvalidRequestError
from router.pacing import Pace, decide_paced, paced_budget
from router.value import expected_value


def card(name, price, quality, tpot=10.0):
    return ModelCard(name=name, price=Price(price, price * 2), prior_quality=quality, context_length=4096,
                     latency_prior=LatencyPrior(50.0, tpot))


# predicted cost of 20 prompt tokens and 100 output tokens: small 2.2e-5, medium 1.1e-4, large 4.4e-4 USD
CARDS = [card("small", 0.1, 0.3, tpot=10), card("medium", 0.5, 0.5, tpot=20), card("large", 2.0, 0.9, tpot=40)]
QUALITY = {"small": 0.3, "medium": 0.5, "large": 0.9}


def router():
    return Router(CARDS, LatencyModel(CARDS, quantile=0.5))


def req(budget):
    return RouteRequest(prompt="p", prompt_tokens=20, max_tokens=100, budget=budget)


@pytest.mark.parametrize(("worth", "model"), [(1e-4, "small"), (6e-4, "medium"), (2e-3, "large")])
def test_the_value_of_an_answer_picks_the_model_of_highest_expected_value(worth, model):
    d = router().decide(req(Budget(answer_value_usd=worth)), {}, QUALITY)
    assert d.model == model and d.reason is RouteReason.BEST_VALUE and d.budget_met
    best = max(d.candidates, key=lambda p: expected_value(p, worth))
    assert best.model == model
    assert f"an acceptable answer is worth ${worth:.3g}: {model} " in d.explanation and "; next " in d.explanation


def test_without_a_value_the_cheapest_model_meeting_the_budgets_is_chosen():
    d = router().decide(req(Budget(min_quality=0.4)), {}, QUALITY)
    assert d.model == "medium" and d.reason is RouteReason.CHEAPEST_FEASIBLE


def test_the_value_rule_chooses_only_among_models_meeting_every_budget():
    # 'large' has the highest expected value at 2e-3, but a 2,500 ms budget leaves only small and medium
    tight = Budget(max_latency_ms=2500, answer_value_usd=2e-3)
    d = router().decide(req(tight), {}, QUALITY)
    large = next(p for p in d.candidates if p.model == "large")
    assert not large.fits_latency and d.model == "medium" and d.prediction.fits_latency
    # a floor above 'small' and 'medium': only 'large' is left, whatever the value
    assert router().decide(req(Budget(min_quality=0.8, answer_value_usd=1e-6)), {}, QUALITY).model == "large"
    # a cost cap: 'large' (4.4e-4) is out
    capped = Budget(max_cost_usd=2e-4, answer_value_usd=1.0)
    assert router().decide(req(capped), {}, QUALITY).model == "medium"


def test_no_feasible_model_is_best_effort_as_without_a_value():
    d = router().decide(req(Budget(max_latency_ms=1, answer_value_usd=1.0)), {}, QUALITY)
    assert d.reason is RouteReason.BEST_EFFORT and not d.budget_met


def test_the_value_is_checked_and_merged_with_the_pool_default():
    with pytest.raises(InvalidRequestError, match="answer_value_usd must be > 0"):
        Budget(answer_value_usd=0)
    defaults = Budget(min_quality=0.2, answer_value_usd=1e-3)
    assert merge_budget(Budget(max_latency_ms=100), defaults).answer_value_usd == 1e-3
    assert merge_budget(Budget(answer_value_usd=5e-4), defaults).answer_value_usd == 5e-4


def test_pacing_lowers_the_pool_s_default_value_and_says_so():
    defaults = Budget(answer_value_usd=2e-3)  # unpaced: 'large'
    ahead = Pace("key k", "day", 5.25, 10.0, 0.5, 0.1)  # 2.5% of the budget ahead: strength 0.25
    assert paced_budget(None, defaults, ahead).answer_value_usd == pytest.approx(1.5e-3)
    assert paced_budget(None, defaults, Pace("key k", "day", 9.0, 10.0, 0.5, 0.1)).answer_value_usd is None
    d, used = decide_paced(router(), req(defaults), None, defaults, ahead, {}, QUALITY)
    assert d.model == "large" and d.reason is RouteReason.BEST_VALUE  # 1.5e-3 still chooses 'large'
    far = Pace("key k", "day", 5.8, 10.0, 0.5, 0.1)  # strength 0.8: the value is 4e-4
    d, used = decide_paced(router(), req(defaults), None, defaults, far, {}, QUALITY)
    assert used.budget.answer_value_usd == pytest.approx(4e-4)
    assert d.model == "small" and d.reason is RouteReason.BUDGET_PACED
    assert "default value of an acceptable answer $0.002 is lowered to $0.0004" in d.explanation
    assert "unpaced: large" in d.explanation
    # the request's own value is kept
    own = Budget(answer_value_usd=2e-3)
    d, used = decide_paced(router(), req(merge_budget(own, defaults)), own, defaults, far, {}, QUALITY)
    assert d.model == "large" and used.budget.answer_value_usd == 2e-3


def test_admission_tries_the_other_models_in_order_of_value():
    # at 2e-3 the expected values rank large (1.36e-3), medium (8.9e-4), small (5.78e-4); by cost small is next
    d = router().decide(req(Budget(answer_value_usd=2e-3)), {}, QUALITY)
    assert d.preference == ("large", "medium", "small")
    assert admission_order(d) == ("large", "medium", "small")
    cheapest = router().decide(req(Budget(min_quality=0.1)), {}, QUALITY)
    assert cheapest.preference == () and admission_order(cheapest) == ("small", "medium", "large")
