"""Monitoring embeds prompt texts handed to it, for embedding drift and for the recording."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from serve.telemetry.drift import DriftConfig, DriftWindowConfig
from serve.telemetry.features import counts_for_drift, row_from_record
from serve.telemetry.monitoring import Monitoring, MonitoringConfig
from serve.telemetry.recorder import RecorderConfig
from serve.telemetry.reference import Reference
from serve.telemetry.synthetic import TrafficShape, prompts, records

CALM = TrafficShape(topics=("cooking", "coding"))
SHIFTED = TrafficShape(topics=("law", "medicine"))
WINDOW = DriftWindowConfig(name="1m", seconds=60)


def _traffic(shape: TrafficShape, n: int, seed: int) -> tuple[list, list[str]]:
    """Records without embeddings, and the prompt texts they were drawn with."""
    texts = [t for _, t in prompts(shape, n, np.random.default_rng(seed))]
    recs = [replace(r, prompt_embedding=()) for r in records(shape, n, seed=seed)]
    return recs, texts


def _embedding_score(registry: CollectorRegistry) -> tuple[float | None, float | None]:
    labels = {"feature": "prompt_embedding", "method": "cosine", "window": "1m"}
    return (registry.get_sample_value("tiergate_drift_score", labels),
            registry.get_sample_value("tiergate_drift_threshold", labels))


@pytest.fixture(scope="module")
def reference(minilm) -> Reference:
    return Reference.build([row_from_record(r) for r in records(CALM, 300, seed=1, embed=minilm.embed)
                            if counts_for_drift(r)])


def _monitoring(reference: Reference, minilm, **kw) -> tuple[Monitoring, CollectorRegistry]:
    registry = CollectorRegistry()
    config = MonitoringConfig(drift=DriftConfig(windows=(WINDOW,), min_samples=20, calibration_chunks=50),
                              brittleness={"enabled": False}, **kw)
    return Monitoring(registry, config, embedder=minilm, reference=reference), registry


def test_prompt_texts_feed_embedding_drift(reference, minilm):
    calm, registry = _monitoring(reference, minilm)
    assert calm.embeds_prompts
    recs, texts = _traffic(CALM, 60, seed=2)
    calm.observe_many(recs, 0.0, texts)
    calm.tick(60.0)
    calm_score, calm_limit = _embedding_score(registry)
    shifted, registry = _monitoring(reference, minilm)
    recs, texts = _traffic(SHIFTED, 60, seed=3)
    shifted.observe_many(recs, 0.0, texts)
    shifted.tick(60.0)
    shifted_score, shifted_limit = _embedding_score(registry)
    assert calm_score is not None and shifted_score is not None
    assert shifted_limit == pytest.approx(calm_limit)  # same window size, same calibration
    assert calm_score <= calm_limit < shifted_score, (calm_score, calm_limit, shifted_score)


def test_without_texts_there_is_no_embedding_score(reference, minilm):
    monitoring, registry = _monitoring(reference, minilm)
    recs, texts = _traffic(CALM, 60, seed=2)
    monitoring.observe_many(recs, 0.0)
    monitoring.tick(60.0)
    assert _embedding_score(registry) == (None, None)
    assert registry.get_sample_value("tiergate_drift_score", {"feature": "prompt_tokens", "method": "jensen_shannon",
                                                              "window": "1m"}) is not None
    with pytest.raises(ValueError, match="prompt texts"):
        monitoring.observe_many(recs, 0.0, texts[:-1])


def test_the_recording_gets_embeddings_and_never_the_text(tmp_path, minilm):
    path = tmp_path / "traffic.jsonl"
    monitoring = Monitoring(CollectorRegistry(), MonitoringConfig(recorder=RecorderConfig(path=str(path)),
                                                                  brittleness={"enabled": False}), embedder=minilm)
    assert monitoring.embeds_prompts and monitoring.drift is None
    recs, texts = _traffic(CALM, 5, seed=4)
    monitoring.observe_many(recs, 0.0, texts)
    monitoring.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    answered = [x for x in lines if x["status"] < 400]
    assert answered and all(len(x["prompt_embedding"]) == 384 for x in answered)
    assert all("prompt" not in x for x in lines) and not any(t in path.read_text() for t in texts)
