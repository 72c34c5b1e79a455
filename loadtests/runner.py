"""Drive load: open loop (requests leave at planned arrival times, whatever the server does)
or closed loop (a fixed number of clients, each sending its next request when the last ends).

Both are bounded: a run sends exactly the planned requests, each with a client-side timeout,
and returns when the last one has ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from loadtests.client import Price, RequestResult, send
from loadtests.policies import Policy
from loadtests.scenario import PlannedRequest


@dataclass(frozen=True)
class Run:
    policy: str
    mode: str  # "open" | "closed"
    level: float  # offered requests/s (open) or concurrency (closed)
    wall_s: float
    results: tuple[RequestResult, ...] = field(repr=False)


def http_client(base_url: str, connections: int = 256) -> httpx.AsyncClient:
    # enough connections that the pool never throttles an open-loop run into a closed one
    return httpx.AsyncClient(base_url=base_url, limits=httpx.Limits(max_connections=connections,
                                                                    max_keepalive_connections=connections))


async def run_open(client: httpx.AsyncClient, requests: Sequence[PlannedRequest], rate: float, policy_name: str,
                   policy: Policy, prices: dict[str, Price], timeout_s: float) -> Run:
    """Send each request at its planned time ``at_s`` after the start."""
    t0 = time.perf_counter()
    tasks = []
    for req in requests:
        delay = t0 + req.at_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(client, req, policy(req), policy_name, prices, t0, timeout_s)))
    results = await asyncio.gather(*tasks)
    return Run(policy_name, "open", rate, time.perf_counter() - t0, tuple(results))


async def run_closed(client: httpx.AsyncClient, requests: Sequence[PlannedRequest], concurrency: int,
                     policy_name: str, policy: Policy, prices: dict[str, Price], timeout_s: float) -> Run:
    """``concurrency`` clients take the requests in order, each waiting for its answer."""
    queue: asyncio.Queue[PlannedRequest] = asyncio.Queue()
    for req in requests:
        queue.put_nowait(req)
    results: list[RequestResult] = []
    t0 = time.perf_counter()

    async def worker() -> None:
        while True:
            try:
                req = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results.append(await send(client, req, policy(req), policy_name, prices, t0, timeout_s))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    results.sort(key=lambda r: r.index)
    return Run(policy_name, "closed", float(concurrency), time.perf_counter() - t0, tuple(results))
