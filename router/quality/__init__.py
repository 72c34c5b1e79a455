"""Quality prediction: the probability that a model's answer to a prompt is acceptable."""

from router.quality.base import PriorQuality, QualityPredictor
from router.quality.encoders import Encoder, FakeEncoder, LazyEncoder
from router.quality.learned import LearnedQuality
from router.quality.profile import CascadeThreshold

__all__ = ["CascadeThreshold", "Encoder", "FakeEncoder", "LazyEncoder", "LearnedQuality", "PriorQuality",
           "QualityPredictor"]
