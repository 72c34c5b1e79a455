"""``placement: ingress`` end to end through Ray Serve: the real smollm2 and the fake engine run inside
the ingress replica (no model deployment), answer streams and full responses, and report their load."""

from __future__ import annotations

import httpx
import openai
import pytest
import yaml

from tests.conftest import CPU_POOL

pytestmark = pytest.mark.e2e

SMOLLM2 = yaml.safe_load(CPU_POOL.read_text())["models"][0]
FAKE = {"name": "fake-local", "engine": "fake", "quantization": "none", "context_length": 4096,
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}, "prior_quality": 0.3,
        "latency_prior": {"ttft_ms": 5, "tpot_ms": 1}, "resources": {"num_cpus": 0}, "placement": "ingress",
        "engine_args": {"reply": "alpha beta gamma delta", "ttft_ms": 1, "tpot_ms": 1}}
APP = "placed-in-ingress"
Q = [{"role": "user", "content": "Name one primary colour."}]


@pytest.fixture(scope="module")
def placed(serve_cluster):
    pool = {"name": "placed", "auth": {"enabled": False},
            "models": [{**SMOLLM2, "placement": "ingress"}, FAKE]}
    return serve_cluster.deploy(APP, {"pool_config": pool}, "/placed")


@pytest.fixture(scope="module")
def client(placed):
    with openai.OpenAI(base_url=placed.api, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def test_no_model_deployment_only_the_ingress_and_telemetry(placed):
    from ray import serve

    deployments = serve.status().applications[APP].deployments
    assert set(deployments) == {"ingress", "telemetry"}


def test_smollm2_in_the_ingress_streams_and_reports_its_load(placed, client):
    name = SMOLLM2["name"]
    stream = client.chat.completions.create(model=name, messages=Q, max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert {c.model for c in chunks} == {name}
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 8
    load = httpx.get(f"{placed.api}/tiergate/load", timeout=10).json()["models"][name]
    assert load["healthy"] and load["report_age_s"] is not None  # the engine's meter reports in-process
    assert load["ttft_ms"] is not None and load["ttft_ms"] > 0


def test_the_fake_engine_in_the_ingress_answers_in_full(placed, client):
    resp = client.chat.completions.create(model="fake-local", messages=Q, max_tokens=16)
    assert resp.model == "fake-local" and resp.choices[0].message.content == "alpha beta gamma delta"
    assert resp.usage.completion_tokens == 4


def test_health_lists_both_local_models_ready(placed):
    health = httpx.get(f"{placed.base_url}/health", timeout=10).json()
    assert health["status"] == "ready"
    assert set(health["models"]) == {SMOLLM2["name"], "fake-local"}
