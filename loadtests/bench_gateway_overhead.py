"""Gateway overhead: time to first token through tiergate against the same engine in-process.

Both sides serve the same model (the pool's smallest, pinned so routing cannot change it), the same
prompts and the same open-loop Poisson arrivals at ``--rate`` requests/s. The baseline calls
``LlamaCppEngine.stream`` directly in this process; the gateway side streams over HTTP through the
ingress and the model deployment (two Ray Serve hops). Prints p50/p99 of both, the added latency in
ms and the ratio.

    .venv/bin/python loadtests/bench_gateway_overhead.py --requests 60 --rate 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = ["Name one primary colour.", "What is 3 + 4?", "Say hello in French.", "Give a synonym for big.",
           "What colour is the sky?", "Name a fruit.", "What is the opposite of hot?", "Count to three."]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def open_loop(n: int, rate: float, seed: int, one) -> list[float]:
    rng = random.Random(seed)
    tasks = []
    t = time.perf_counter()
    for i in range(n):
        tasks.append(asyncio.create_task(one(PROMPTS[i % len(PROMPTS)])))
        t += rng.expovariate(rate)
        await asyncio.sleep(max(0.0, t - time.perf_counter()))
    return [x for x in await asyncio.gather(*tasks)]


async def bench_engine(model_cfg, n: int, rate: float, max_tokens: int, seed: int) -> list[float]:
    from serve.engines import GenerationRequest, Message, SamplingParams, engine_class

    cls = engine_class(model_cfg.engine)
    engine = cls(model_cfg, cls.Args.model_validate(model_cfg.engine_args))
    await engine.start()

    async def one(prompt: str) -> float:
        t0 = time.perf_counter()
        req = GenerationRequest("b", SamplingParams(max_tokens=max_tokens, temperature=0),
                                messages=(Message("user", prompt),))
        ttft = None
        async for chunk in engine.stream(req):
            if ttft is None and (chunk.text or chunk.finish_reason):
                ttft = time.perf_counter() - t0
        return ttft * 1000

    for p in PROMPTS[:2]:  # warm-up
        await one(p)
    out = await open_loop(n, rate, seed, one)
    await engine.stop()
    return out


async def bench_gateway(base: str, model: str, n: int, rate: float, max_tokens: int, seed: int) -> list[float]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=256)) as client:
        async def one(prompt: str) -> float:
            t0 = time.perf_counter()
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                    "temperature": 0, "stream": True}
            async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        choice = json.loads(line[6:])["choices"]
                        if choice and (choice[0].get("delta", {}).get("content") or choice[0].get("finish_reason")):
                            return (time.perf_counter() - t0) * 1000
        for p in PROMPTS[:2]:
            await one(p)
        return await open_loop(n, rate, seed, one)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default=str(ROOT / "deploy" / "pools" / "cpu-default.yaml"))
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--rate", type=float, default=4.0, help="open-loop Poisson arrival rate, requests/s")
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=8123)
    args = ap.parse_args()

    from serve.config import load_pool

    pool = load_pool(args.pool)
    model = min(pool.models, key=lambda m: m.price.output_per_mtok)
    engine_ttft = asyncio.run(bench_engine(model, args.requests, args.rate, args.max_tokens, args.seed))

    from serve.cli.serve_cmd import start, wait_ready

    start(args.pool, "127.0.0.1", args.port)
    base = f"http://127.0.0.1:{args.port}"
    if not wait_ready(base, 600, out=sys.stderr):
        print("gateway did not become ready", file=sys.stderr)
        return 1
    gw_ttft = asyncio.run(bench_gateway(base, model.name, args.requests, args.rate, args.max_tokens, args.seed))
    from ray import serve

    serve.shutdown()

    e50, e99 = pct(engine_ttft, 0.5), pct(engine_ttft, 0.99)
    g50, g99 = pct(gw_ttft, 0.5), pct(gw_ttft, 0.99)
    print(f"\nmodel {model.name}, {args.requests} requests, Poisson arrivals at {args.rate:g} req/s, "
          f"max_tokens {args.max_tokens}, streaming")
    print(f"{'':22}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    print(f"{'engine in-process':22}{e50:10.1f}{e99:10.1f}{statistics.mean(engine_ttft):10.1f}")
    print(f"{'through tiergate':22}{g50:10.1f}{g99:10.1f}{statistics.mean(gw_ttft):10.1f}")
    print(f"{'added by gateway':22}{g50 - e50:10.1f}{g99 - e99:10.1f}")
    print(f"TTFT ratio gateway/engine: p50 {g50 / e50:.2f}x, p99 {g99 / e99:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
