"""Shedding in the request path (Gateway.route and failover), no Ray: the in-repo fake engine injects a
model that fails before its first token, and leases held in the gateway's own store stand for the
requests already on a model. Through Ray Serve on a real model: test_load_shedding_e2e.py."""

from __future__ import annotations

import pytest

from router.errors import EngineError, OverloadedError
from router.quality import PriorQuality
from serve.api.schemas import ChatCompletionRequest
from serve.clients import EngineClient
from serve.config import parse_pool
from serve.engines.fake import FakeArgs, FakeEngine
from serve.gateway import Gateway


def model(name: str, price: float, prefill: float = 0.0, **fake) -> dict:
    return {"name": name, "engine": "fake", "quantization": "none", "context_length": 512,
            "price": {"input_per_mtok": price, "output_per_mtok": price}, "prior_quality": 0.5,
            "latency_prior": {"ttft_ms": 50, "tpot_ms": 10, "prefill_ms_per_token": prefill}, "engine_args": fake}


async def make(max_queue_wait_ms: float, cheap: dict, dear: dict, prefill: float = 0.0) -> Gateway:
    models = [model("cheap", 0.1, prefill, **cheap), model("dear", 1.0, prefill, **dear)]
    pool = parse_pool({"name": "t", "models": models,
                       "limits": {"max_queue_wait_ms": max_queue_wait_ms}})
    clients = {}
    for m in pool.models:
        engine = FakeEngine(m, FakeArgs(**m.engine_args))
        await engine.start()
        clients[m.name] = EngineClient(engine)
    return Gateway(pool, clients, PriorQuality({m.name: 0.5 for m in pool.models}), lambda record: None)


def chat(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                                                 "max_tokens": 8, **kw})


async def hold(gw: Gateway, name: str, n: int) -> None:
    for i in range(n):
        await gw.slots.take(name, f"{name}-{i}")


async def test_a_request_that_would_wait_too_long_everywhere_gets_a_503_at_once():
    gw = await make(1000, {}, {})
    service = {m: gw.latency.mean_service_ms(m) for m in ("cheap", "dear")}  # 50 + 10 x 64 = 690 ms
    await hold(gw, "cheap", 3)  # 3 ahead on one slot: ~2 s
    call = await gw.route("chat", chat(), {})
    assert call.model == "dear" and "cheap is saturated" in call.decision.explanation  # moved where it fits
    gw.slots.free("dear", call.request_id)
    await gw.slots.drain()
    await hold(gw, "dear", 4)
    with pytest.raises(OverloadedError) as exc:
        await gw.route("chat", chat(), {})
    assert exc.value.code == "queue_wait_exceeded"
    # Retry-After: until the shorter of the two waits (cheap's 3 ahead) is back within the bound
    retry = exc.value.retry_after_s
    assert retry == pytest.approx((3 * service["cheap"] - 1000) / 1000) and retry > 1
    assert gw.in_flight == {"cheap": 3, "dear": 4}  # nothing leased for the refused request


async def test_the_latency_budget_bounds_the_wait_too():
    gw = await make(60_000, {}, {})
    await hold(gw, "cheap", 2)
    await hold(gw, "dear", 2)
    with pytest.raises(OverloadedError, match="past its latency budget"):
        await gw.route("chat", chat(routing={"max_latency_ms": 1000}), {})
    call = await gw.route("chat", chat(routing={"max_latency_ms": 5000}), {})  # a looser budget waits
    assert call.decision.prediction.wait_ms > 1000


async def test_a_failover_goes_only_where_the_request_can_still_wait():
    gw = await make(1000, {"fail_before_first_token": True}, {})
    await hold(gw, "dear", 2)  # ~1.4 s ahead on dear: more than the 1 s bound
    call = await gw.route("chat", chat(), {})
    assert call.model == "cheap"
    with pytest.raises(EngineError, match="fail before the first token"):
        [c async for c in gw.run(call)]
    assert call.failovers == []  # not sent to the back of dear's queue
    gw.slots.free("dear", "dear-0")
    gw.slots.free("dear", "dear-1")
    await gw.slots.drain()
    call = await gw.route("chat", chat(), {})
    chunks = [c async for c in gw.run(call)]  # dear idle: the failover goes there
    assert call.failovers == ["cheap"] and call.model == "dear" and chunks[-1].finish_reason


async def test_this_ingress_s_own_admissions_are_priced_by_their_own_prompts():
    """The gateway keeps each admitted request's own expected service, newest first, for the requests on
    their way to a replica (in no report yet): a long prompt just admitted weighs what it costs."""
    gw = await make(60_000, {}, {}, prefill=2.0)
    long_call = await gw.route("chat", chat(messages=[{"role": "user", "content": "word " * 300}]), {})
    short_call = await gw.route("chat", chat(), {})
    assert long_call.model == short_call.model == "cheap"
    arriving = gw.loads()["cheap"].arriving_ms
    assert arriving == (short_call.decision.prediction.service_ms, long_call.decision.prediction.service_ms)
    assert arriving[1] > arriving[0] > 0  # 300 words of prompt cost more than "hi"
    assert gw.loads()["dear"].arriving_ms == ()
    [c async for c in gw.run(long_call)]
    assert gw.loads()["cheap"].arriving_ms == (short_call.decision.prediction.service_ms,)
    [c async for c in gw.run(short_call)]
    assert gw.loads()["cheap"].arriving_ms == ()
