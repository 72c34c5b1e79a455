"""The learned quality predictor: a calibrated small network per model on embedding + features.

For each pool model, P(acceptable) = sigmoid(a * z + c) with the logit
``z = w2 . relu(W1^T x + b1) + b2``, where ``x`` is the prompt's sentence embedding followed by
its standardised cheap features (:mod:`router.quality.features`) and ``(a, c)`` is a Platt
recalibration fitted on out-of-task predictions (see :mod:`router.quality.train`). Inference
is two small matrix products: pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.quality.base import QualityPredictor
from router.quality.encoders import Encoder
from router.quality.features import FEATURE_NAMES, feature_matrix


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


@dataclass(frozen=True, eq=False)
class Head:
    """One model's one-hidden-layer network and its Platt recalibration."""

    model: str
    hidden_weights: np.ndarray  # (dim + len(feature_names), hidden)
    hidden_bias: np.ndarray  # (hidden,)
    out_weights: np.ndarray  # (hidden,)
    out_bias: float
    platt_scale: float = 1.0
    platt_shift: float = 0.0

    def logit(self, x: np.ndarray) -> np.ndarray:
        h = np.maximum(x @ self.hidden_weights + self.hidden_bias, 0.0)
        return h @ self.out_weights + self.out_bias


@dataclass(frozen=True, eq=False)
class QualityParams:
    """Everything a :class:`LearnedQuality` needs besides the encoder."""

    encoder_name: str
    dim: int
    feature_names: tuple[str, ...]
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    heads: tuple[Head, ...]

    def __post_init__(self) -> None:
        width = self.dim + len(self.feature_names)
        for head in self.heads:
            hidden = head.hidden_bias.shape[0] if head.hidden_bias.ndim == 1 else -1
            if (head.hidden_weights.shape != (width, hidden) or head.out_weights.shape != (hidden,)):
                raise ValueError(f"head {head.model!r} has weights of shape {head.hidden_weights.shape} / "
                                 f"{head.out_weights.shape}, expected ({width}, hidden) / (hidden,)")
        if self.feature_mean.shape != (len(self.feature_names),) or self.feature_scale.shape != self.feature_mean.shape:
            raise ValueError("feature mean/scale do not match the feature names")
        if len({h.model for h in self.heads}) != len(self.heads):
            raise ValueError("one head per model")

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(h.model for h in self.heads)

    def design(self, emb: np.ndarray, feats: np.ndarray) -> np.ndarray:
        return np.hstack([np.asarray(emb, dtype=np.float64),
                          (np.asarray(feats, dtype=np.float64) - self.feature_mean) / self.feature_scale])

    def probabilities(self, emb: np.ndarray, feats: np.ndarray) -> np.ndarray:
        """Calibrated P(acceptable), shape (prompts, models)."""
        x = self.design(emb, feats)
        z = np.stack([h.logit(x) for h in self.heads], axis=1)
        a = np.array([h.platt_scale for h in self.heads])
        c = np.array([h.platt_shift for h in self.heads])
        return sigmoid(a * z + c)


class LearnedQuality(QualityPredictor):
    """Scores prompts with a trained :class:`QualityParams` and an :class:`Encoder`."""

    def __init__(self, params: QualityParams, encoder: Encoder) -> None:
        if tuple(params.feature_names) != FEATURE_NAMES:
            raise ValueError(f"profile features {params.feature_names} differ from this version's {FEATURE_NAMES}")
        if encoder.dim != params.dim:
            raise ValueError(f"encoder {encoder.name} gives {encoder.dim} dims, the profile expects {params.dim}")
        self.params = params
        self.encoder = encoder

    @property
    def models(self) -> tuple[str, ...]:
        return self.params.models

    def predict_matrix(self, prompts: Sequence[str]) -> np.ndarray:
        """P(acceptable) as an array (prompts, models), columns in :attr:`models` order."""
        return self.params.probabilities(self.encoder.encode(prompts), feature_matrix(prompts))

    def predict(self, prompts: Sequence[str]) -> list[dict[str, float]]:
        probs = self.predict_matrix(prompts)
        names = self.models
        return [{m: float(p) for m, p in zip(names, row)} for row in probs]
