"""Latency prediction error of the router's live latency model, under a load sweep on the real pool.

For every answered request the gateway reports the end-to-end latency it predicted when it routed
(``x-tiergate-predicted-latency-ms``: the pool's ``latency_quantile``, p90 by default, for the full
``max_tokens``). This script drives the embedded CPU pool at several concurrency levels with prompts
that run to ``max_tokens`` (so the prediction's output length is the real one), measures each
request's end-to-end latency at the client, and prints per level and per model the median and p90
absolute percentage error of the prediction and its coverage (the share of requests that finished
within the predicted quantile; about 0.9 is right for a p90 prediction).

    .venv/bin/python loadtests/bench_latency_prediction.py --levels 1,2,4 --requests 24
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
from loadtests.summary import percentile

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

STORY = ["Once upon a time, in a small village,", "The old lighthouse keeper said that", "In the year 2150, the city",
         "She opened the letter and read:", "The recipe begins with", "Long ago, the mountains"]


async def level(client: httpx.AsyncClient, base: str, concurrency: int, n: int, max_tokens: int) -> list[tuple]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    out: list[tuple] = []

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            model = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")[i % 3]
            body = {"model": model, "prompt": STORY[i % len(STORY)], "max_tokens": max_tokens, "temperature": 0.8,
                    "seed": i}
            t0 = time.perf_counter()
            r = await client.post(f"{base}/v1/completions", json=body)
            e2e_ms = (time.perf_counter() - t0) * 1000
            if r.status_code == 200:
                out.append((model, float(r.headers["x-tiergate-predicted-latency-ms"]), e2e_ms,
                            r.json()["usage"]["completion_tokens"]))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,2,4")
    ap.add_argument("--requests", type=int, default=24, help="requests per level")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--port", type=int, default=8137)
    ap.add_argument("--base-url", default=None, help="a running gateway (default: start one on the CPU pool)")
    args = ap.parse_args()

    base = args.base_url
    if base is None:
        from serve.cli.serve_cmd import start, wait_ready

        start(str(ROOT / "deploy" / "pools" / "cpu-default.yaml"), "127.0.0.1", args.port)
        base = f"http://127.0.0.1:{args.port}"
        if not wait_ready(base, 600, out=sys.stderr):
            return 1

    async def run() -> dict[int, list[tuple]]:
        async with httpx.AsyncClient(timeout=300) as client:
            await level(client, base, 1, 4, args.max_tokens)  # warm-up: the model learns the live speed
            return {c: await level(client, base, c, args.requests, args.max_tokens)
                    for c in (int(x) for x in args.levels.split(","))}

    results = asyncio.run(run())
    print(f"\nlatency prediction vs measured end-to-end latency, completions of {args.max_tokens} tokens, "
          f"{args.requests} requests per level")
    print(f"{'concurrency':>11} {'model':<24}{'n':>4}{'APE p50':>9}{'APE p90':>9}{'coverage':>10}"
          f"{'pred p50 ms':>13}{'meas p50 ms':>13}")
    for c, rows in results.items():
        by_model: dict[str, list[tuple]] = defaultdict(list)
        for row in rows:
            by_model[row[0]].append(row)
        for model, mrows in sorted(by_model.items()):
            ape = [abs(p - m) / m for _, p, m, _ in mrows]
            cover = sum(m <= p for _, p, m, _ in mrows) / len(mrows)
            print(f"{c:>11} {model:<24}{len(mrows):>4}{statistics.median(ape):>9.2f}{percentile(ape, 90):>9.2f}"
                  f"{cover:>10.2f}{statistics.median(p for _, p, _, _ in mrows):>13.0f}"
                  f"{statistics.median(m for _, _, m, _ in mrows):>13.0f}")
    if args.base_url is None:
        from ray import serve

        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
