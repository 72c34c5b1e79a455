"""Spend pacing: a budget the router plans around, not only a wall it hits.

A spend budget of ``budget_usd`` per period is spent at *even pace* when, a fraction
``elapsed`` of the period gone, ``budget_usd * elapsed`` has been spent. A holder (a key, a
team) that has spent more is *ahead of pace* by the difference. While it is ahead, routing
trades the pool's default quality floor for cost: the floor the pool adds to requests that did
not ask for one is lowered in proportion to how far ahead the holder is (dropped entirely at
``full_at`` of the budget ahead), so the router picks cheaper models, while every budget the
request asked for itself (latency, quality, cost) is kept as it is. The decision says so:
reason ``budget_paced`` and an explanation with the figures.

Pure: numbers in, a :class:`Pace` and a :class:`~router.types.Decision` out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from router.policy import Router, merge_budget
from router.types import Budget, Decision, ModelLoad, RouteReason, RouteRequest

DEFAULT_FULL_AT = 0.1  # ahead of pace by a tenth of the budget: the default floor is dropped entirely


@dataclass(frozen=True)
class Pace:
    """Where one holder's spend stands against even pace through its period."""

    holder: str  # who, for explanations only ("key team-a", "team research")
    period: str  # "day", "month"
    spent_usd: float
    budget_usd: float
    elapsed: float  # fraction of the period gone, in [0, 1]
    full_at: float = DEFAULT_FULL_AT

    def __post_init__(self) -> None:
        if not self.budget_usd > 0:
            raise ValueError(f"budget_usd must be > 0, got {self.budget_usd}")
        if not 0.0 <= self.elapsed <= 1.0:
            raise ValueError(f"elapsed must be in [0, 1], got {self.elapsed}")
        if not 0.0 < self.full_at <= 1.0:
            raise ValueError(f"full_at must be in (0, 1], got {self.full_at}")

    @property
    def expected_usd(self) -> float:
        """What even pace would have spent by now."""
        return self.budget_usd * self.elapsed

    @property
    def ahead_usd(self) -> float:
        """Spent beyond even pace (negative: behind it)."""
        return self.spent_usd - self.expected_usd

    @property
    def ahead_fraction(self) -> float:
        """``ahead_usd`` as a fraction of the budget."""
        return self.ahead_usd / self.budget_usd

    @property
    def ahead(self) -> bool:
        return self.ahead_usd > 0

    @property
    def strength(self) -> float:
        """How much of the pool's default floor pacing gives up: 0 at even pace, 1 at ``full_at`` ahead."""
        return min(1.0, max(0.0, self.ahead_fraction / self.full_at))


def pace(holder: str, period: str, spent_usd: float, budget_usd: float, elapsed_s: float, period_s: float,
         full_at: float = DEFAULT_FULL_AT) -> Pace:
    """The pace of ``spent_usd`` against ``budget_usd`` when ``elapsed_s`` of a ``period_s`` period are gone."""
    if not period_s > 0:
        raise ValueError(f"period_s must be > 0, got {period_s}")
    return Pace(holder=holder, period=period, spent_usd=spent_usd, budget_usd=budget_usd,
                elapsed=min(1.0, max(0.0, elapsed_s / period_s)), full_at=full_at)


def furthest_ahead(paces: Iterable[Pace]) -> Pace | None:
    """The pace that most needs pacing (a key's own, or its team's), or None when there is none."""
    return max(paces, key=lambda p: p.ahead_fraction, default=None)


def paced_budget(asked: Budget | None, defaults: Budget, p: Pace | None) -> Budget:
    """The budget to route on: the request's own budgets as asked, the pool's defaults for the
    rest, except that the default quality floor is lowered by ``p.strength`` while ahead of pace."""
    merged = merge_budget(asked, defaults)
    if p is None or not p.ahead or (asked is not None and asked.min_quality is not None):
        return merged
    if defaults.min_quality is None or defaults.min_quality <= 0:
        return merged
    return replace(merged, min_quality=round(defaults.min_quality * (1.0 - p.strength), 6))


def decide_paced(router: Router, req: RouteRequest, asked: Budget | None, defaults: Budget, p: Pace | None,
                 loads: Mapping[str, ModelLoad], quality: Mapping[str, float]) -> tuple[Decision, RouteRequest]:
    """The router's decision for ``req`` (whose budget is ``asked`` merged with ``defaults``), paced by ``p``.

    Returns the decision and the request it was taken on (its budget the paced one, so that a
    failover is judged on the same budget). A request that names its model is not paced. One
    decision is taken (one draw among near-equal models, as unpaced). When the chosen model is
    below the floor pacing lowered, the pacing made the choice: the reason is ``budget_paced`` (a
    best-effort decision keeps its reason) and the explanation gives the pace, the lowered floor
    and the cheapest candidate that would have met every budget with the default floor.
    """
    budget = paced_budget(asked, defaults, p)
    if p is None or req.pinned_model is not None or budget == req.budget:
        return router.decide(req, loads, quality), req
    paced_req = replace(req, budget=budget)
    decision = router.decide(paced_req, loads, quality)
    floor = req.budget.min_quality
    if floor is None or decision.prediction.quality >= floor:
        return decision, paced_req  # the default floor is met too: pacing made no difference here
    unpaced = [c for c in decision.candidates
               if c.fits_latency and c.fits_cost and c.fits_context and c.quality >= floor]
    if unpaced:
        cheapest = min(unpaced, key=lambda c: (c.cost_usd, -c.quality, c.latency_ms, c.model))
        would = f"unpaced: {cheapest.model}"
    else:
        would = "unpaced, no model met every budget with the default floor"
    why = (f"budget_paced: {p.holder} has spent ${p.spent_usd:.6g} of its ${p.budget_usd:.6g} {p.period} "
           f"budget, ${p.ahead_usd:.6g} ({p.ahead_fraction:.1%} of it) ahead of even pace, so the pool's "
           f"default quality floor {floor:g} is lowered to {budget.min_quality:g} (the request's own budgets "
           f"are kept; {would}); {decision.explanation}")
    # a best-effort answer stays flagged as one; the explanation still tells of the pacing
    reason = RouteReason.BUDGET_PACED if decision.reason is RouteReason.CHEAPEST_FEASIBLE else decision.reason
    return replace(decision, reason=reason, explanation=why), paced_req
