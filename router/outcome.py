"""Judging a finished request against its budgets: pure, after the fact."""

from __future__ import annotations

from dataclasses import dataclass

from router.types import Budget, Prediction


@dataclass(frozen=True)
class BudgetOutcome:
    """Per budget: met (True), missed (False), or not asked for (None)."""

    latency: bool | None = None
    quality: bool | None = None
    cost: bool | None = None

    @property
    def met(self) -> bool:
        return self.latency is not False and self.quality is not False and self.cost is not False


def judge_budget(budget: Budget, prediction: Prediction, e2e_ms: float | None, cost_usd: float) -> BudgetOutcome:
    """Latency and cost as measured; quality as predicted for the model that answered."""
    return BudgetOutcome(
        latency=None if budget.max_latency_ms is None or e2e_ms is None else e2e_ms <= budget.max_latency_ms,
        quality=None if budget.min_quality is None else prediction.quality >= budget.min_quality,
        cost=None if budget.max_cost_usd is None else cost_usd <= budget.max_cost_usd,
    )
