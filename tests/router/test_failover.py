"""Failover policy (router/failover.py): the retry budget, what is never gone back to, the wait bound."""

from __future__ import annotations

from router import Budget, LatencyModel, LatencyPrior, ModelCard, ModelLoad, Price, RouteReason, RouteRequest, Router
from router.admission import WaitBound
from router.failover import may_retry, next_model


def card(name: str, price: float) -> ModelCard:
    return ModelCard(name=name, price=Price(price, price), prior_quality=0.5, context_length=4096,
                     latency_prior=LatencyPrior(100.0, 10.0, 1.0))


CARDS = [card("small", 0.1), card("medium", 0.5), card("large", 1.0)]
REQ = RouteRequest(prompt="p", prompt_tokens=20, max_tokens=50, budget=Budget())


def router() -> Router:
    return Router(CARDS, LatencyModel(CARDS, quantile=0.5), near_equal=None)


def test_the_retry_budget_counts_failures_including_the_last():
    assert may_retry(1, 1) and not may_retry(2, 1)
    assert not may_retry(1, 0)  # no retries: the first failure is the answer


def test_the_next_model_is_the_cheapest_not_tried_and_says_why():
    nxt = next_model(router(), REQ, {}, {}, ["small"], failures=1, max_retries=2, bound=None, waited_ms=0)
    assert nxt.model == "medium" and nxt.reason is RouteReason.FALLBACK and "failed over from small" in nxt.explanation
    nxt = next_model(router(), REQ, {}, {}, ["small", "medium"], failures=2, max_retries=2, bound=None, waited_ms=0)
    assert nxt.model == "large"


def test_none_when_the_budget_is_spent_or_nothing_is_left():
    r = router()
    assert next_model(r, REQ, {}, {}, ["small", "medium"], failures=2, max_retries=1, bound=None, waited_ms=0) is None
    assert next_model(r, REQ, {}, {}, ["small", "medium", "large"], failures=3, max_retries=5, bound=None,
                      waited_ms=0) is None


def test_none_when_the_next_model_can_no_longer_answer_within_the_bound():
    r, loads = router(), {"medium": ModelLoad(in_flight=3)}  # a queue in front of the next model
    nxt = next_model(r, REQ, loads, {}, ["small"], failures=1, max_retries=1, bound=None, waited_ms=0)
    wait = nxt.prediction.wait_ms
    bound = WaitBound(max_wait_ms=wait + 500)
    assert next_model(r, REQ, loads, {}, ["small"], failures=1, max_retries=1, bound=bound, waited_ms=400) is not None
    assert next_model(r, REQ, loads, {}, ["small"], failures=1, max_retries=1, bound=bound, waited_ms=600) is None
