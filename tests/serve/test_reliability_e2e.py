"""Auth, quotas, admission control, failover, cancellation and deadlines, through Ray Serve.

Each group runs in its own app beside the main gateway (same Ray cluster, own route prefix).
The models that answer are the real GGUF models; the in-repo fake engine appears only to inject
faults (a model that always fails, one that dies mid-stream, one that never answers).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import psutil
import pytest
import yaml

from serve.auth import digest
from tests.conftest import CPU_POOL

pytestmark = pytest.mark.e2e

BASE_POOL = yaml.safe_load(CPU_POOL.read_text())
SMALL = next(m for m in BASE_POOL["models"] if m["name"] == "smollm2-135m-instruct")
# the next model up the pool's price ladder
LARGE = min((m for m in BASE_POOL["models"] if m is not SMALL), key=lambda m: m["price"]["output_per_mtok"])
Q = [{"role": "user", "content": "Say hi."}]


def fake(name: str, price: float, **args) -> dict:
    return {"name": name, "engine": "fake", "quantization": "none", "context_length": 2048,
            "price": {"input_per_mtok": price, "output_per_mtok": price}, "prior_quality": 0.5,
            "latency_prior": {"ttft_ms": 5, "tpot_ms": 1}, "resources": {"num_cpus": 0}, "engine_args": args}


def pool(name: str, models: list[dict], **extra) -> dict:
    return {"name": name, "models": models, "limits": BASE_POOL["limits"], "auth": {"enabled": False}, **extra}


def chat(base: str, *, headers=None, timeout=60, **body) -> httpx.Response:
    payload = {"model": "auto", "messages": Q, "max_tokens": 4, **body}
    return httpx.post(f"{base}/v1/chat/completions", json=payload, headers=headers or {}, timeout=timeout)


def metric(base: str, name: str, **labels: str) -> float:
    from tests.serve.test_gateway_e2e import _counter

    return _counter(httpx.get(f"{base}/metrics").text, name, **labels)


# --------------------------------------------------------------------------- auth and quotas
KEYS = {
    "alice": "alice-key-0123456789",
    "bob": "bob-key-0123456789ab",
    "carol": "carol-key-0123456789",
    "dave": "dave-key-0123456789a",
}


@pytest.fixture(scope="module")
def secure(serve_cluster, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"keys": [
        {"name": "alice", "key": KEYS["alice"]},
        {"name": "bob", "key_sha256": digest(KEYS["bob"]), "models": [SMALL["name"]]},
        {"name": "carol", "key": KEYS["carol"], "limits": {"requests_per_minute": 2}},
        {"name": "dave", "key": KEYS["dave"], "limits": {"tokens_per_minute": 60}},
    ]}))
    cfg = pool("secure", [SMALL, fake("stub", 0.001, reply="stub answer")],
               auth={"enabled": True, "keys_file": str(keys_file)})
    return serve_cluster.deploy("secure", {"pool_config": cfg}, "/secure")


def bearer(name: str) -> dict:
    return {"authorization": f"Bearer {KEYS[name]}"}


def test_missing_and_invalid_keys_are_401(secure):
    r = chat(secure.base_url)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = chat(secure.base_url, headers={"authorization": "Bearer not-a-key-at-all-000"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{secure.api}/models").status_code == 401
    assert httpx.get(f"{secure.api}/models", headers=bearer("alice")).status_code == 200


def test_valid_key_is_served_and_forbidden_model_is_403(secure):
    r = chat(secure.base_url, headers=bearer("alice"))
    assert r.status_code == 200 and r.headers["x-tiergate-model"] == "stub"  # cheapest
    r = chat(secure.base_url, headers=bearer("bob"), model="stub")
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    r = chat(secure.base_url, headers=bearer("bob"))  # routed, but only among bob's models
    assert r.status_code == 200 and r.headers["x-tiergate-model"] == SMALL["name"]


def test_health_and_metrics_need_no_key_and_leak_nothing(secure):
    secret_prompt = "zebra-unicorn-secret-prompt-4711"
    r = chat(secure.base_url, headers=bearer("alice"), messages=[{"role": "user", "content": secret_prompt}],
             model=SMALL["name"])  # the real model: its engine and the telemetry see the prompt
    assert r.status_code == 200 and r.headers["x-tiergate-model"] == SMALL["name"]
    assert httpx.get(f"{secure.base_url}/health").status_code == 200
    text = httpx.get(f"{secure.base_url}/metrics").text
    assert secret_prompt not in text and "zebra" not in text
    assert all(k not in text for k in KEYS.values()) and digest(KEYS["alice"]) not in text
    assert 'key="alice"' in text


def test_request_quota_gives_429_with_retry_after(secure):
    codes = [chat(secure.base_url, headers=bearer("carol")).status_code for _ in range(3)]
    assert codes[:2] == [200, 200]
    r = chat(secure.base_url, headers=bearer("carol"))
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert metric(secure.base_url, "tiergate_key_requests_total", key="carol", status="429") >= 1


def test_token_quota(secure):
    r = chat(secure.base_url, headers=bearer("dave"), max_tokens=100)
    assert r.status_code == 429 and "exceeds" in r.json()["error"]["message"]
    assert chat(secure.base_url, headers=bearer("dave"), max_tokens=8, model=SMALL["name"]).status_code == 200
    # the answer's actual tokens were charged (prompt with its chat template > 30 tokens)
    for _ in range(20):
        r = chat(secure.base_url, headers=bearer("dave"), max_tokens=30)
        if r.status_code == 429:
            break
        time.sleep(0.1)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


# --------------------------------------------------------------------------- failover and breaker
@pytest.fixture(scope="module")
def faulty(serve_cluster):
    cfg = pool("faulty", [
        fake("broken", 0.001, fail_before_first_token=True),
        {**SMALL},
        fake("flaky", 50.0, reply="one two three four five six", fail_after_tokens=2, tpot_ms=20),
        fake("mute", 60.0, ttft_ms=60_000),
    ], failover={"max_retries": 1, "breaker_failures": 2, "breaker_reset_s": 300, "first_token_timeout_s": 60},
        limits={**BASE_POOL["limits"], "request_timeout_s": 4})
    return serve_cluster.deploy("faulty", {"pool_config": cfg}, "/faulty")


def test_failover_then_breaker_opens(faulty):
    for _ in range(2):
        r = chat(faulty.base_url)
        assert r.status_code == 200, r.text
        assert r.headers["x-tiergate-model"] == SMALL["name"]
        assert r.headers["x-tiergate-failover"] == "broken"
        assert r.headers["x-tiergate-route-reason"] == "fallback"
    # two failures opened broken's circuit: traffic goes straight to the healthy model
    r = chat(faulty.base_url)
    assert r.status_code == 200 and "x-tiergate-failover" not in r.headers
    assert r.headers["x-tiergate-model"] == SMALL["name"]
    assert metric(faulty.base_url, "tiergate_circuit_open", model="broken") == 1
    assert metric(faulty.base_url, "tiergate_failovers_total", from_model="broken",
                  to_model=SMALL["name"]) >= 2


def test_pinned_failing_model_is_a_clean_502(faulty):
    r = chat(faulty.base_url, model="broken")
    assert r.status_code == 502 and r.json()["error"]["type"] == "engine_error"


def test_crash_mid_stream_ends_with_error_event(faulty):
    with httpx.stream("POST", f"{faulty.api}/chat/completions", timeout=60,
                      json={"model": "flaky", "messages": Q, "max_tokens": 10, "stream": True}) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert '"error"' in events[-2] and "engine_error" in events[-2]
    assert sum('"delta"' in e for e in events) >= 2  # what was generated before the crash arrived
    r = chat(faulty.base_url, model="flaky", max_tokens=10)
    assert r.status_code == 502  # non-streamed: an error, never a truncated 200


def test_deadline_gives_504(faulty):
    r = chat(faulty.base_url, model="mute")
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"


@pytest.fixture(scope="module")
def hangup(serve_cluster):
    return serve_cluster.deploy("hangup", {"pool_config": pool("hangup", [SMALL])}, "/hangup")


def engine_running(app: str, model: str) -> int:
    """Requests the model's engine itself is generating (its replica's EngineLoad), not the gateway's count."""
    from ray import serve

    return serve.get_deployment_handle(f"model-{model}", app_name=app).load.remote().result(timeout_s=30).running


async def test_client_disconnect_cancels_generation(hangup):
    before = metric(hangup.base_url, "tiergate_requests_total", status="499")
    async with httpx.AsyncClient(timeout=60) as client:
        body = {"model": SMALL["name"], "messages": [{"role": "user", "content": "Write a long story."}],
                "max_tokens": 1000, "temperature": 1.0, "stream": True}
        async with client.stream("POST", f"{hangup.api}/chat/completions", json=body) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen >= 3:
                    running = await asyncio.to_thread(engine_running, "hangup", SMALL["name"])
                    break  # hang up mid-stream
    assert running == 1  # the engine was generating this request when the client went away
    for _ in range(100):
        if metric(hangup.base_url, "tiergate_requests_total", status="499") > before:
            break
        await asyncio.sleep(0.1)
    assert metric(hangup.base_url, "tiergate_requests_total", status="499") == before + 1
    for _ in range(100):  # the engine stopped: its own load, long before 1000 tokens
        if await asyncio.to_thread(engine_running, "hangup", SMALL["name"]) == 0:
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(engine_running, "hangup", SMALL["name"]) == 0


# --------------------------------------------------------------------------- a replica killed under load
@pytest.fixture(scope="module")
def chaos(serve_cluster):
    return serve_cluster.deploy("chaos", {"pool_config": pool("chaos", [SMALL, LARGE])}, "/chaos")


def _replica_pids(app: str, model: str) -> list[int]:
    tag = f"ServeReplica:{app}:model-{model}"
    return [p.pid for p in psutil.process_iter(["cmdline"]) if any(tag in part for part in p.info["cmdline"] or ())]


async def test_killed_replica_fails_over_and_loses_nothing(chaos):
    pids = _replica_pids("chaos", SMALL["name"])
    assert pids, "the small model's replica process was not found"

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, dict, str]:
        body = {"model": "auto", "messages": [{"role": "user", "content": f"Count to {i}."}], "max_tokens": 24,
                "temperature": 0, "stream": i % 2 == 0}
        if not body["stream"]:
            r = await client.post(f"{chaos.api}/chat/completions", json=body)
            return r.status_code, dict(r.headers), r.text
        async with client.stream("POST", f"{chaos.api}/chat/completions", json=body) as r:
            if r.status_code != 200:  # refused before the stream began: an error object, not events
                return r.status_code, dict(r.headers), (await r.aread()).decode()
            lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
            return r.status_code, dict(r.headers), "\n".join(lines)

    async with httpx.AsyncClient(timeout=120) as client:
        tasks = [asyncio.create_task(one(client, i)) for i in range(16)]
        await asyncio.sleep(0.5)
        for pid in pids:
            psutil.Process(pid).kill()
        results = await asyncio.gather(*tasks)  # none hangs: the client timeout would raise

    failed_over = 0
    for status, headers, text in results:
        if status == 200 and headers.get("content-type", "").startswith("text/event-stream"):
            assert text.endswith("data: [DONE]")  # complete, or ended by an explicit error event
            assert '"finish_reason":"' in text or '"error"' in text
        elif status == 200:
            assert '"content"' in text
        else:
            assert status in (502, 503, 504) and '"error"' in text
        failed_over += "x-tiergate-failover" in headers
    assert failed_over >= 1, [(s, h.get("x-tiergate-model")) for s, h, _ in results]
    # Ray restarts the replica: the small model serves again
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = chat(chaos.base_url, model=SMALL["name"])
        if r.status_code == 200:
            break
        await asyncio.sleep(1)
    assert r.status_code == 200
    assert _replica_pids("chaos", SMALL["name"]) and _replica_pids("chaos", SMALL["name"]) != pids


# --------------------------------------------------------------------------- overload
@pytest.fixture(scope="module")
def narrow(serve_cluster):
    small = {**SMALL, "max_ongoing_requests": 1, "max_queued_requests": 1}
    return serve_cluster.deploy("narrow", {"pool_config": pool("narrow", [small], auth={"enabled": False})},
                                "/narrow")


async def test_overload_sheds_fast_with_retry_after(narrow):
    async with httpx.AsyncClient(timeout=120) as client:
        body = {"model": "auto", "messages": Q, "max_tokens": 8, "routing": {"max_latency_ms": 60_000}}
        results = await asyncio.gather(*(client.post(f"{narrow.api}/chat/completions", json=body)
                                         for _ in range(30)))
    ok = [r for r in results if r.status_code == 200]
    shed = [r for r in results if r.status_code == 503]
    assert len(ok) + len(shed) == 30 and ok and shed
    for r in shed:
        assert r.json()["error"]["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1
    assert all(r.headers["x-tiergate-budget-met"] == "true" for r in ok)
    assert metric(narrow.base_url, "tiergate_requests_in_flight", model=SMALL["name"]) == 0
