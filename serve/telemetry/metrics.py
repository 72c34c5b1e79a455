"""Prometheus metrics of the gateway, all under the ``tiergate_`` prefix.

One :class:`GatewayMetrics` owns its own ``CollectorRegistry`` (no global registry, so tests
and several apps in one process never collide). It is fed :class:`RequestRecord` objects and
renders the text exposition format.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serve.telemetry.records import RequestRecord
from serve.telemetry.spend import SpendMetrics

PREFIX = "tiergate"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25)


def _ok(value: bool | None) -> str:
    return "met" if value else "missed"


class GatewayMetrics:
    """Request, latency, token, cost and budget metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "Requests answered, by model, route reason and status.",
                                ["endpoint", "requested_model", "model", "route_reason", "status"], registry=r)
        self.errors = Counter(f"{PREFIX}_request_errors", "Requests that ended in an error, by error type.",
                              ["model", "error_type", "status"], registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "Time to first token seen by the gateway.",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram(f"{PREFIX}_time_per_output_token_seconds", "Time per output token after the first.",
                              ["model"], buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram(f"{PREFIX}_e2e_latency_seconds", "End-to-end request latency.",
                             ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter(f"{PREFIX}_tokens", "Tokens processed, by model and kind (prompt, completion).",
                              ["model", "kind"], registry=r)
        self.cost = Counter(f"{PREFIX}_cost_usd", "Cost of answered requests in USD, from the pool's prices.",
                            ["model"], registry=r)
        self.baseline_cost = Counter(f"{PREFIX}_baseline_cost_usd",
                                     "What the same requests would have cost on the most expensive model.",
                                     registry=r)
        self.budget = Counter(f"{PREFIX}_budget", "Budget outcomes per request: budget in latency, quality, "
                              "cost or all; outcome met or missed.", ["model", "budget", "outcome"], registry=r)
        self.decision = Histogram(f"{PREFIX}_routing_decision_seconds", "Time the router took to decide, "
                                  "embedding included.", buckets=DECISION_BUCKETS, registry=r)
        self.predicted_latency = Histogram(f"{PREFIX}_predicted_latency_seconds",
                                           "Latency the router predicted for the chosen model.",
                                           ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge(f"{PREFIX}_requests_in_flight", "Requests being generated or queued now, per model, "
                               "across every ingress replica.",
                               ["model"], registry=r)
        self.model_ready = Gauge(f"{PREFIX}_model_ready", "1 when the model's deployment is healthy.",
                                 ["model"], registry=r)
        self.key_requests = Counter(f"{PREFIX}_key_requests", "Requests per API key name (never the key itself) "
                                    "and status; 429s are quota or admission rejections.", ["key", "status"],
                                    registry=r)
        self.failovers = Counter(f"{PREFIX}_failovers", "Requests moved to another model after a failure "
                                 "before the first token.", ["from_model", "to_model"], registry=r)
        self.circuit_open = Gauge(f"{PREFIX}_circuit_open", "1 while a model's circuit breaker is open or "
                                  "half-open on any ingress replica.", ["model"], registry=r)
        self.store_errors = Counter(f"{PREFIX}_state_store_errors", "Calls to the shared state store that failed "
                                    "(each request then failed closed or open, as configured).", registry=r)
        self.spend = SpendMetrics(r)
        self.finish = Counter(f"{PREFIX}_finish_reason", "Answers by finish reason (stop, length, cancelled, error).",
                              ["model", "finish_reason"], registry=r)

    def observe(self, rec: RequestRecord) -> None:
        model = rec.model or "none"
        self.requests.labels(rec.endpoint, rec.requested_model, model, rec.route_reason, str(rec.status)).inc()
        if rec.key_name:
            self.key_requests.labels(rec.key_name, str(rec.status)).inc()
        if rec.status >= 400:
            self.errors.labels(model, rec.error_type or "error", str(rec.status)).inc()
        for i, failed in enumerate(rec.failovers):
            to = rec.failovers[i + 1] if i + 1 < len(rec.failovers) else model
            self.failovers.labels(failed, to).inc()
        if rec.decision_s is not None:
            self.decision.observe(rec.decision_s)
        self.spend.observe(rec)
        if not rec.model:
            return
        if rec.ttft_s is not None:
            self.ttft.labels(model).observe(rec.ttft_s)
        if rec.e2e_s is not None:
            self.e2e.labels(model).observe(rec.e2e_s)
            if rec.ttft_s is not None and rec.completion_tokens > 1:
                self.tpot.labels(model).observe((rec.e2e_s - rec.ttft_s) / (rec.completion_tokens - 1))
        if rec.predicted_latency_ms is not None:
            self.predicted_latency.labels(model).observe(rec.predicted_latency_ms / 1000)
        self.tokens.labels(model, "prompt").inc(rec.prompt_tokens)
        self.tokens.labels(model, "completion").inc(rec.completion_tokens)
        self.cost.labels(model).inc(rec.cost_usd)
        self.baseline_cost.inc(rec.baseline_cost_usd)
        if rec.finish_reason:
            self.finish.labels(model, rec.finish_reason).inc()
        outcomes = {"latency": rec.budget_latency_met, "quality": rec.budget_quality_met,
                    "cost": rec.budget_cost_met}
        known = [v for v in outcomes.values() if v is not None]
        for name, value in outcomes.items():
            if value is not None:
                self.budget.labels(model, name, _ok(value)).inc()
        if rec.status < 400:
            self.budget.labels(model, "all", _ok(all(known))).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
