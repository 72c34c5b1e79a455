"""A scrape target serving real tiergate metrics fed by generated traffic.

It serves ``GatewayMetrics`` plus drift and brittleness metrics (the real classes, one shared
registry, as the telemetry deployment will) at ``/metrics``. A thread keeps feeding synthetic
RequestRecords on a simulated clock running 400x faster than real time, so 15-minute drift
windows close every ~2 s; shadow and probe results are fed through the BrittlenessMonitor.
"""

from __future__ import annotations

import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from serve.telemetry.brittleness import BrittlenessConfig
from serve.telemetry.drift import DriftConfig
from serve.telemetry.embedder import HashingEmbedder
from serve.telemetry.features import counts_for_drift, row_from_record
from serve.telemetry.metrics import GatewayMetrics
from serve.telemetry.monitoring import Monitoring, MonitoringConfig
from serve.telemetry.reference import Reference
from serve.telemetry.sampling import SamplerConfig
from serve.telemetry.synthetic import TrafficShape, records

MODELS = ("small", "large")
SPEEDUP = 400.0
OPEN = SamplerConfig(rate=1.0, max_per_minute=1e6, burst=1000, max_cost_usd_per_hour=None, max_in_flight=1000)


class SyntheticGateway:
    def __init__(self) -> None:
        embed = HashingEmbedder().embed
        shape = TrafficShape(models=MODELS)
        reference = Reference.build([row_from_record(r) for r in records(shape, 1500, seed=1, embed=embed)
                                     if counts_for_drift(r)])
        self.metrics = GatewayMetrics()
        config = MonitoringConfig(drift=DriftConfig(min_samples=20, methods=("jensen_shannon", "psi", "wasserstein"),
                                                              calibration_chunks=50),
                                  brittleness=BrittlenessConfig(shadow=OPEN, probe=OPEN))
        self.monitoring = Monitoring(self.metrics.registry, config, embedder=HashingEmbedder(), reference=reference)
        self._traffic = records(TrafficShape(models=MODELS, prompt_tokens_mean=45), 20_000, seed=2, embed=embed)
        self._rng = random.Random(3)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._i = 0
        self._spent: dict[str, float] = {}
        self.sim_now = 0.0
        for model in MODELS:
            self.metrics.model_ready.labels(model).set(1)
            self.metrics.in_flight.labels(model).set(0)
            self.metrics.circuit_open.labels(model).set(0)

    def step(self) -> None:
        with self._lock:
            rec = self._traffic[self._i % len(self._traffic)]
            self._i += 1
            self.sim_now += 0.05 * SPEEDUP
            self.metrics.observe(rec)
            self._spent[rec.key_name] = self._spent.get(rec.key_name, 0.0) + rec.cost_usd
            self.metrics.spend.set_budgets([  # each key's budget standing, as the ingress reports it
                {"kind": "key", "name": k, "period": "day", "budget_usd": 0.05, "spent_usd": v,
                 "ahead_ratio": v / 0.05 - 0.5} for k, v in self._spent.items()])
            self.monitoring.observe(rec, self.sim_now)
            self.monitoring.tick(self.sim_now)
            if not rec.model:
                return
            b = self.monitoring.brittleness
            small = rec.model == MODELS[0]
            if b.plan_shadow(model=rec.model, route_class=rec.route_class, shadow_model=MODELS[1],
                             est_cost_usd=0.0, now=self.sim_now):
                agree = self._rng.random() < 0.8
                b.record_shadow(model=rec.model, route_class=rec.route_class, predicted_quality=rec.predicted_quality,
                                answer="Paris", shadow_answer="Paris" if agree else "Lyon", shadow_model=MODELS[1],
                                cost_usd=rec.baseline_cost_usd)
            probe = b.plan_probe(model=rec.model, prompt="What is the capital of France?", est_cost_usd=0.0,
                                 now=self.sim_now)
            if probe is not None:
                flip = self._rng.random() < (0.2 if small else 0.05)
                b.record_probe(model=rec.model, perturbation=probe.name, answer="Paris",
                               probe_answer="Lyon" if flip else "paris", cost_usd=rec.cost_usd)

    def render(self) -> bytes:
        with self._lock:
            self.monitoring.tick(self.sim_now)
            return self.metrics.render()

    def run(self) -> None:
        while not self._stop.wait(0.05):
            self.step()

    def stop(self) -> None:
        self._stop.set()


def serve(gateway: SyntheticGateway) -> tuple[ThreadingHTTPServer, list[threading.Thread]]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's spelling
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = gateway.render()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except BrokenPipeError:  # the scraper gave up (scrape timeout); it retries next interval
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threads = [threading.Thread(target=server.serve_forever, daemon=True),
               threading.Thread(target=gateway.run, daemon=True)]
    for t in threads:
        t.start()
    return server, threads
