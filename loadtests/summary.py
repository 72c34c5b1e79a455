"""Figures from a run: latency percentiles, throughput, goodput, budgets met (quality on scored
answers), accuracy against gold, cost, budget-met requests per USD, routing mix."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from loadtests.client import RequestResult
from loadtests.runner import Run

QUANTILES = (50, 90, 99)


def percentile(values: Iterable[float | None], q: float) -> float:
    """The ``q``-th percentile (0-100) of the non-missing values, linearly interpolated; NaN for none.
    The one percentile of ``loadtests/``: every benchmark and report reads its tails with it."""
    xs = np.array([v for v in values if v is not None], dtype=float)
    return float(np.percentile(xs, q)) if xs.size else float("nan")


def percentiles(values: Iterable[float | None], scale: float = 1000.0) -> dict[str, float | None]:
    """p50/p90/p99 of the non-missing values (seconds in, milliseconds out by default)."""
    xs = [v * scale for v in values if v is not None]
    if not xs:
        return {f"p{q}": None for q in QUANTILES}
    return {f"p{q}": round(percentile(xs, q), 2) for q in QUANTILES}


def _rate(flags: Sequence[bool | None]) -> float | None:
    judged = [f for f in flags if f is not None]
    return round(sum(judged) / len(judged), 4) if judged else None


def _mix(results: Sequence[RequestResult]) -> dict[str, int]:
    return dict(sorted(Counter(r.model for r in results if r.outcome == "ok").items()))


def accuracy(results: Sequence[RequestResult]) -> dict[str, Any]:
    """Answers scored against gold among requests of labelled classes. ``accuracy`` counts a request
    without an answer (refused, failed, lost, timed out) as wrong; ``accuracy_answered`` only counts
    answered ones. None where no request was labelled (or none was answered)."""
    scored = [r for r in results if r.item_id]
    answered = [r for r in scored if r.score is not None]
    correct = sum(r.score == 1.0 for r in answered)
    return {"scored_requests": len(scored), "correct": correct,
            "accuracy": round(correct / len(scored), 4) if scored else None,
            "accuracy_answered": round(correct / len(answered), 4) if answered else None}


def met_per_usd(met: int, cost_usd: float) -> float | None:
    """Requests meeting every budget per USD of the whole run's spend (missed requests are paid for too)."""
    return round(met / cost_usd, 1) if cost_usd > 0 else None


def summarize(run: Run, floors: Mapping[str, float | None] | None = None) -> dict[str, Any]:
    """A run's figures; ``floors`` (class -> min_quality) adds each class's floor verdict."""
    floors = floors or {}
    rs = run.results
    n = len(rs)
    ok = [r for r in rs if r.outcome == "ok"]
    met = [r for r in rs if r.budget_met]
    wall = max(run.wall_s, 1e-9)
    cost = sum(r.cost_usd for r in rs)
    gw_cost = [r for r in ok if r.gateway_cost_usd is not None]
    out: dict[str, Any] = {
        "policy": run.policy, "mode": run.mode, "level": run.level, "requests": n,
        "wall_s": round(wall, 2),
        "outcomes": dict(sorted(Counter(r.outcome for r in rs).items())),
        "ttft_ms": percentiles(r.ttft_s for r in ok),
        "tpot_ms": percentiles(r.tpot_s for r in ok),
        "e2e_ms": percentiles(r.e2e_s for r in ok),
        "requests_per_s": round(len(ok) / wall, 3),
        "output_tokens_per_s": round(sum(r.completion_tokens for r in ok) / wall, 2),
        "goodput_rps": round(len(met) / wall, 3),
        "budget_met_rate": round(len(met) / n, 4) if n else None,
        "latency_met_rate": _rate([r.latency_met if r.outcome == "ok" else False for r in rs]),
        "quality_met_rate": _rate([r.quality_met if r.outcome == "ok" else False for r in rs]),
        "cost_met_rate": _rate([r.cost_met if r.outcome == "ok" else False for r in rs]),
        "cost_usd": cost,
        "cost_per_1k_requests_usd": cost / n * 1000 if n else None,
        "cost_per_1k_budget_met_usd": cost / len(met) * 1000 if met else None,
        "budget_met_per_usd": met_per_usd(len(met), cost),
        "budget_met_per_1k_requests": round(len(met) / n * 1000, 1) if n else None,
        **accuracy(rs),
        "routing_mix": _mix(rs),
        "gateway_cost_agrees": (sum(abs(r.gateway_cost_usd - r.cost_usd) <= 1e-12 + 1e-9 * r.cost_usd
                                    for r in gw_cost) / len(gw_cost)) if gw_cost else None,
        "per_class": {},
    }
    for klass in sorted({r.klass for r in rs}):
        out["per_class"][klass] = per_class([r for r in rs if r.klass == klass], floors.get(klass))
    return out


def per_class(sub: Sequence[RequestResult], floor: float | None) -> dict[str, Any]:
    """One class's figures; with a quality floor, whether its measured accuracy reached it."""
    sub_ok = [r for r in sub if r.outcome == "ok"]
    acc = accuracy(sub)
    predicted = [r.predicted_quality for r in sub_ok if r.predicted_quality is not None]
    return {
        "requests": len(sub),
        "budget_met_rate": round(sum(r.budget_met for r in sub) / len(sub), 4),
        "e2e_ms": percentiles(r.e2e_s for r in sub_ok),
        "routing_mix": _mix(sub),
        "cost_per_1k_requests_usd": sum(r.cost_usd for r in sub) / len(sub) * 1000,
        **acc,
        "min_quality": floor,
        "floor_met": None if floor is None or acc["accuracy"] is None else acc["accuracy"] >= floor,
        "predicted_quality_mean": round(sum(predicted) / len(predicted), 4) if predicted else None,
    }


def problems(results: Iterable[RequestResult]) -> list[str]:
    """Requests that were lost, timed out or failed without a cause, one line each."""
    return [f"#{r.index} {r.klass} {r.requested_model}: {r.outcome} (HTTP {r.status}) {r.error}"
            for r in results if r.outcome in ("failed", "lost", "timeout")]
