"""Gateway overhead: the same closed-loop load on the engine directly and through the gateway.

Three tiers run the same greedy requests (temperature 0, so each tier generates the same
tokens) at each concurrency level:

- ``engine``: the pool model's engine in this process, called directly (no router, no HTTP);
- ``gateway-inprocess``: tiergate's request path (routing, accounting, SSE shaping) in this
  process on the same engine, without HTTP or Ray;
- ``gateway-http``: the running gateway over HTTP (Ray Serve proxy, ingress, model replica).

Tiers alternate within each level so that the machine's background load hits them alike.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from loadtests.client import Price, send
from loadtests.scenario import BudgetSpec, PlannedRequest
from loadtests.summary import percentiles

PROMPTS = (
    "List three uses for a paperclip.",
    "What is the boiling point of water at sea level?",
    "Write one sentence about autumn.",
    "Name two planets close to the sun.",
    "Give a synonym for 'happy'.",
    "What do bees make?",
)


@dataclass(frozen=True)
class Sample:
    prompt: int
    ttft_s: float | None
    e2e_s: float
    tokens: int
    ok: bool


Send = Callable[[int], Awaitable[Sample]]


async def _closed_loop(send_one: Send, n: int, concurrency: int) -> tuple[list[Sample], float]:
    todo = list(range(n))
    out: list[Sample] = []
    t0 = time.perf_counter()

    async def worker() -> None:
        while todo:
            out.append(await send_one(todo.pop(0)))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out, time.perf_counter() - t0


def _gen_request(i: int, max_tokens: int) -> Any:
    from serve.engines.base import GenerationRequest, Message, SamplingParams

    return GenerationRequest(request_id=uuid.uuid4().hex, messages=(Message("user", PROMPTS[i % len(PROMPTS)]),),
                             sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0))


def engine_sender(engine: Any, max_tokens: int) -> Send:
    async def one(i: int) -> Sample:
        t0 = time.perf_counter()
        ttft, tokens = None, 0
        async for chunk in engine.stream(_gen_request(i, max_tokens)):
            if ttft is None and (chunk.text or chunk.finish_reason):
                ttft = time.perf_counter() - t0
            tokens = max(tokens, chunk.completion_tokens)
        return Sample(i % len(PROMPTS), ttft, time.perf_counter() - t0, tokens, True)

    return one


def inprocess_sender(gateway: Any, model: str, max_tokens: int) -> Send:
    from serve.api import responses as R
    from serve.api.schemas import ChatCompletionRequest

    async def one(i: int) -> Sample:
        t0 = time.perf_counter()
        body = ChatCompletionRequest.model_validate(
            {"model": model, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
             "max_tokens": max_tokens, "temperature": 0, "seed": 0, "stream": True,
             "stream_options": {"include_usage": True}})
        call = await gateway.route("chat", body, {})
        ttft, first = None, True
        async for chunk in gateway.run(call):
            event = R.stream_event(call, chunk, first)
            first = False
            if event:
                R.sse(event)
                if ttft is None and chunk.text:
                    ttft = time.perf_counter() - t0
        R.sse(R.usage_event(call))
        return Sample(i % len(PROMPTS), ttft, time.perf_counter() - t0, call.completion_tokens, True)

    return one


def http_sender(client: httpx.AsyncClient, model: str, max_tokens: int, prices: dict[str, Price]) -> Send:
    async def one(i: int) -> Sample:
        body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": max_tokens,
                "temperature": 0, "seed": 0, "stream": True, "stream_options": {"include_usage": True}}
        req = PlannedRequest(index=i, klass="overhead", endpoint="chat", at_s=0.0, body=body, headers={},
                             budget=BudgetSpec())
        r = await send(client, req, model, "gateway-http", prices, time.perf_counter(), 120.0)
        return Sample(i % len(PROMPTS), r.ttft_s, r.e2e_s or 0.0, r.completion_tokens, r.outcome == "ok")

    return one


def _figures(samples: Sequence[Sample], wall: float) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    return {"requests": len(samples), "ok": len(ok), "wall_s": round(wall, 3),
            "requests_per_s": round(len(ok) / wall, 3), "output_tokens_per_s": round(sum(s.tokens for s in ok) / wall, 2),
            "ttft_ms": percentiles(s.ttft_s for s in ok), "e2e_ms": percentiles(s.e2e_s for s in ok),
            "tokens_by_prompt": {str(p): sorted({s.tokens for s in ok if s.prompt == p}) for p in sorted({s.prompt for s in ok})}}


def _added(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    def diff(metric: str, q: str) -> float | None:
        a, b = base[metric][q], other[metric][q]
        return None if a is None or b is None else round(b - a, 2)

    return {"added_ttft_ms": {q: diff("ttft_ms", q) for q in ("p50", "p99")},
            "added_e2e_ms": {q: diff("e2e_ms", q) for q in ("p50", "p99")},
            "throughput_ratio": round(other["requests_per_s"] / base["requests_per_s"], 3)
            if base["requests_per_s"] else None}


CpuProbe = Callable[[], float]  # CPU seconds used so far by the processes that serve one tier


async def sweep(tiers: dict[str, Send], levels: Sequence[int], n_per_level: int, rounds: int = 2,
                cpu: dict[str, CpuProbe] | None = None) -> dict[str, Any]:
    """Per level, each tier's figures, and each gateway tier's overhead against ``engine``.

    Each level runs in ``rounds`` rounds, the tier order reversed every other round, so a
    burst of background load on the machine lands on every tier alike. ``cpu`` probes give,
    for the tiers they name, the gateway's CPU milliseconds per 1,000 streamed tokens.
    """
    cpu = cpu or {}
    for send_one in tiers.values():  # warm every path once
        await send_one(0)
    out: dict[str, Any] = {"levels": [], "rounds": rounds}
    per_round = max(1, n_per_level // rounds)
    for c in levels:
        samples: dict[str, list[Sample]] = {name: [] for name in tiers}
        walls: dict[str, float] = {name: 0.0 for name in tiers}
        own = {name: 0.0 for name in tiers}  # this process's CPU seconds while each tier ran
        busy = {name: 0.0 for name in cpu}  # a gateway's CPU seconds while its own tier ran
        idle = {name: [0.0, 0.0] for name in cpu}  # ... and CPU seconds, wall seconds while others ran
        for k in range(rounds):
            order = list(tiers) if k % 2 == 0 else list(reversed(tiers))
            for name in order:
                before = {g: probe() for g, probe in cpu.items()}
                mine = time.process_time()
                got, wall = await _closed_loop(tiers[name], per_round, c)
                own[name] += time.process_time() - mine
                for g, probe in cpu.items():
                    used = probe() - before[g]
                    if g == name:
                        busy[g] += used
                    else:
                        idle[g][0] += used
                        idle[g][1] += wall
                samples[name] += got
                walls[name] += wall
        level: dict[str, Any] = {"concurrency": c, "overhead": {},
                                 "tiers": {name: _figures(samples[name], walls[name]) for name in tiers}}
        for name, used in own.items():  # the engine tier's: the engine's own CPU (and a bare loop over it)
            tokens = sum(s.tokens for s in samples[name] if s.ok)
            level["tiers"][name]["process_cpu_ms_per_1k_tokens"] = round(used * 1e6 / tokens, 1) if tokens else None
        for name, used in busy.items():
            # less what its processes burn idle (Ray's own polling) over the same wall time
            idle_rate = idle[name][0] / idle[name][1] if idle[name][1] else 0.0
            serving = max(0.0, used - idle_rate * walls[name])
            tokens = sum(s.tokens for s in samples[name] if s.ok)
            level["tiers"][name]["gateway_cpu_ms_per_1k_tokens"] = round(serving * 1e6 / tokens, 1) if tokens else None
            level["tiers"][name]["gateway_idle_cpu_pct"] = round(100 * idle_rate, 1)
        base = level["tiers"]["engine"]
        for name in tiers:
            if name != "engine":
                level["overhead"][name] = _added(base, level["tiers"][name])
        level["same_tokens"] = {name: t["tokens_by_prompt"] == base["tokens_by_prompt"]
                                for name, t in level["tiers"].items()}
        out["levels"].append(level)
    return out


async def run_overhead(pool_path: str, model: str, client: httpx.AsyncClient, prices: dict[str, Price],
                       levels: Sequence[int], n_per_level: int, max_tokens: int, *, rounds: int = 2,
                       others: dict[str, httpx.AsyncClient] | None = None,
                       cpu: dict[str, CpuProbe] | None = None) -> dict[str, Any]:
    """Load ``model``'s engine in this process and compare it with the gateway at ``base_url``.

    ``others`` are further gateways over HTTP (``gateway-http-<name>``, e.g. the code before a
    change), run in the same alternating rounds.
    """
    from router.quality import PriorQuality
    from serve.clients import EngineClient
    from serve.config import load_pool
    from serve.engines import build_engine
    from serve.gateway import Gateway

    pool = load_pool(pool_path)
    cfg = pool.model(model)
    engine = build_engine(cfg)
    await engine.start()
    try:
        single = pool.model_copy(update={"models": (cfg,)})
        gateway = Gateway(single, {model: EngineClient(engine)}, PriorQuality({model: cfg.prior_quality}),
                          lambda record: None)
        tiers = {"engine": engine_sender(engine, max_tokens),
                 "gateway-inprocess": inprocess_sender(gateway, model, max_tokens),
                 "gateway-http": http_sender(client, model, max_tokens, prices)}
        for name, other in (others or {}).items():
            tiers[f"gateway-http-{name}"] = http_sender(other, model, max_tokens, prices)
        result = await sweep(tiers, levels, n_per_level, rounds, cpu)
    finally:
        await engine.stop()
    return {"model": model, "max_tokens": max_tokens, "requests_per_level": n_per_level, **result}
