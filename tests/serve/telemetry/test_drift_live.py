"""Drift monitoring on the live gateway, from recorded traffic to a drift score over threshold.

1. ``drift-record`` (the real SmolLM2 GGUF, the feature recorder on) answers calm traffic:
   short cooking and coding questions. The recorder writes their anonymised features.
2. ``tiergate reference build`` turns that recording into the reference profile.
3. ``drift`` (same model, drift on with that reference and one short tumbling window) answers
   more calm traffic, drawn like the reference, in one window; then shifted traffic, much longer
   prompts on other topics (law and medicine), in the next window.

On ``/metrics``, ``tiergate_drift_score`` stays at or under ``tiergate_drift_threshold`` for every
feature in the calm window and crosses it for the prompt length in the shifted one.

``DriftConfig`` windows take any length in seconds (aligned to multiples of it since the epoch),
so the test's window is seconds long: six times what its requests took in step 1 (at least 8 s),
so that a phase fits in one window even when this shared machine is loaded; each phase starts
on a fresh window boundary; a phase that does not fit in one window is sent again with the
app redeployed on a window twice as long (the test never asserts how fast the machine is).
"""

from __future__ import annotations

import json
import math
import time

import httpx
import numpy as np
import pytest

from serve.telemetry.synthetic import TrafficShape, prompts
from tests.serve.telemetry.live import SMALL, pool, samples, wait_until

pytestmark = pytest.mark.e2e

MIN_WINDOW_S = 8.0
REFERENCE_REQUESTS = 40
WINDOW_REQUESTS = 10
CALM = TrafficShape(topics=("cooking", "coding"))
SHIFTED = TrafficShape(topics=("law", "medicine"))
BRITTLENESS_OFF = {"enabled": False}


def _calm(n: int, seed: int) -> list[str]:
    return [text for _, text in prompts(CALM, n, np.random.default_rng(seed))]


def _shifted(n: int, seed: int) -> list[str]:
    """Other topics and about ten times the length: each prompt is a dozen questions at once."""
    rng = np.random.default_rng(seed)
    return [" ".join(text for _, text in prompts(SHIFTED, 12, rng)) for _ in range(n)]


def _ask(client: httpx.Client, text: str) -> None:
    r = client.post("/chat/completions", json={"model": SMALL["name"], "temperature": 0, "max_tokens": 4,
                                               "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text


def _lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture(scope="module")
def reference(serve_cluster, tmp_path_factory) -> tuple[str, float]:
    """A reference built by ``tiergate reference build`` from calm traffic the gateway recorded,
    and the window length to test with (from how long that traffic took)."""
    from ray import serve

    from serve.cli import main as tiergate

    work = tmp_path_factory.mktemp("drift")
    recording, ref = work / "calm.jsonl", work / "reference.json"
    cfg = pool("drift-record", [SMALL], {"recorder": {"path": str(recording)}, "brittleness": BRITTLENESS_OFF})
    app = serve_cluster.deploy("drift-record", {"pool_config": cfg}, "/drift-record")
    try:
        started = time.monotonic()
        with httpx.Client(base_url=app.api, timeout=120) as client:
            for text in _calm(REFERENCE_REQUESTS, seed=1):
                _ask(client, text)
        per_request = (time.monotonic() - started) / REFERENCE_REQUESTS

        def recorded() -> bool:
            httpx.get(f"{app.base_url}/metrics", timeout=30)  # flushes the ingress and the recorder
            return _lines(recording) >= REFERENCE_REQUESTS

        wait_until(recorded, 30, "the recorder to write every calm request")
    finally:
        serve.delete("drift-record")
    line = json.loads(recording.read_text().splitlines()[0])
    assert "prompt" not in line and "key_name" not in line  # anonymised: features, no text
    assert tiergate(["reference", "build", "--from", str(recording), "--out", str(ref),
                     "--min-rows", str(REFERENCE_REQUESTS)]) == 0
    return str(ref), max(MIN_WINDOW_S, round(6 * WINDOW_REQUESTS * per_request, 1))


class DriftApp:
    """The ``drift`` app; redeployed with a window twice as long when a phase did not fit in one."""

    def __init__(self, serve_cluster, reference: str, window_s: float) -> None:
        self.cluster, self.reference = serve_cluster, reference
        self.deploy(window_s)

    def deploy(self, window_s: float) -> None:
        monitoring = {"drift": {"reference": self.reference, "windows": [{"name": "test", "seconds": window_s}],
                                "min_samples": WINDOW_REQUESTS // 2},
                      "brittleness": BRITTLENESS_OFF}
        self.app = self.cluster.deploy("drift", {"pool_config": pool("drift", [SMALL], monitoring)}, "/drift")
        self.window_s = window_s


@pytest.fixture(scope="module")
def drift_app(serve_cluster, reference):
    from ray import serve

    path, window_s = reference
    app = DriftApp(serve_cluster, path, window_s)
    try:
        yield app
    finally:
        serve.delete("drift")


def _next_boundary(window_s: float) -> float:
    return (math.floor(time.time() / window_s) + 1) * window_s


def _one_window(drift: DriftApp, texts: list[str]) -> dict[str, tuple[float, float]]:
    """Send ``texts`` inside one window; after it closes, (score, threshold) by feature.

    A phase that did not fit in one window (a loaded machine) is not a failure: the app is
    redeployed with a window twice as long and the phase sent again.
    """
    while True:
        app, window_s = drift.app, drift.window_s
        if time.time() % window_s > 1.0:  # not just after a boundary: wait for the next one
            time.sleep(_next_boundary(window_s) - time.time() + 0.2)
        end = _next_boundary(window_s)
        started = time.monotonic()
        with httpx.Client(base_url=app.api, timeout=120) as client:
            for text in texts:
                _ask(client, text)
        print(f"{len(texts)} requests in {time.monotonic() - started:.1f}s, window {window_s:g}s")
        if time.time() < end - 0.5:  # the ingress flushes records every 0.25 s
            break
        drift.deploy(window_s * 2)
    time.sleep(max(0.0, end - time.time()) + 0.2)

    def closed() -> bool:  # each scrape closes the windows that ended
        return any(labels["window"] == "test" and value >= end
                   for labels, value in samples(app.base_url, "tiergate_drift_window_end_timestamp_seconds"))

    wait_until(closed, 30, "the window to close")
    counted = {s["window"]: v for s, v in samples(app.base_url, "tiergate_drift_window_samples")}
    assert counted["test"] == len(texts), counted
    scores = {s["feature"]: v for s, v in samples(app.base_url, "tiergate_drift_score") if s["window"] == "test"}
    limits = {s["feature"]: v for s, v in samples(app.base_url, "tiergate_drift_threshold") if s["window"] == "test"}
    assert scores.keys() == limits.keys()
    return {f: (scores[f], limits[f]) for f in scores}


def test_shifted_traffic_crosses_the_drift_threshold_and_calm_traffic_does_not(drift_app):
    calm = _one_window(drift_app, _calm(WINDOW_REQUESTS, seed=2))
    shifted = _one_window(drift_app, _shifted(WINDOW_REQUESTS, seed=3))
    print(f"calm window: {calm}\nshifted window: {shifted}")
    assert {"prompt_tokens", "output_tokens", "finish_reason"} <= calm.keys()
    assert all(score <= limit for score, limit in calm.values()), calm
    score, limit = shifted["prompt_tokens"]
    assert score > limit, shifted
