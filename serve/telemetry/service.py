"""The telemetry deployment: one replica that owns the metrics registry, off the request path.

Ingress replicas send it batches of :class:`RequestRecord`; ``/metrics`` on the ingress asks it
to render. Keeping one registry here makes counters correct whatever the number of ingress
replicas.
"""

from __future__ import annotations

from ray import serve

from serve.telemetry.metrics import GatewayMetrics
from serve.telemetry.records import RequestRecord


class TelemetryCollector:
    """Plain-Python core of the telemetry deployment (testable without Ray)."""

    def __init__(self) -> None:
        self.metrics = GatewayMetrics()

    def record(self, records: list[RequestRecord]) -> None:
        for rec in records:
            self.metrics.observe(rec)

    def set_ready(self, ready: dict[str, bool]) -> None:
        for model, ok in ready.items():
            self.metrics.model_ready.labels(model).set(1.0 if ok else 0.0)

    def set_gauges(self, in_flight: dict[str, int], circuit_open: dict[str, bool]) -> None:
        for model, n in in_flight.items():
            self.metrics.in_flight.labels(model).set(n)
        for model, is_open in circuit_open.items():
            self.metrics.circuit_open.labels(model).set(1.0 if is_open else 0.0)

    def render(self) -> bytes:
        return self.metrics.render()


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class Telemetry(TelemetryCollector):
    pass
