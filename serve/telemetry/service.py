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

    def __init__(self, monitoring: dict[str, Any] | None = None) -> None:
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
        return self.monitoring.brittleness.record_shadow(**kw)

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

    def set_gauges(self, in_flight: dict[str, int], circuit_open: dict[str, bool]) -> None:
        for model, n in in_flight.items():
            self.metrics.in_flight.labels(model).set(n)
        for model, is_open in circuit_open.items():
            self.metrics.circuit_open.labels(model).set(1.0 if is_open else 0.0)

    def render(self) -> bytes:
        self.monitoring.tick(time.time())
        return self.metrics.render()


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class Telemetry(TelemetryCollector):
    pass
