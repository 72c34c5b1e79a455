"""Where the money went: spend per key, model and route class, savings, and each budget's standing.

Fed two ways: every :class:`RequestRecord` (its true cost and what the most expensive model
would have cost), and, every few seconds, each budget's standing in its period as the ingress
reads it from the shared store (``serve/budgets.py``). Shadow and probe calls are the
operator's spend, counted apart (``tiergate_shadow_cost_usd_total``, ``tiergate_probe_cost_usd_total``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from serve.telemetry.records import RequestRecord

PREFIX = "tiergate"


class SpendMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.spend = Counter(f"{PREFIX}_spend_usd", "True cost of requests charged to API keys (from usage, streams "
                             "and cascades' two calls included), by key, answering model and route class.",
                             ["key", "model", "route_class"], registry=r)
        self.savings = Gauge(f"{PREFIX}_savings_usd", "Running savings against always-largest since the telemetry "
                             "deployment started: what the same requests would have cost on the most expensive "
                             "model minus what they cost, per key (negative when cascades cost more).",
                             ["key"], registry=r)
        self.budget = Gauge(f"{PREFIX}_spend_budget_usd", "A key's or team's spend budget per period (USD).",
                            ["kind", "name", "period"], registry=r)
        self.period = Gauge(f"{PREFIX}_spend_period_usd", "Spent in the current budget period: answered requests "
                            "at their true cost, requests in flight at their maximum cost.",
                            ["kind", "name", "period"], registry=r)
        self.ahead = Gauge(f"{PREFIX}_spend_pace_ahead_ratio", "How far the period's spend runs ahead of even "
                           "pace, as a fraction of the budget (negative: behind); routing is paced while > 0.",
                           ["kind", "name", "period"], registry=r)

    def observe(self, rec: RequestRecord) -> None:
        if not rec.model or not rec.key_name:
            return  # nothing answered, or refused before the key was known
        self.spend.labels(rec.key_name, rec.model, rec.route_class or "none").inc(rec.cost_usd)
        self.savings.labels(rec.key_name).inc(rec.baseline_cost_usd - rec.cost_usd)

    def set_budgets(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Each budget's standing (``serve.budgets.Budgets.snapshot``): the latest report wins."""
        for row in rows:
            labels = (str(row["kind"]), str(row["name"]), str(row["period"]))
            self.budget.labels(*labels).set(float(row["budget_usd"]))
            self.period.labels(*labels).set(float(row["spent_usd"]))
            self.ahead.labels(*labels).set(float(row["ahead_ratio"]))
