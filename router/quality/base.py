"""The quality-predictor interface and its simplest implementation."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence


class QualityPredictor(abc.ABC):
    """Predicts, per prompt and per model, P(the model's answer is acceptable)."""

    #: ``predict`` does CPU work (encoding the prompt) that must stay off an event loop. A
    #: predictor that only looks values up says False, and is then called inline.
    blocking: bool = True

    @property
    @abc.abstractmethod
    def models(self) -> tuple[str, ...]:
        """The model names this predictor scores."""

    @abc.abstractmethod
    def predict(self, prompts: Sequence[str]) -> list[dict[str, float]]:
        """One ``{model: probability}`` mapping per prompt, in order.

        Batched on purpose: embedding many prompts at once is much cheaper than one by one.
        """

    def predict_one(self, prompt: str) -> dict[str, float]:
        return self.predict([prompt])[0]

    def class_quality(self, quality_class: str) -> dict[str, float] | None:
        """``{model: probability}`` for every request of a class (``tools``, ``json_schema``), measured on
        that class as a whole; None when this predictor has no measurement for it (then it scores the
        prompt). A model without a measurement for the class is absent."""
        return None


class PriorQuality(QualityPredictor):
    """The pool config's prior quality per model, the same for every prompt."""

    blocking = False  # a lookup: no thread hop

    def __init__(self, priors: Mapping[str, float]) -> None:
        for name, value in priors.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"prior quality of {name!r} must be in [0, 1], got {value}")
        self._priors = dict(priors)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._priors)

    def predict(self, prompts: Sequence[str]) -> list[dict[str, float]]:
        return [dict(self._priors) for _ in prompts]
