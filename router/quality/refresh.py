"""Refresh a profile's calibration from live outcomes, without its prompts.

Live traffic yields outcomes for the answers it checks: a shadow comparison tells whether a
routed model's answer agreed with the strongest model's. Each outcome carries the quality the
gateway predicted, which the profile produced as ``sigmoid(a * z + c)`` from the head's raw
score ``z`` and the model's Platt pair ``(a, c)``; so ``z`` is recovered from the prediction
and the pair is refitted on the live outcomes (a logistic fit of outcome on ``z``, with a
Gaussian prior that holds the pair near its old value when outcomes are few). The heads, the
encoder and the prompts are untouched: this corrects how far the predictions can be trusted on
today's traffic, which is what drift breaks first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from router.quality.learned import logit as _logit
from router.quality.learned import sigmoid as _sigmoid

EPS = 1e-6


@dataclass(frozen=True)
class PlattRefit:
    model: str
    n: int
    scale: float
    shift: float
    observed_rate: float
    predicted_before: float  # mean predicted quality on the live outcomes, old pair
    predicted_after: float  # the same, new pair
    log_loss_before: float
    log_loss_after: float


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def refit_platt(model: str, scale: float, shift: float, predicted: Sequence[float], outcome: Sequence[float],
                *, prior_strength: float = 10.0) -> PlattRefit:
    """A new ``(scale, shift)`` for ``model`` from live ``(predicted quality, outcome)`` pairs.

    ``prior_strength`` is how many outcomes' worth of weight the old pair keeps.
    """
    p = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(outcome, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError("predicted and outcome must be equal-length, non-empty sequences")
    if scale == 0:
        raise ValueError(f"model {model!r} has a Platt scale of 0: its predictions carry no score to refit")
    z = (_logit(p) - shift) / scale
    n = len(y)

    def loss(theta: np.ndarray) -> float:
        q = _sigmoid(theta[0] * z + theta[1])
        prior = prior_strength / 2 * ((theta[0] - scale) ** 2 + (theta[1] - shift) ** 2)
        return _log_loss(q, y) * n + prior

    fit = minimize(loss, np.array([scale, shift]), method="L-BFGS-B", bounds=[(1e-3, 50.0), (-20.0, 20.0)])
    a, c = (float(v) for v in fit.x)
    after = _sigmoid(a * z + c)
    return PlattRefit(model=model, n=n, scale=a, shift=c, observed_rate=float(y.mean()),
                      predicted_before=float(p.mean()), predicted_after=float(after.mean()),
                      log_loss_before=_log_loss(p, y), log_loss_after=_log_loss(after, y))
