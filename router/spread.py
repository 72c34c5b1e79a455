"""Spreading requests over near-equal models, so that replicas deciding on one view do not herd.

Every ingress replica routes on the same load, and that load is a little stale (the replicas'
reports arrive every poll interval). A strict "cheapest first" rule then sends every replica's
requests to one model until a report shows it full, then all of them to the next one: a herd
that overloads each model in turn. Among the feasible models whose cost is within a tolerance
of the cheapest, the router instead draws one uniformly.

Uniformly, not weighted by load: load has already decided which models are feasible (a model
predicted to miss the budget, or to keep the request waiting too long, is not among them), and
within them a draw that leans on small differences in a stale view overshoots the same way the
herd does. In ``tests/router/test_spread.py``'s simulation (four replicas, one view per window,
the pool at 83% load) a draw weighted by inverse predicted latency left a mean backlog of ~5
requests, a uniform draw under 1, and no draw 8.

The rule is pure: the caller hands in a uniform draw in [0, 1) (``Router`` takes any source of
them, e.g. a seeded ``random.Random().random`` in tests).
"""

from __future__ import annotations

from collections.abc import Sequence

from router.types import Prediction

TOLERANCE = 0.05  # models within 5% of the cheapest cost count as equal


def near_equal(feasible: Sequence[Prediction], tolerance: float = TOLERANCE) -> tuple[Prediction, ...]:
    """The predictions whose cost is within ``tolerance`` (relative) of the cheapest, best first:
    cheapest, then most likely to be good enough, then quickest."""
    if not feasible:
        raise ValueError("no prediction to choose from")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    ranked = sorted(feasible, key=lambda p: (p.cost_usd, -p.quality, p.latency_ms, p.model))
    ceiling = ranked[0].cost_usd * (1.0 + tolerance)
    return tuple(p for p in ranked if p.cost_usd <= ceiling)


def pick(preds: Sequence[Prediction], draw: float) -> Prediction:
    """The prediction ``draw`` (uniform in [0, 1)) lands on, each with the same chance."""
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    return preds[min(int(draw * len(preds)), len(preds) - 1)]
