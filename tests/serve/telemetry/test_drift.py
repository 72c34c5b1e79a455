"""Drift: traffic like the reference stays under threshold; shifted traffic crosses it."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest
from pydantic import ValidationError

from serve.telemetry.drift import DriftConfig, DriftMonitor, calibrate, calibration_size, method
from serve.telemetry.features import counts_for_drift, row_from_record
from serve.telemetry.reference import Reference
from serve.telemetry.synthetic import TrafficShape, records

WINDOW = 900.0
PER_WINDOW = 300
ALL_METHODS = ("jensen_shannon", "psi", "wasserstein")


def build_reference(n: int = 4000, embed=None) -> Reference:
    rows = [row_from_record(r) for r in records(TrafficShape(), n, seed=1, embed=embed) if counts_for_drift(r)]
    return Reference.build(rows)


@pytest.fixture(scope="module")
def reference() -> Reference:
    return build_reference()


def run_windows(reference, shape, windows, *, seed, embed=None, methods=ALL_METHODS, registry=None):
    """Feed ``windows`` 15-minute windows of ``shape`` traffic; return the scores of each window."""
    config = DriftConfig(methods=methods, windows=({"name": "15m", "seconds": WINDOW},), min_samples=50)
    monitor = DriftMonitor(registry or CollectorRegistry(), reference, config)
    step = WINDOW / PER_WINDOW
    scored = []
    for i, rec in enumerate(records(shape, PER_WINDOW * windows, seed=seed, embed=embed)):
        scored.extend(monitor.observe(rec, 1.0 + i * step))
    scored.extend(monitor.tick(WINDOW * (windows + 1)))
    return monitor, scored


def samples(registry, name):
    text = generate_latest(registry).decode()
    return {tuple(sorted(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name}


def test_reference_round_trip(tmp_path, reference):
    path = tmp_path / "ref.json"
    reference.save(path)
    again = Reference.load(path)
    assert set(again.profiles) == set(reference.profiles)
    for name in reference.profiles:
        if name != "prompt_embedding":
            assert again.proportions(name).tolist() == pytest.approx(reference.proportions(name).tolist())
    # bins: quantile edges plus under/overflow bins, so unseen values still land in a bin
    profile = reference.profiles["prompt_tokens"]
    assert profile.codes([-1.0])[0] == 0 and profile.codes([1e9])[0] == profile.n_bins - 1
    assert reference.proportions("prompt_tokens")[0] == 0 and reference.proportions("prompt_tokens")[-1] == 0


def test_like_the_reference_stays_under_threshold(reference):
    _, scored = run_windows(reference, TrafficShape(), 20, seed=11)
    assert len(scored) == 20 * 16  # 4 numeric x 3 methods + 2 categorical x 2 methods, every window
    above = [s for s in scored if s.drifted]
    # mean + 3 sd of a right-skewed distance: a few per cent of windows per pair, never a pattern
    assert len(above) / len(scored) < 0.04, [(s.feature, s.method, s.score, s.threshold) for s in above]
    per_pair = {}
    for s in above:
        per_pair[(s.feature, s.method)] = per_pair.get((s.feature, s.method), 0) + 1
    assert max(per_pair.values(), default=0) <= 3


def test_longer_prompts_cross_the_threshold(reference):
    registry = CollectorRegistry()
    monitor, scored = run_windows(reference, TrafficShape(prompt_tokens_mean=90), 3, seed=12, registry=registry)
    for method in ALL_METHODS:
        hits = [s for s in scored if s.feature == "prompt_tokens" and s.method == method]
        assert len(hits) == 3 and all(s.drifted for s in hits), hits
    # the untouched features stay mostly calm
    calm = [s for s in scored if s.feature in ("output_tokens", "predicted_quality")]
    assert sum(s.drifted for s in calm) <= 1
    # score and threshold gauges side by side, with the same labels
    score = samples(registry, "tiergate_drift_score")
    threshold = samples(registry, "tiergate_drift_threshold")
    assert set(score) == set(threshold)
    key = (("feature", "prompt_tokens"), ("method", "jensen_shannon"), ("window", "15m"))
    assert score[key] > threshold[key] > 0


def test_other_topics_cross_the_threshold_in_embeddings_and_route_class(minilm):
    reference = build_reference(1500, embed=minilm.embed)
    assert "prompt_embedding" in reference.profiles
    _, calm = run_windows(reference, TrafficShape(), 6, seed=21, embed=minilm.embed, methods=("jensen_shannon",))
    _, shifted = run_windows(reference, TrafficShape(topics=("law", "medicine")), 2, seed=22, embed=minilm.embed,
                             methods=("jensen_shannon",))
    emb_calm = [s for s in calm if s.feature == "prompt_embedding"]
    emb_shifted = [s for s in shifted if s.feature == "prompt_embedding"]
    assert len(emb_calm) == 6 and len(emb_shifted) == 2
    # mean + 3 sd: a calm window may cross now and then (a few per cent), never most of them
    assert sum(s.drifted for s in emb_calm) <= 1, [(s.score, s.threshold) for s in emb_calm]
    assert all(s.drifted for s in emb_shifted)
    assert min(s.score for s in emb_shifted) > 10 * max(s.score for s in emb_calm)
    assert min(s.score for s in emb_shifted) > 5 * max(s.threshold for s in emb_shifted)
    assert all(s.drifted for s in shifted if s.feature == "route_class")
    # the lengths did not move, so their features stay calm
    assert not any(s.drifted for s in shifted if s.feature in ("prompt_tokens", "output_tokens"))


def test_small_windows_are_skipped_and_their_series_removed(reference):
    registry = CollectorRegistry()
    config = DriftConfig(windows=({"name": "15m", "seconds": WINDOW},), min_samples=100)
    monitor = DriftMonitor(registry, reference, config)
    for i, rec in enumerate(records(TrafficShape(), 300, seed=5)):
        monitor.observe(rec, 1.0 + i)
    assert monitor.tick(WINDOW + 1)  # scored
    assert samples(registry, "tiergate_drift_score")
    for i, rec in enumerate(records(TrafficShape(), 20, seed=6)):
        monitor.observe(rec, WINDOW + 2 + i)
    assert monitor.tick(2 * WINDOW + 1) == []
    assert samples(registry, "tiergate_drift_score") == {}
    windows = samples(registry, "tiergate_drift_windows_total")
    assert windows[(("outcome", "scored"), ("window", "15m"))] == 1
    assert windows[(("outcome", "skipped"), ("window", "15m"))] == 1
    assert samples(registry, "tiergate_drift_window_samples")[(("window", "15m"),)] == 20


def test_failed_requests_are_not_traffic(reference):
    config = DriftConfig(windows=({"name": "15m", "seconds": WINDOW},), min_samples=10)
    monitor = DriftMonitor(CollectorRegistry(), reference, config)
    recs = records(TrafficShape(error_rate=0.5), 200, seed=3)
    for i, rec in enumerate(recs):
        monitor.observe(rec, 1.0 + i)
    scored = monitor.tick(WINDOW)
    answered = sum(counts_for_drift(r) for r in recs)
    assert 0 < answered < 200
    assert {s.n for s in scored if s.feature == "prompt_tokens"} == {answered}


def test_thresholds_shrink_with_window_size(reference):
    config = DriftConfig(windows=({"name": "w", "seconds": 60},))
    monitor = DriftMonitor(CollectorRegistry(), reference, config)
    small, large = (calibrate(reference.profiles["prompt_tokens"], method("jensen_shannon"), n,
                              chunks=100, sigmas=3.0, seed=0) for n in (100, 2000))
    assert small > 2 * large > 0
    assert monitor.pairs()[0] == ("prompt_tokens", "jensen_shannon")
    assert calibration_size(12345) == 12000 and calibration_size(99) == 99 and calibration_size(250) == 250


def test_config_names_valid_choices():
    with pytest.raises(ValidationError, match="valid methods: jensen_shannon, psi, wasserstein"):
        DriftConfig(methods=("kl",))
    with pytest.raises(ValidationError, match="valid features"):
        DriftConfig(features=("prompt_text",))
    with pytest.raises(ValidationError, match="extra"):
        DriftConfig(window="15m")
