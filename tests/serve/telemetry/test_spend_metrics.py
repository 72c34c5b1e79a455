"""Spend metrics (serve/telemetry/spend.py) on the real prometheus_client registry."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from serve.telemetry.metrics import GatewayMetrics
from serve.telemetry.records import RequestRecord


def samples(m: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def rec(key: str, model: str, cost: float, baseline: float, route_class: str = "default", status: int = 200):
    return RequestRecord(endpoint="chat", requested_model="auto", model=model, route_reason="cheapest_feasible",
                         status=status, key_name=key, route_class=route_class, cost_usd=cost,
                         baseline_cost_usd=baseline)


def test_spend_per_key_model_and_route_class_and_running_savings():
    m = GatewayMetrics()
    m.observe(rec("alice", "small", 0.25, 1.0))
    m.observe(rec("alice", "small", 0.5, 2.0, route_class="quality"))
    m.observe(rec("alice", "big", 1.25, 1.0))  # a cascade: cheap call plus the big one, more than big alone
    m.observe(rec("bob", "small", 0.125, 0.5))
    m.observe(rec("carol", "", 0.0, 0.0, status=429))  # refused: no spend series
    m.observe(rec("", "small", 0.5, 0.5))  # no key known: not attributed
    s = samples(m)
    spend = "tiergate_spend_usd_total"
    assert s[(spend, (("key", "alice"), ("model", "small"), ("route_class", "default")))] == 0.25
    assert s[(spend, (("key", "alice"), ("model", "small"), ("route_class", "quality")))] == 0.5
    assert s[(spend, (("key", "alice"), ("model", "big"), ("route_class", "default")))] == 1.25
    assert not any(name == spend and dict(labels).get("key") in ("carol", "") for name, labels in s)
    assert s[("tiergate_savings_usd", (("key", "alice"),))] == 0.75 + 1.5 - 0.25
    assert s[("tiergate_savings_usd", (("key", "bob"),))] == 0.375


def test_budget_standing_gauges_take_the_latest_report():
    m = GatewayMetrics()
    row = {"kind": "team", "name": "research", "period": "month", "budget_usd": 50.0, "spent_usd": 10.0,
           "ahead_ratio": -0.05}
    m.spend.set_budgets([row])
    m.spend.set_budgets([{**row, "spent_usd": 20.0, "ahead_ratio": 0.15}])
    s = samples(m)
    labels = (("kind", "team"), ("name", "research"), ("period", "month"))
    assert s[("tiergate_spend_budget_usd", labels)] == 50.0
    assert s[("tiergate_spend_period_usd", labels)] == 20.0
    assert s[("tiergate_spend_pace_ahead_ratio", labels)] == 0.15
