"""Quality prediction: the probability that a model's answer to a prompt is acceptable."""

from router.quality.base import PriorQuality, QualityPredictor

__all__ = ["PriorQuality", "QualityPredictor"]
