"""The overhead benchmark's helpers: a pool with its placement overridden, and gateway CPU net of the engine."""

from __future__ import annotations

from pathlib import Path

from loadtests.bench_gateway_overhead import net_cpu, placed_pool
from serve.config import load_pool

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "loadtests" / "pools" / "overhead-fake.yaml"


def test_placement_is_overridden_in_a_copy_of_the_pool(tmp_path):
    assert load_pool(FAKE).models[0].placement == "ingress"
    copy = placed_pool(str(FAKE), "deployment", tmp_path)
    assert Path(copy).parent == tmp_path and load_pool(copy).models[0].placement == "deployment"
    assert placed_pool(str(FAKE), None, tmp_path) == str(FAKE)


def _result():
    return {"levels": [{"tiers": {"engine": {"process_cpu_ms_per_1k_tokens": 400.0},
                                  "gateway-http": {"gateway_cpu_ms_per_1k_tokens": 650.0}}}]}


def test_an_engine_in_the_ingress_is_taken_out_of_the_gateway_s_cpu():
    result = _result()
    net_cpu(result, "ingress")
    assert result["levels"][0]["tiers"]["gateway-http"]["gateway_net_cpu_ms_per_1k_tokens"] == 250.0


def test_an_engine_in_its_own_deployment_is_not_in_the_gateway_s_cpu():
    result = _result()
    net_cpu(result, "deployment")
    assert result["levels"][0]["tiers"]["gateway-http"]["gateway_net_cpu_ms_per_1k_tokens"] == 650.0
