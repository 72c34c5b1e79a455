"""The telemetry deployment: one replica that owns the metrics registry, off the request path.

Ingress replicas send it batches of :class:`RequestRecord`; ``/metrics`` on the ingress asks it
to render. Keeping one registry here makes counters correct whatever the number of ingress
replicas.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from ray import serve

from serve.telemetry.brittleness import Agreement, Perturbation
from serve.telemetry.metrics import GatewayMetrics
from serve.telemetry.monitoring import Monitoring, MonitoringConfig
from serve.telemetry.records import RequestRecord


class TelemetryCollector:
    """Plain-Python core of the telemetry deployment (testable without Ray)."""

    replica_ttl_s = 45.0  # an ingress replica silent this long no longer counts (it re-sends every 15 s)

    def __init__(self, monitoring: dict[str, Any] | None = None) -> None:
        self._replicas: dict[str, tuple[float, dict[str, int], dict[str, bool], int, bool]] = {}
        self.metrics = GatewayMetrics()
        config = MonitoringConfig.model_validate(monitoring or {})
        self.monitoring = Monitoring(self.metrics.registry, config, now=time.time())

    def record(self, records: list[RequestRecord]) -> None:
        now = time.time()
        for rec in records:
            self.metrics.observe(rec)
        self.monitoring.observe_many([replace(r, prompt_text=None) for r in records], now,
                                     [r.prompt_text for r in records])

    # brittleness: the ingress asks before each shadow or probe call and reports after it
    def plan_shadow(self, **kw: Any) -> bool:
        return self.monitoring.brittleness.plan_shadow(**kw, now=time.time())

    def record_shadow(self, **kw: Any) -> Agreement:
        return self.monitoring.record_shadow(**kw)

    def record_shadow_error(self, **kw: Any) -> None:
        self.monitoring.brittleness.record_shadow_error(**kw)

    def plan_probe(self, **kw: Any) -> Perturbation | None:
        return self.monitoring.brittleness.plan_probe(**kw, now=time.time())

    def record_probe(self, **kw: Any) -> Agreement:
        return self.monitoring.brittleness.record_probe(**kw)

    def record_probe_error(self, **kw: Any) -> None:
        self.monitoring.brittleness.record_probe_error(**kw)

    def set_ready(self, ready: dict[str, bool]) -> None:
        for model, ok in ready.items():
            self.metrics.model_ready.labels(model).set(1.0 if ok else 0.0)

    def set_gauges(self, replica: str, *, in_flight: dict[str, int], circuit_open: dict[str, bool],
                   store_errors: int = 0, shared: bool = True) -> None:
        """One ingress replica's gauges, combined with the other live replicas' ones.

        In-flight counts from a shared store are every replica's view of one truth (the largest,
        the freshest, is shown); from per-replica stores they add up. A circuit counts as open
        while it is open on any replica. Store errors are each replica's running total.
        """
        now = time.monotonic()
        last = self._replicas.get(replica)
        errors_before = last[3] if last else 0
        self.metrics.store_errors.inc(store_errors - errors_before if store_errors >= errors_before else store_errors)
        self._replicas[replica] = (now, in_flight, circuit_open, store_errors, shared)
        live = [v for k, v in self._replicas.items() if now - v[0] <= self.replica_ttl_s]
        self._replicas = {k: v for k, v in self._replicas.items() if now - v[0] <= self.replica_ttl_s}
        for model in in_flight:
            counts = [v[1].get(model, 0) for v in live]
            self.metrics.in_flight.labels(model).set(max(counts) if shared else sum(counts))
        for model in circuit_open:
            self.metrics.circuit_open.labels(model).set(1.0 if any(v[2].get(model) for v in live) else 0.0)

    def set_spend(self, rows: list[dict[str, Any]]) -> None:
        """Each spend budget's standing, as an ingress replica read it from the shared store."""
        self.metrics.spend.set_budgets(rows)

    def render(self) -> bytes:
        self.monitoring.tick(time.time())
        return self.metrics.render()


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class Telemetry(TelemetryCollector):
    pass
