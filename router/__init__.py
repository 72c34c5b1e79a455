"""tiergate's routing decision: pure Python, no Ray, no I/O.

Frozen dataclasses go in (:mod:`router.types`), a :class:`~router.types.Decision` with its
reason comes out (:class:`~router.policy.Router`).
"""

from router.latency import LatencyModel, Observation
from router.policy import Router, merge_budget
from router.types import (
    Budget,
    Decision,
    LatencyPrior,
    ModelCard,
    ModelLoad,
    Prediction,
    Price,
    RouteReason,
    RouteRequest,
)

__all__ = [
    "Budget", "Decision", "LatencyModel", "LatencyPrior", "ModelCard", "ModelLoad", "Observation",
    "Prediction", "Price", "RouteReason", "RouteRequest", "Router", "merge_budget",
]
