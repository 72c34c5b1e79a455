"""The live Platt refit: it moves predictions toward what live outcomes show, and barely at all
when they already agree or are few."""

from __future__ import annotations

import numpy as np
import pytest

from router.quality.learned import sigmoid
from router.quality.refresh import refit_platt


def _live(n: int, true_scale: float, true_shift: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    predicted = sigmoid(1.0 * z + 0.0)  # what the old pair (1, 0) predicted
    outcome = (rng.random(n) < sigmoid(true_scale * z + true_shift)).astype(float)
    return predicted, outcome


def test_an_overconfident_model_is_pulled_down_to_its_live_rate():
    predicted, outcome = _live(2000, 1.0, -1.5)
    fit = refit_platt("m", 1.0, 0.0, predicted, outcome)
    assert fit.predicted_before > fit.observed_rate + 0.15
    assert abs(fit.predicted_after - fit.observed_rate) < 0.02
    assert fit.shift == pytest.approx(-1.5, abs=0.25) and fit.log_loss_after < fit.log_loss_before


def test_a_calibrated_model_keeps_its_pair():
    predicted, outcome = _live(2000, 1.0, 0.0, seed=1)
    fit = refit_platt("m", 1.0, 0.0, predicted, outcome)
    assert fit.scale == pytest.approx(1.0, abs=0.15) and fit.shift == pytest.approx(0.0, abs=0.15)


def test_few_outcomes_move_the_pair_little():
    predicted, outcome = _live(8, 1.0, -3.0, seed=2)
    few = refit_platt("m", 1.0, 0.0, predicted, outcome, prior_strength=10.0)
    many = refit_platt("m", 1.0, 0.0, *_live(2000, 1.0, -3.0, seed=2), prior_strength=10.0)
    assert abs(few.shift) < abs(many.shift)


def test_a_non_default_old_pair_is_inverted_before_the_fit():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 1.0, 3000)
    predicted = sigmoid(2.0 * z + 0.5)  # an old pair (2, 0.5)
    outcome = (rng.random(3000) < sigmoid(2.0 * z + 0.5)).astype(float)
    fit = refit_platt("m", 2.0, 0.5, predicted, outcome)
    assert fit.scale == pytest.approx(2.0, abs=0.3) and fit.shift == pytest.approx(0.5, abs=0.2)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="equal-length"):
        refit_platt("m", 1.0, 0.0, [0.5], [1.0, 0.0])
    with pytest.raises(ValueError, match="Platt scale of 0"):
        refit_platt("m", 0.0, 0.0, [0.5], [1.0])
