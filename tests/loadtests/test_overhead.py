"""The overhead sweep's bookkeeping, on stand-in tiers: alternation, and gateway CPU net of idle."""

from __future__ import annotations

import asyncio

from loadtests.overhead import Sample, sweep


def _tier(log, name, tokens=10):
    async def one(i):
        log.append(name)
        await asyncio.sleep(0.001)
        return Sample(prompt=i % 2, ttft_s=0.001, e2e_s=0.002, tokens=tokens, ok=True)

    return one


async def test_gateway_cpu_is_counted_net_of_its_idle_rate():
    log: list[str] = []
    clock = {"cpu": 0.0}

    def probe():  # 1 CPU second per request of its own tier, nothing while idle
        return clock["cpu"]

    async def gw(i):
        clock["cpu"] += 1.0
        return await _tier(log, "gateway-http")(i)

    out = await sweep({"engine": _tier(log, "engine"), "gateway-http": gw}, [1], 8, rounds=4,
                      cpu={"gateway-http": probe})
    (level,) = out["levels"]
    tier = level["tiers"]["gateway-http"]
    assert tier["gateway_cpu_ms_per_1k_tokens"] == 100_000.0  # 1 s per 10 tokens
    assert tier["gateway_idle_cpu_pct"] == 0.0
    # warm-up once each, then rounds alternate the order: engine first, then gateway first
    blocks = [log[i] for i in range(2, len(log), 2)]
    assert blocks[:4] == ["engine", "gateway-http", "gateway-http", "engine"]


async def test_each_tier_s_own_process_cpu_is_counted_per_1k_tokens():
    def spin(seconds):  # burn this process's CPU, so process_time moves
        import time

        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    async def busy(i):
        spin(0.02)
        return Sample(prompt=0, ttft_s=0.001, e2e_s=0.002, tokens=10, ok=True)

    out = await sweep({"engine": busy, "gateway-inprocess": _tier([], "gw")}, [1], 4, rounds=2)
    tiers = out["levels"][0]["tiers"]
    assert tiers["engine"]["process_cpu_ms_per_1k_tokens"] >= 2000.0  # >= 20 ms per 10 tokens
    assert tiers["gateway-inprocess"]["process_cpu_ms_per_1k_tokens"] < tiers["engine"]["process_cpu_ms_per_1k_tokens"]
