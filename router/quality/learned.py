"""The learned quality predictor: a calibrated small network per model on embedding + features.

For each pool model the network gives ``p_net = sigmoid(w2 . relu(W1^T x + b1) + b2)``, where
``x`` is the prompt's sentence embedding followed by its standardised cheap features
(:mod:`router.quality.features`). An optional *memory* of the training prompts adds a
nearest-neighbour estimate ``p_knn`` (the mean outcome of the k most similar training
prompts): the blend ``p = (1 - w) p_net + w p_knn`` is then recalibrated,
``P(acceptable) = sigmoid(a * logit(p) + c)``, with ``(a, c)`` fitted on out-of-task
predictions (see :mod:`router.quality.train`). The network generalises across tasks, the
memory sharpens predictions near prompts it has seen. Inference is a few small matrix
products: pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from router.quality.base import QualityPredictor
from router.quality.encoders import Encoder
from router.quality.features import FEATURE_NAMES, feature_matrix
from router.quality.knn import knn_quality


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


@dataclass(frozen=True, eq=False)
class Memory:
    """Training prompts' embeddings (unit rows) and outcomes, for the nearest-neighbour term."""

    embeddings: np.ndarray  # (rows, dim) float32
    outcomes: np.ndarray  # (rows, models)
    k: int
    weight: float

    def estimate(self, emb: np.ndarray) -> np.ndarray:
        return knn_quality(self.embeddings, self.outcomes, emb, self.k)


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
    memory: Memory | None = None

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
        if self.memory is not None and (self.memory.embeddings.shape[1:] != (self.dim,)
                                        or self.memory.outcomes.shape != (self.memory.embeddings.shape[0],
                                                                          len(self.heads))):
            raise ValueError("memory embeddings/outcomes do not match the dimension and the models")

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(h.model for h in self.heads)

    def design(self, emb: np.ndarray, feats: np.ndarray) -> np.ndarray:
        return np.hstack([np.asarray(emb, dtype=np.float64),
                          (np.asarray(feats, dtype=np.float64) - self.feature_mean) / self.feature_scale])

    def blend(self, emb: np.ndarray, feats: np.ndarray) -> np.ndarray:
        """Uncalibrated P(acceptable): the network's, blended with the memory's estimate."""
        x = self.design(emb, feats)
        p = sigmoid(np.stack([h.logit(x) for h in self.heads], axis=1))
        if self.memory is not None and self.memory.weight > 0:
            p = (1 - self.memory.weight) * p + self.memory.weight * self.memory.estimate(emb)
        return p

    def probabilities(self, emb: np.ndarray, feats: np.ndarray) -> np.ndarray:
        """Calibrated P(acceptable), shape (prompts, models)."""
        z = logit(self.blend(emb, feats))
        a = np.array([h.platt_scale for h in self.heads])
        c = np.array([h.platt_shift for h in self.heads])
        return sigmoid(a * z + c)


class LearnedQuality(QualityPredictor):
    """Scores prompts with a trained :class:`QualityParams` and an :class:`Encoder`; a request class
    with a measured accuracy per model (``classes``: ``{class: {model: accuracy}}``) gets that instead."""

    def __init__(self, params: QualityParams, encoder: Encoder,
                 classes: Mapping[str, Mapping[str, float]] | None = None) -> None:
        if tuple(params.feature_names) != FEATURE_NAMES:
            raise ValueError(f"profile features {params.feature_names} differ from this version's {FEATURE_NAMES}")
        if encoder.dim != params.dim:
            raise ValueError(f"encoder {encoder.name} gives {encoder.dim} dims, the profile expects {params.dim}")
        self.params = params
        self.encoder = encoder
        self.classes = {name: dict(acc) for name, acc in (classes or {}).items()}

    @property
    def models(self) -> tuple[str, ...]:
        return self.params.models

    def predict_matrix(self, prompts: Sequence[str]) -> np.ndarray:
        """P(acceptable) as an array (prompts, models), columns in :attr:`models` order."""
        return self.params.probabilities(self.encoder.encode(prompts), feature_matrix(prompts))

    def class_quality(self, quality_class: str) -> dict[str, float] | None:
        acc = self.classes.get(quality_class)
        return None if acc is None else dict(acc)

    def predict(self, prompts: Sequence[str]) -> list[dict[str, float]]:
        probs = self.predict_matrix(prompts)
        names = self.models
        return [{m: float(p) for m, p in zip(names, row)} for row in probs]
