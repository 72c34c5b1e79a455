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

from router import spread
from router.policy import Router, merge_budget
from router.types import Budget, Decision, ModelLoad, Prediction, RouteReason, RouteRequest
from router.value import by_value

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
    rest, except that while ahead of pace the default quality floor and the default value of an
    acceptable answer are lowered by ``p.strength`` (the value is dropped at full strength, which
    leaves the cheapest model that meets every other budget)."""
    merged = merge_budget(asked, defaults)
    if p is None or not p.ahead:
        return merged
    keep = 1.0 - p.strength
    if (asked is None or asked.min_quality is None) and defaults.min_quality is not None and defaults.min_quality > 0:
        merged = replace(merged, min_quality=round(defaults.min_quality * keep, 6))
    if (asked is None or asked.answer_value_usd is None) and defaults.answer_value_usd is not None:
        merged = replace(merged, answer_value_usd=defaults.answer_value_usd * keep if keep > 0 else None)
    return merged


def decide_paced(router: Router, req: RouteRequest, asked: Budget | None, defaults: Budget, p: Pace | None,
                 loads: Mapping[str, ModelLoad], quality: Mapping[str, float]) -> tuple[Decision, RouteRequest]:
    """The router's decision for ``req`` (whose budget is ``asked`` merged with ``defaults``), paced by ``p``.

    Returns the decision and the request it was taken on (its budget the paced one, so that a
    failover is judged on the same budget). A request that names its model is not paced. One
    decision is taken (one draw among near-equal models, as unpaced). When the chosen model is
    below the floor pacing lowered, or is not the one the pool's default answer value would have
    chosen, the pacing made the choice: the reason is ``budget_paced`` (a best-effort decision keeps
    its reason) and the explanation gives the pace, what was lowered and the candidate the
    defaults would have chosen.
    """
    budget = paced_budget(asked, defaults, p)
    if p is None or req.pinned_model is not None or budget == req.budget:
        return router.decide(req, loads, quality), req
    paced_req = replace(req, budget=budget)
    decision = router.decide(paced_req, loads, quality)
    unpaced = _unpaced_choice(decision.candidates, req.budget)
    floor, worth = req.budget.min_quality, req.budget.answer_value_usd
    below_floor = floor is not None and decision.prediction.quality < floor
    if not below_floor and (worth is None or (unpaced is not None and unpaced.model == decision.model)):
        return decision, paced_req  # the default budget would have chosen the same: pacing made no difference
    defaults_named = "default floor" if worth is None else "pool's defaults"
    would = (f"unpaced: {unpaced.model}" if unpaced is not None
             else f"unpaced, no model met every budget with the {defaults_named}")
    lowered = []
    if budget.min_quality != floor:
        lowered.append(f"the pool's default quality floor {floor:g} is lowered to {budget.min_quality:g}")
    if budget.answer_value_usd != worth:
        to = "dropped" if budget.answer_value_usd is None else f"lowered to ${budget.answer_value_usd:.3g}"
        lowered.append(f"the pool's default value of an acceptable answer ${worth:.3g} is {to}")
    why = (f"budget_paced: {p.holder} has spent ${p.spent_usd:.6g} of its ${p.budget_usd:.6g} {p.period} "
           f"budget, ${p.ahead_usd:.6g} ({p.ahead_fraction:.1%} of it) ahead of even pace, so "
           f"{' and '.join(lowered)} (the request's own budgets are kept; {would}); {decision.explanation}")
    # a best-effort answer stays flagged as one; the explanation still tells of the pacing
    paced = decision.reason in (RouteReason.CHEAPEST_FEASIBLE, RouteReason.BEST_VALUE)
    reason = RouteReason.BUDGET_PACED if paced else decision.reason
    return replace(decision, reason=reason, explanation=why), paced_req


def _unpaced_choice(candidates: Iterable[Prediction], budget: Budget) -> Prediction | None:
    """The candidate the unpaced ``budget`` would have chosen (its quality floor re-checked; the
    other budgets are the same paced or not), or None when none meets it."""
    fits = [c for c in candidates if c.fits_latency and c.fits_cost and c.fits_context
            and (budget.min_quality is None or c.quality >= budget.min_quality)]
    if not fits:
        return None
    if budget.answer_value_usd is not None:
        return by_value(fits, budget.answer_value_usd)[0]
    return spread.near_equal(fits, 0.0)[0]  # the cheapest, ranked as the router ranks them
