"""``tiergate serve`` as a user runs it: two gateways on one machine, each with its own local Ray
and, where a HAProxy binary exists, Ray Serve's HAProxy mode, which binds ports of its own."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from loadtests.gateway_proc import GatewayProcess
from serve.serve_options import haproxy_available

FAKE_POOL = Path(__file__).resolve().parents[3] / "loadtests" / "pools" / "overhead-fake.yaml"


def _haproxy_ports(lines: list[str]) -> tuple[str, str]:
    options = next(line for line in lines if line.startswith("tiergate: Ray Serve options:"))
    found = dict(re.findall(r"(RAY_SERVE_HAPROXY_(?:METRICS|STATS)_PORT)=(\d+)", options))
    return found["RAY_SERVE_HAPROXY_METRICS_PORT"], found["RAY_SERVE_HAPROXY_STATS_PORT"]


def test_two_gateways_on_one_machine_both_start_and_answer():
    gateways = [GatewayProcess(str(FAKE_POOL)), GatewayProcess(str(FAKE_POOL))]
    try:
        with ThreadPoolExecutor(2) as pool:
            urls = list(pool.map(lambda g: g.start(timeout_s=240), gateways))
        for url in urls:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            reply = client.chat.completions.create(model="auto", max_tokens=4,
                                                   messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "one two three four"
        if haproxy_available():
            first, second = (_haproxy_ports(g.lines) for g in gateways)
            assert set(first).isdisjoint(second)
    finally:
        with ThreadPoolExecutor(2) as pool:  # each waits out Serve's shutdown; together, not in turn
            list(pool.map(lambda g: g.stop(), gateways))
