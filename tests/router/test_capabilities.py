"""Capability-aware routing: only models able to serve a request are candidates (pure unit tests)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from router import Budget, LatencyModel, LatencyPrior, ModelCard, Price, RouteReason, RouteRequest, Router
from router.errors import InvalidRequestError


def card(name, price, quality, caps=()):
    return ModelCard(name=name, price=Price(price, price * 2), prior_quality=quality, context_length=4096,
                     latency_prior=LatencyPrior(50.0, 10.0), capabilities=frozenset(caps))


CARDS = [card("small", 0.1, 0.4), card("medium", 0.5, 0.6, ["json_schema"]),
         card("large", 2.0, 0.9, ["json_schema", "tools"])]
QUALITY = {"small": 0.4, "medium": 0.6, "large": 0.9}


def router(cards=CARDS):
    return Router(cards, LatencyModel(cards, quantile=0.5))


def req(requires=(), pinned=None, budget=Budget(), allowed=None):
    return RouteRequest(prompt="p", prompt_tokens=20, max_tokens=50, budget=budget, pinned_model=pinned,
                        requires=frozenset(requires), allowed_models=allowed)


def test_plain_requests_consider_every_model():
    assert router().decide(req(), {}, QUALITY).model == "small"


def test_only_capable_models_are_candidates_and_the_reason_says_so():
    d = router().decide(req(["json_schema"]), {}, QUALITY)
    assert d.model == "medium" and d.reason is RouteReason.CHEAPEST_FEASIBLE
    assert {c.model for c in d.candidates} == {"medium", "large"}
    assert "among those supporting json_schema" in d.explanation
    d = router().decide(req(["tools", "json_schema"]), {}, QUALITY)
    assert d.model == "large" and {c.model for c in d.candidates} == {"large"}
    assert "json_schema and tools" in d.explanation


def test_best_effort_stays_within_capable_models():
    d = router().decide(req(["json_schema"], budget=Budget(min_quality=0.99)), {}, QUALITY)
    assert d.reason is RouteReason.BEST_EFFORT and d.model in ("medium", "large")
    assert "supporting json_schema" in d.explanation


def test_no_capable_model_is_a_400_naming_the_capability():
    cards = [card("small", 0.1, 0.4), card("medium", 0.5, 0.6, ["json_schema"])]
    with pytest.raises(InvalidRequestError) as err:
        router(cards).decide(req(["tools"]), {}, QUALITY)
    assert err.value.param == "tools" and err.value.code == "unsupported_capability"
    assert "tools" in err.value.message and "no model in the pool does" in err.value.message


def test_api_key_narrowing_to_incapable_models_is_a_400_listing_capable_ones():
    with pytest.raises(InvalidRequestError) as err:
        router().decide(req(["json_schema"], allowed=frozenset({"small"})), {}, QUALITY)
    assert err.value.param == "response_format"
    assert "no model this request may use supports json_schema; models that do: large, medium" in err.value.message


def test_pinned_model_without_the_capability_is_a_400():
    with pytest.raises(InvalidRequestError) as err:
        router().decide(req(["tools"], pinned="medium"), {}, QUALITY)
    assert "model medium does not support tools" in err.value.message and "large" in err.value.message
    assert router().decide(req(["tools"], pinned="large"), {}, QUALITY).model == "large"


def test_fallback_never_picks_an_incapable_model():
    r = router()
    d = r.fallback(req(["json_schema"]), {}, QUALITY, frozenset({"medium"}))
    assert d is not None and d.model == "large" and d.reason is RouteReason.FALLBACK
    assert r.fallback(req(["tools"]), {}, QUALITY, frozenset({"large"})) is None
    assert r.fallback(replace(req(), requires=frozenset()), {}, QUALITY, frozenset({"large"})).model == "small"
