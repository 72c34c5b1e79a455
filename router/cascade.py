"""Cascading: answer with the cheap model, escalate when it is not confident enough.

The cheap model's confidence is the mean log-probability of the tokens it generated. A
calibrated threshold per model says below which confidence its answers are not good enough:
:func:`calibrate_threshold` picks, from labelled answers, the lowest threshold at which the
answers kept (confidence >= threshold) reach a target quality, so the cascade keeps as many
cheap answers as it can. Pure logic, no I/O; the ingress runs the calls and charges both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from router.quality.profile import CascadeThreshold
from router.types import Decision, RouteReason

ALWAYS_ESCALATE = 1.0  # above any log-probability: every answer escalates


def mean_logprob(logprobs: Sequence[float]) -> float | None:
    """Mean token log-probability of an answer; None for an empty answer."""
    values = [float(v) for v in logprobs if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def should_escalate(confidence: float | None, threshold: float) -> bool:
    """Escalate an answer whose mean token logprob is below ``threshold`` (or that is empty)."""
    return confidence is None or confidence < threshold


def calibrate_threshold(model: str, confidence: Sequence[float], quality: Sequence[float],
                        target_quality: float) -> CascadeThreshold:
    """The lowest threshold whose kept answers have mean quality >= ``target_quality``.

    ``confidence`` is each labelled answer's mean token logprob, ``quality`` its score in
    [0, 1]. When no threshold reaches the target, every answer escalates.
    """
    conf = np.asarray(confidence, dtype=float)
    q = np.asarray(quality, dtype=float)
    if conf.size == 0 or conf.size != q.size:
        raise ValueError("confidence and quality must be non-empty and of equal length")
    if not 0.0 <= target_quality <= 1.0:
        raise ValueError(f"target_quality must be in [0, 1], got {target_quality}")
    order = np.argsort(-conf, kind="stable")
    c_sorted, q_sorted = conf[order], q[order]
    kept_mean = np.cumsum(q_sorted) / np.arange(1, conf.size + 1)  # keep the top-k by confidence
    # only cut between distinct confidences: keep whole tied groups
    ends = np.append(np.nonzero(np.diff(c_sorted))[0], conf.size - 1)
    ok = ends[kept_mean[ends] >= target_quality - 1e-12]
    if ok.size == 0:
        return CascadeThreshold(model=model, threshold=ALWAYS_ESCALATE, target_quality=target_quality,
                                kept_quality=0.0, escalation_rate=1.0, n=int(conf.size))
    last = int(ok.max())  # the most answers kept while the target holds
    kept = last + 1
    return CascadeThreshold(model=model, threshold=float(c_sorted[last]), target_quality=target_quality,
                            kept_quality=float(kept_mean[last]), escalation_rate=1.0 - kept / conf.size,
                            n=int(conf.size))


def escalation_target(decision: Decision) -> str | None:
    """The candidate with the highest predicted quality above the chosen model's, if any."""
    chosen = decision.prediction
    better = [p for p in decision.candidates
              if p.model != chosen.model and p.fits_context and p.quality > chosen.quality]
    if not better:
        return None
    return max(better, key=lambda p: (p.quality, -p.cost_usd, p.model)).model


def with_cascade(decision: Decision, thresholds: Mapping[str, CascadeThreshold]) -> Decision:
    """Mark ``decision`` for escalation when its model has a threshold and a better model exists.

    Pinned requests are never cascaded. The returned decision keeps its model and reason and
    carries ``escalate_to`` / ``escalate_below_confidence`` for the gateway to act on. When the
    model's calibrated escalation rate is so high that trying it costs more than it saves
    (:func:`attempt_pays`), it is marked ``escalate_first``: the target answers without the attempt.
    """
    if decision.reason is RouteReason.PINNED or decision.model not in thresholds:
        return decision
    target = escalation_target(decision)
    if target is None:
        return decision
    t = thresholds[decision.model]
    costs = {c.model: c.cost_usd for c in decision.candidates}
    first = not attempt_pays(costs.get(decision.model, 0.0), costs.get(target, 0.0), t.escalation_rate)
    return dataclasses.replace(decision, escalate_to=target, escalate_below_confidence=float(t.threshold),
                               escalate_first=first)


def attempt_pays(cheap_cost: float, target_cost: float, escalation_rate: float) -> bool:
    """Whether trying the cheap model first costs less, in expectation, than going to the target:
    ``cheap + rate * target < target``, i.e. the rate is below ``1 - cheap / target``."""
    return cheap_cost + escalation_rate * target_cost < target_cost


def escalated(decision: Decision, confidence: float | None, *, failed: bool = False) -> Decision:
    """The decision to answer with ``decision``'s escalation target once the cheap model's answer
    was refused (``confidence`` below the threshold, or no tokens) or the cheap model ``failed``."""
    target, threshold = decision.escalate_to, decision.escalate_below_confidence
    if target is None or threshold is None:
        raise ValueError(f"decision for {decision.model} has no escalation target")
    pred = next((c for c in decision.candidates if c.model == target), decision.prediction)
    if decision.escalate_first:
        why = (f"escalated without trying {decision.model}: its calibrated threshold escalates so many of its "
               f"answers that trying it first would cost more than it saves")
    elif failed:
        why = f"escalated: {decision.model} failed"
    elif confidence is None:
        why = f"escalated: {decision.model} answered no tokens"
    else:
        why = (f"escalated from {decision.model}: mean token logprob {confidence:.3f} below its calibrated "
               f"threshold {threshold:.3f}")
    return Decision(model=target, reason=RouteReason.CASCADE, prediction=pred, budget_met=pred.feasible,
                    explanation=why, candidates=decision.candidates)
