"""The load-aware latency model."""

from __future__ import annotations

import random

import pytest

from router import LatencyModel, LatencyPrior, ModelCard, ModelLoad, Observation, Price


def card(concurrency=1, replicas=1):
    return ModelCard("m", Price(1, 1), 0.5, 4096, LatencyPrior(ttft_ms=100, tpot_ms=10, prefill_ms_per_token=1.0),
                     concurrency=concurrency, replicas=replicas)


def test_prior_prediction():
    lm = LatencyModel([card()], quantile=0.5)
    est = lm.predict("m", prompt_tokens=50, max_tokens=20)
    # ttft = 100 + 50*1.0 ; e2e = 150 + 20*10, scaled by exp(0) at the median
    assert est.ttft_ms == pytest.approx(150)
    assert est.e2e_ms == pytest.approx(350)


def test_queueing_adds_wait_per_slot():
    lm = LatencyModel([card(concurrency=2)], quantile=0.5)
    idle = lm.predict("m", 10, 10, ModelLoad(in_flight=1)).e2e_ms
    busy = lm.predict("m", 10, 10, ModelLoad(in_flight=4)).e2e_ms
    assert idle == lm.predict("m", 10, 10).e2e_ms  # a free slot: no wait
    assert busy > idle
    assert lm.wait_ms("m", 4) == pytest.approx(1.5 * lm.mean_service_ms("m"))


def test_adapts_to_observations_and_quantile_covers_spread():
    lm = LatencyModel([card()], quantile=0.9, alpha=0.1)
    rng = random.Random(0)
    for _ in range(300):
        ttft = 300 * rng.lognormvariate(0, 0.3)
        tpot = 30 * rng.lognormvariate(0, 0.1)
        lm.observe("m", Observation(prompt_tokens=10, output_tokens=20, ttft_ms=ttft, e2e_ms=ttft + 19 * tpot))
    snap = lm.snapshot()["m"]
    assert 200 < snap["ttft0_ms"] < 450 and 20 < snap["tpot_ms"] < 40
    p90 = lm.predict("m", 10, 20).e2e_ms
    hits = 0
    for _ in range(1000):
        ttft = 300 * rng.lognormvariate(0, 0.3)
        hits += ttft + 19 * 30 * rng.lognormvariate(0, 0.1) <= p90
    assert 0.75 < hits / 1000 < 0.99  # close to the 0.9 quantile asked for


def test_rejects_bad_quantile():
    with pytest.raises(ValueError):
        LatencyModel([card()], quantile=1.0)
