"""Replay evaluation maths: how much of the weak-to-strong quality gap a router recovers.

Pure functions on arrays (numpy), no I/O. Conventions follow the routing literature
(RouteLLM's APGR / CPT): a *policy* gives every prompt a score, and to reach a strong-model
call share ``s`` it sends the ``s * n`` highest-scoring prompts to the strong model. Prompts
with equal scores are ordered at random, and the curve is its *expectation*, which is linear
across a tied group; so the constant-score policy is exactly the ``random`` baseline and its
``apgr`` is 0.5.

For N > 2 models a policy is a matrix of predicted P(acceptable) per prompt and model; the
rule "maximise P(acceptable) - cost / price" is swept over the price into a cost-quality
curve whose area is normalised the same way (0 = the cheapest model's quality, 1 = the most
expensive model's, random mixing of those two = 0.5). With two models that rule is the
ranking by predicted gain used for ``apgr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CURVE_GRID = 21  # points of the reported curve: strong share 0, 0.05, ..., 1


@dataclass(frozen=True)
class Curve:
    """A piecewise-linear curve of quality against a cost axis in [0, 1], as knots."""

    x: np.ndarray
    quality: np.ndarray

    def at(self, x: float) -> float:
        return float(np.interp(x, self.x, self.quality))

    def area(self) -> float:
        return float(np.trapezoid(self.quality, self.x))

    def first_reaching(self, target: float) -> float | None:
        """Smallest x where the curve reaches ``target`` (linear within a segment), or None."""
        q, x = self.quality, self.x
        hits = np.nonzero(q >= target - 1e-12)[0]
        if hits.size == 0:
            return None
        i = int(hits[0])
        if i == 0:
            return float(x[0])
        q0, q1, x0, x1 = q[i - 1], q[i], x[i - 1], x[i]
        return float(x0 + (target - q0) / (q1 - q0) * (x1 - x0))

    def sampled(self, points: int = CURVE_GRID) -> list[list[float]]:
        grid = np.linspace(0.0, 1.0, points)
        return [[round(float(g), 4), round(self.at(float(g)), 6)] for g in grid]


# ----------------------------------------------------------------------------- two models
def strong_share_curve(scores: Sequence[float] | np.ndarray, weak: Sequence[float] | np.ndarray,
                       strong: Sequence[float] | np.ndarray) -> Curve:
    """Expected mean quality against strong-call share when the highest scores go strong first."""
    s = np.asarray(scores, dtype=float)
    w = np.asarray(weak, dtype=float)
    g = np.asarray(strong, dtype=float) - w
    n = s.size
    if n == 0 or w.size != n or g.size != n:
        raise ValueError("scores, weak and strong outcomes must be non-empty and of equal length")
    order = np.argsort(-s, kind="stable")
    s_sorted, g_sorted = s[order], g[order]
    # knots only at the ends of tied groups: inside a group the expectation is linear
    ends = np.append(np.nonzero(np.diff(s_sorted))[0] + 1, n)
    cum = np.concatenate(([0.0], np.cumsum(g_sorted)))
    x = np.concatenate(([0.0], ends / n))
    quality = w.mean() + np.concatenate(([0.0], cum[ends])) / n
    return Curve(x=x, quality=quality)


@dataclass(frozen=True)
class TwoModelReport:
    """The replay contract for a weak/strong pair (see the module docstring)."""

    apgr: float | None
    cpt50: float | None
    cpt80: float | None
    strong_share_at_95: float | None
    quality_at_cpt50: float | None
    quality_at_cpt80: float | None
    quality_at_95: float | None
    weak_quality: float
    strong_quality: float
    curve: Curve

    def to_dict(self) -> dict[str, object]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 6)

        return {
            "apgr": r(self.apgr), "cpt50": r(self.cpt50), "cpt80": r(self.cpt80),
            "strong_share_at_95": r(self.strong_share_at_95),
            "quality_at": {"cpt50": r(self.quality_at_cpt50), "cpt80": r(self.quality_at_cpt80),
                           "strong_share_at_95": r(self.quality_at_95)},
            "curve": self.curve.sampled(),
        }


def two_model_report(curve: Curve) -> TwoModelReport:
    """APGR, CPT(50%), CPT(80%) and the share reaching 95% of the strong model's quality."""
    qw, qs = float(curve.quality[0]), float(curve.quality[-1])
    gap = qs - qw
    apgr = cpt50 = cpt80 = None
    if gap > 1e-12:
        apgr = (curve.area() - qw) / gap
        cpt50 = curve.first_reaching(qw + 0.5 * gap)
        cpt80 = curve.first_reaching(qw + 0.8 * gap)
    s95 = curve.first_reaching(0.95 * qs)

    def q(x: float | None) -> float | None:
        return None if x is None else curve.at(x)

    return TwoModelReport(apgr=apgr, cpt50=cpt50, cpt80=cpt80, strong_share_at_95=s95,
                          quality_at_cpt50=q(cpt50), quality_at_cpt80=q(cpt80), quality_at_95=q(s95),
                          weak_quality=qw, strong_quality=qs, curve=curve)


def expected_calibration_error(pred: Sequence[float] | np.ndarray, outcome: Sequence[float] | np.ndarray,
                               bins: int = 10) -> float:
    """ECE: the mean |predicted - observed| over equal-width probability bins, weighted by size."""
    p = np.clip(np.asarray(pred, dtype=float).ravel(), 0.0, 1.0)
    y = np.asarray(outcome, dtype=float).ravel()
    if p.size == 0 or p.size != y.size:
        raise ValueError("predictions and outcomes must be non-empty and of equal length")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return float(total / p.size)


# ----------------------------------------------------------------------------- N models
def utility_choices(pred: np.ndarray, costs: np.ndarray, price_of_quality: float) -> np.ndarray:
    """Per prompt, the model maximising P(acceptable) - cost / price_of_quality (ties: cheaper).

    ``price_of_quality`` is what one unit of quality is worth in cost units: 0 picks the
    cheapest model, infinity the best predicted one. With two models this routes to the
    strong model exactly when its predicted gain P_strong - P_weak exceeds the cost gap over
    ``price_of_quality``, i.e. it ranks prompts by predicted gain. ``costs`` is one cost per
    model, or one per prompt and model (the live value rule, ``router.value``, on each request's
    predicted cost, with ``price_of_quality`` the answer's value).
    """
    if price_of_quality <= 0:
        return np.zeros(pred.shape[0], dtype=int)
    if np.isinf(price_of_quality):
        utility = pred
    else:
        utility = pred - np.broadcast_to(costs, pred.shape) / price_of_quality
    return np.argmax(utility, axis=1)  # first maximum = cheapest, columns sorted by cost


def cost_quality_curve(pred: np.ndarray, outcomes: np.ndarray, costs: Sequence[float] | np.ndarray,
                       steps: int = 241) -> Curve:
    """Quality against normalised mean cost, sweeping :func:`utility_choices` over its price.

    ``pred`` and ``outcomes`` are (prompts, models) with columns in ascending cost. The curve
    is the upper envelope of the operating points (mixing two of them at random reaches any
    point between), from the cheapest model alone (x=0) to the most expensive alone (x=1).
    """
    p = np.asarray(pred, dtype=float)
    y = np.asarray(outcomes, dtype=float)
    c = np.asarray(costs, dtype=float)
    if p.shape != y.shape or p.ndim != 2 or p.shape[1] != c.size or c.size < 2:
        raise ValueError("pred and outcomes must be (prompts, models) with one cost per model, >= 2 models")
    if np.any(np.diff(c) < 0):
        raise ValueError("models must be in ascending cost order")
    span = c[-1] - c[0]
    if span <= 0:
        raise ValueError("the most expensive model must cost more than the cheapest")
    cn = (c - c[0]) / span
    rows = np.arange(p.shape[0])
    prices = np.concatenate(([0.0], np.geomspace(1e-3, 1e4, steps), [np.inf]))
    xs = [0.0, 1.0]
    qs = [float(y[:, 0].mean()), float(y[:, -1].mean())]
    for price in prices:
        choice = utility_choices(p, cn, float(price))
        xs.append(float(cn[choice].mean()))
        qs.append(float(y[rows, choice].mean()))
    return _upper_envelope(np.array(xs), np.array(qs))


def _upper_envelope(x: np.ndarray, q: np.ndarray) -> Curve:
    """Concave upper hull of the points (x, q), made non-decreasing, on x in [0, 1]."""
    order = np.lexsort((-q, x))
    hull: list[tuple[float, float]] = []
    for xi, qi in zip(x[order], q[order]):
        if hull and xi == hull[-1][0]:
            continue  # same x: the first one seen has the highest quality
        while len(hull) >= 2:
            (x1, q1), (x2, q2) = hull[-2], hull[-1]
            if (q2 - q1) * (xi - x1) <= (qi - q1) * (x2 - x1):
                hull.pop()  # the middle point lies on or below the chord
            else:
                break
        hull.append((float(xi), float(qi)))
    hx = np.array([h[0] for h in hull])
    hq = np.maximum.accumulate(np.array([h[1] for h in hull]))
    return Curve(x=hx, quality=hq)


def random_cost_curve(outcomes: np.ndarray) -> Curve:
    """Random mixing of the cheapest and the most expensive model: a straight line."""
    y = np.asarray(outcomes, dtype=float)
    return Curve(x=np.array([0.0, 1.0]), quality=np.array([y[:, 0].mean(), y[:, -1].mean()]))


def normalised_area(curve: Curve, cheapest_quality: float, priciest_quality: float) -> float | None:
    """Area above the cheapest model's quality, over the cheapest-to-priciest gap (random mixing = 0.5)."""
    gap = priciest_quality - cheapest_quality
    if gap <= 1e-12:
        return None
    return (curve.area() - cheapest_quality) / gap


# ----------------------------------------------------------------------------- priced ladders
# The live gateway's two rules on per-prompt prices: each setting (a value, a floor) is one operating
# point (mean actual cost, mean outcome), as one variant of a live ``tiergate eval`` is; no mixing.
# The value rule is :func:`utility_choices` on per-prompt predicted costs.
def floor_choices(pred: np.ndarray, floor: float) -> np.ndarray:
    """Per prompt, the cheapest model predicted to reach ``floor``; none: the best predicted (best effort)."""
    meets = pred >= floor
    return np.where(meets.any(axis=1), np.argmax(meets, axis=1), np.argmax(pred, axis=1))


def operating_points(choices: Sequence[np.ndarray], outcomes: np.ndarray, actual_cost: np.ndarray) -> np.ndarray:
    """(settings, 2): each setting's mean actual cost and mean outcome over the prompts."""
    rows = np.arange(outcomes.shape[0])
    return np.array([[float(actual_cost[rows, c].mean()), float(outcomes[rows, c].mean())] for c in choices])


def cost_share_reaching(points: np.ndarray, quality: float, reference_cost: float) -> float | None:
    """The least cost, over ``reference_cost``, of an operating point reaching ``quality``; None if none does."""
    ok = points[points[:, 1] >= quality - 1e-12]
    if ok.size == 0 or reference_cost <= 0:
        return None
    return float(ok[:, 0].min() / reference_cost)


# ----------------------------------------------------------------------------- cross-validation
def task_fold_index(tasks: Sequence[str] | np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each row's fold in ``0 .. folds - 1``; whole tasks go to one fold, dealt in a seeded shuffle.

    Folds differ in size when tasks do; every fold gets at least one task.
    """
    names, inverse = np.unique(np.asarray(tasks), return_inverse=True)
    if not 2 <= folds <= names.size:
        raise ValueError(f"{folds} folds need between 2 and {names.size} tasks (the data has {names.size})")
    order = np.random.default_rng(seed).permutation(names.size)
    fold_of_task = np.empty(names.size, dtype=int)
    fold_of_task[order] = np.arange(names.size) % folds
    return fold_of_task[inverse]


def spread(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation, min and max of the defined values, and how many there were."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": round(float(v.mean()), 6), "sd": round(sd, 6), "min": round(float(v.min()), 6),
            "max": round(float(v.max()), 6), "n": int(v.size)}
