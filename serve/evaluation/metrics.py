"""Figures of a live evaluation: accuracy, cost, latency, routing mix, the cost-accuracy curve, calibration.

Pure functions over per-request results; no I/O. A *variant* is one way of answering the whole
workload (a pinned model, a random mix, the router at one quality floor, with or without the cascade).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Answer:
    """One scored request of one variant."""

    id: str
    task: str
    ok: bool  # answered (HTTP 200)
    correct: float  # 1.0 / 0.0 against gold (0.0 when not answered)
    model: str
    cost_usd: float
    latency_s: float
    predicted_quality: float | None
    route_reason: str = ""
    cascade: str = ""


def ece(pred: Sequence[float], outcome: Sequence[float], bins: int = 10) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error over equal-width bins of the prediction, and the per-bin table."""
    p = np.asarray(pred, dtype=float)
    y = np.asarray(outcome, dtype=float)
    if p.size == 0:
        return float("nan"), []
    idx = np.minimum((p * bins).astype(int), bins - 1)
    table, total = [], 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        gap = abs(float(p[m].mean()) - float(y[m].mean()))
        total += gap * m.sum() / p.size
        table.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "n": int(m.sum()),
                      "predicted": round(float(p[m].mean()), 4), "measured": round(float(y[m].mean()), 4)})
    return total, table


def summarize(answers: Sequence[Answer]) -> dict[str, Any]:
    n = len(answers)
    lat = np.array([a.latency_s for a in answers if a.ok]) * 1000
    cost = sum(a.cost_usd for a in answers)
    out: dict[str, Any] = {
        "requests": n, "answered": sum(a.ok for a in answers),
        "accuracy": round(sum(a.correct for a in answers) / n, 4) if n else None,
        "cost_per_1k_usd": round(1000 * cost / n, 6) if n else None,
        "latency_ms": ({"p50": round(float(np.percentile(lat, 50)), 1), "p99": round(float(np.percentile(lat, 99)), 1)}
                       if lat.size else None),
        "mix": dict(sorted(Counter(a.model for a in answers if a.ok).items())),
    }
    cascades = Counter(a.cascade for a in answers if a.cascade)
    if cascades:
        out["cascade"] = dict(sorted(cascades.items()))
    # calibration only where the profile predicted: a pinned request reports the model's prior
    judged = [a for a in answers if a.ok and a.predicted_quality is not None and a.route_reason != "pinned"]
    if judged:
        e, table = ece([a.predicted_quality for a in judged], [a.correct for a in judged])
        out["ece"] = round(e, 4)
        out["calibration"] = table
    return out


def random_mix_frontier(fixed: dict[str, tuple[float, float]]) -> list[tuple[float, float]]:
    """Upper hull of (cost, accuracy) reachable by randomly mixing the fixed models.

    A random mix answers each request with model m with probability p_m, so on the same workload its
    expected cost and accuracy are the p-weighted averages of the fixed models' own: the convex hull
    of their points. Returned as the hull's upper boundary, sorted by cost.
    """
    pts = sorted(set(fixed.values()))
    hull: list[tuple[float, float]] = []
    for c, a in pts:
        if hull and a <= hull[-1][1]:  # no better than a cheaper point: never worth buying
            continue
        while len(hull) >= 2:
            (c1, a1), (c2, a2) = hull[-2], hull[-1]
            if (a2 - a1) * (c - c1) <= (a - a1) * (c2 - c1):  # middle point under the chord: drop it
                hull.pop()
            else:
                break
        hull.append((c, a))
    return hull


def frontier_accuracy(frontier: Sequence[tuple[float, float]], cost: float) -> float:
    """Best accuracy a random mix reaches at no more than ``cost``."""
    below = [(c, a) for c, a in frontier if c <= cost]
    if not below:
        return 0.0
    best = max(a for _, a in below)
    for (c1, a1), (c2, a2) in zip(frontier, frontier[1:]):
        if c1 <= cost <= c2 and c2 > c1:
            best = max(best, a1 + (a2 - a1) * (cost - c1) / (c2 - c1))
    return best


def frontier_cost(frontier: Sequence[tuple[float, float]], accuracy: float) -> float | None:
    """Least cost at which a random mix reaches ``accuracy`` (the inverse of :func:`frontier_accuracy`),
    None when no mix does."""
    for i, (c2, a2) in enumerate(frontier):
        if a2 >= accuracy - 1e-12:
            if i == 0:
                return c2
            c1, a1 = frontier[i - 1]
            return c1 + (accuracy - a1) / (a2 - a1) * (c2 - c1)
    return None


def area_under(points: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    """Normalised area under a monotone accuracy-vs-cost step curve over [lo, hi] (best accuracy at
    or below each cost), so 1.0 would be perfect accuracy at the lowest cost."""
    if hi <= lo:
        return float("nan")
    grid = np.linspace(lo, hi, 201)
    best = [max([a for c, a in points if c <= g + 1e-15], default=0.0) for g in grid]
    return float(np.trapezoid(best, grid) / (hi - lo))

