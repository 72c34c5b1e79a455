"""Cascade escalation and the calibration of its threshold."""

from __future__ import annotations

import pytest

from router.cascade import (
    ALWAYS_ESCALATE,
    attempt_pays,
    calibrate_threshold,
    escalated,
    escalation_target,
    mean_logprob,
    should_escalate,
    with_cascade,
)
from router.latency import LatencyModel
from router.policy import Router
from router.quality import CascadeThreshold
from router.types import Budget, LatencyPrior, ModelCard, Price, RouteReason, RouteRequest


def test_mean_logprob():
    assert mean_logprob([-0.5, -1.5]) == pytest.approx(-1.0)
    assert mean_logprob([]) is None
    assert mean_logprob([float("-inf"), -1.0]) == -1.0  # non-finite values are skipped


def test_should_escalate_below_the_threshold_only():
    assert should_escalate(-0.9, -0.5)
    assert not should_escalate(-0.5, -0.5)
    assert not should_escalate(-0.1, -0.5)
    assert should_escalate(None, -0.5)  # an empty answer always escalates


def test_calibrate_keeps_the_most_answers_that_meet_the_target():
    conf = [-0.1, -0.2, -0.3, -0.4]
    quality = [1, 1, 0, 0]
    t = calibrate_threshold("small", conf, quality, 0.9)
    assert t.threshold == -0.2 and t.kept_quality == 1.0 and t.escalation_rate == 0.5 and t.n == 4
    lenient = calibrate_threshold("small", conf, quality, 0.5)
    assert lenient.threshold == -0.4 and lenient.escalation_rate == 0.0
    assert not should_escalate(-0.4, lenient.threshold)


def test_calibrate_cuts_only_between_distinct_confidences():
    # the two top answers tie; keeping just one of them is not a threshold
    t = calibrate_threshold("small", [-0.1, -0.1, -0.3], [1, 0, 1], 0.9)
    assert t.threshold == ALWAYS_ESCALATE and t.escalation_rate == 1.0
    t = calibrate_threshold("small", [-0.1, -0.1, -0.3], [1, 0, 1], 0.5)
    assert t.threshold == -0.3 and t.kept_quality == pytest.approx(2 / 3)


def test_unreachable_target_escalates_everything():
    t = calibrate_threshold("small", [-0.1, -0.2], [0, 0], 0.5)
    assert t.threshold == ALWAYS_ESCALATE
    assert should_escalate(0.0, t.threshold)


def test_calibrate_rejects_bad_input():
    with pytest.raises(ValueError):
        calibrate_threshold("small", [], [], 0.5)
    with pytest.raises(ValueError):
        calibrate_threshold("small", [-0.1], [1], 1.5)


def _router() -> Router:
    cards = [
        ModelCard("small", Price(0.02, 0.06), 0.3, 2048, LatencyPrior(60, 12)),
        ModelCard("large", Price(0.05, 0.15), 0.6, 2048, LatencyPrior(120, 25)),
    ]
    return Router(cards, LatencyModel(cards))


def _t(model: str, threshold: float, escalation_rate: float = 0.3) -> CascadeThreshold:
    return CascadeThreshold(model=model, threshold=threshold, target_quality=0.8, kept_quality=0.8,
                            escalation_rate=escalation_rate, n=100)


def _request(**kw) -> RouteRequest:
    return RouteRequest(prompt="What is 2 + 2?", prompt_tokens=10, max_tokens=8, **kw)


def test_with_cascade_marks_the_cheap_choice_for_escalation():
    router = _router()
    decision = router.decide(_request(budget=Budget(min_quality=0.2)), {}, {"small": 0.4, "large": 0.7})
    assert decision.model == "small"
    assert escalation_target(decision) == "large"
    planned = with_cascade(decision, {"small": _t("small", -0.8)})
    assert planned.model == "small" and planned.reason == decision.reason
    assert planned.escalate_to == "large" and planned.escalate_below_confidence == -0.8


def test_no_cascade_without_a_threshold_a_better_model_or_when_pinned():
    router = _router()
    quality = {"small": 0.4, "large": 0.7}
    cheap = router.decide(_request(budget=Budget(min_quality=0.2)), {}, quality)
    assert with_cascade(cheap, {"large": _t("large", -0.8)}).escalate_to is None
    best = router.decide(_request(budget=Budget(min_quality=0.6)), {}, quality)
    assert best.model == "large" and with_cascade(best, {"large": _t("large", -0.8)}).escalate_to is None
    pinned = router.decide(_request(pinned_model="small"), {}, quality)
    assert pinned.reason is RouteReason.PINNED
    assert with_cascade(pinned, {"small": _t("small", -0.8)}).escalate_to is None


def test_a_cheap_model_that_escalates_too_often_is_not_tried():
    router = _router()
    decision = router.decide(_request(budget=Budget(min_quality=0.2)), {}, {"small": 0.4, "large": 0.7})
    costs = {c.model: c.cost_usd for c in decision.candidates}
    breakeven = 1 - costs["small"] / costs["large"]  # the rate at which the attempt costs what it saves
    assert 0 < breakeven < 1
    kept = with_cascade(decision, {"small": _t("small", -0.8, escalation_rate=breakeven - 0.01)})
    assert kept.escalate_to == "large" and not kept.escalate_first
    doomed = with_cascade(decision, {"small": _t("small", -0.8, escalation_rate=breakeven + 0.01)})
    assert doomed.escalate_to == "large" and doomed.escalate_first and doomed.model == "small"
    up = escalated(doomed, None)
    assert up.model == "large" and up.reason is RouteReason.CASCADE
    assert "escalated without trying small" in up.explanation
    assert attempt_pays(1.0, 10.0, 0.89) and not attempt_pays(1.0, 10.0, 0.9)
