"""The vLLM engine's configuration side, which needs no vLLM: argument validation, the mapping
to vLLM's engine arguments, the quantization check, and that importing the module leaves vLLM
unimported (the CPU install never has it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from router.errors import EngineError
from serve.config import ModelConfig
from serve.engines import engine_class
from serve.engines.vllm import LiveStats, VllmArgs, VllmEngine, check_quantization


def model(**over) -> ModelConfig:
    data = {
        "name": "qwen-small", "engine": "vllm", "weights": {"path": "/models/qwen"}, "quantization": "AWQ",
        "context_length": 4096, "price": {"input_per_mtok": 0.05, "output_per_mtok": 0.1}, "prior_quality": 0.4,
        "latency_prior": {"ttft_ms": 40, "tpot_ms": 8}, "concurrency": 24,
    }
    data.update(over)
    return ModelConfig.model_validate(data)


def test_registry_resolves_vllm_without_importing_vllm():
    code = ("import sys; from serve.engines import engine_class; cls = engine_class('vllm'); "
            "print(cls.__name__, 'vllm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["VllmEngine", "False"]
    assert engine_class("vllm") is VllmEngine


def test_args_reject_unknown_keys_and_are_frozen():
    with pytest.raises(ValidationError, match="gpu_memory_utilisation"):
        VllmArgs.model_validate({"gpu_memory_utilisation": 0.8})
    with pytest.raises(ValidationError):
        VllmArgs.model_validate({"gpu_memory_utilization": 1.5})
    with pytest.raises(ValidationError):
        VllmArgs.model_validate({"dtype": "float8"})
    args = VllmArgs()
    with pytest.raises(ValidationError):
        args.seed = 3


def test_engine_args_come_from_the_pool_config(tmp_path):
    args = VllmArgs.model_validate({"gpu_memory_utilization": 0.85, "tensor_parallel_size": 2,
                                    "distributed_executor_backend": "mp", "enable_prefix_caching": True,
                                    "kv_cache_memory_gb": 0.5, "dtype": "float16"})
    kw = VllmEngine(model(), args).engine_args(tmp_path)
    assert kw["model"] == str(tmp_path) and kw["served_model_name"] == ["qwen-small"]
    assert kw["max_model_len"] == 4096
    assert kw["max_num_seqs"] == 24  # the model's concurrency when not set
    assert kw["gpu_memory_utilization"] == 0.85 and kw["tensor_parallel_size"] == 2
    assert kw["distributed_executor_backend"] == "mp" and kw["enable_prefix_caching"] is True
    assert kw["kv_cache_memory_bytes"] == 512 * 1024**2
    assert kw["dtype"] == "float16" and kw["quantization"] is None
    plain = VllmEngine(model(), VllmArgs(max_num_seqs=7)).engine_args(tmp_path)
    assert plain["max_num_seqs"] == 7
    assert "kv_cache_memory_bytes" not in plain and "enable_prefix_caching" not in plain


def test_quantization_label_must_match_the_checkpoint():
    check_quantization("AWQ", "awq_marlin")
    check_quantization("gptq", "gptq_marlin")
    check_quantization("W8A8", "compressed-tensors")
    check_quantization("F32", None)
    check_quantization("Q4_K_M", "anything")  # labels it does not know are not checked
    with pytest.raises(EngineError, match="'AWQ'.*None"):
        check_quantization("AWQ", None)
    with pytest.raises(EngineError, match="'BF16'.*'fp8'"):
        check_quantization("BF16", "fp8")


class _Sched:
    def __init__(self, running, waiting, kv):
        self.num_running_reqs, self.num_waiting_reqs, self.num_skipped_waiting_reqs = running, waiting, 1
        self.kv_cache_usage = kv


class _Done:
    def __init__(self, n, tpot):
        self.num_generation_tokens, self.mean_time_per_output_token = n, tpot


class _Iter:
    def __init__(self, ttfts, done):
        self.time_to_first_tokens_iter, self.finished_requests = ttfts, done


def test_live_stats_follow_the_scheduler_and_smooth_latencies():
    live = LiveStats()
    assert live.factory(None, 0) is live
    live.record(_Sched(3, 2, 0.25), _Iter([0.1], [_Done(10, 0.02)]))
    assert (live.running, live.waiting, live.kv_cache_usage) == (3, 3, 0.25)
    assert live.ttft_s == pytest.approx(0.1) and live.tpot_s == pytest.approx(0.02)
    live.record(_Sched(1, 0, 0.1), _Iter([0.2], [_Done(1, 5.0)]))  # one-token answers have no TPOT
    assert (live.running, live.waiting) == (1, 1)
    assert live.ttft_s == pytest.approx(0.1 + LiveStats.ALPHA * 0.1)
    assert live.tpot_s == pytest.approx(0.02)
    live.record(None, None)
    assert live.running == 1


def test_gpu_pool_validates_and_maps_to_vllm_args():
    from pathlib import Path

    from serve.config import load_pool

    root = Path(__file__).resolve().parents[3]
    pool = load_pool(root / "deploy" / "pools" / "gpu-qwen.yaml")
    assert [m.engine for m in pool.models] == ["vllm", "vllm"]
    small, large = sorted(pool.models, key=lambda m: m.price.output_per_mtok)
    assert small.prior_quality < large.prior_quality
    for m in pool.models:
        assert m.quantization == "AWQ" and m.resources.num_gpus >= 1
        kw = VllmEngine(m, VllmArgs.model_validate(m.engine_args)).engine_args(Path(m.weights.path))
        assert kw["max_model_len"] == m.context_length and kw["quantization"] is None  # detected, then checked
        assert kw["max_num_seqs"] <= m.max_ongoing_requests
