"""Gateway overhead alone: the engine in-process against tiergate's path, over concurrency.

    .venv/bin/python loadtests/bench_gateway_overhead.py [--base-url URL] [--levels 1,2,4]

Starts the gateway on the embedded CPU pool unless ``--base-url`` is given, runs the overhead
sweep of ``loadtests.overhead`` (the same greedy requests on the engine called directly, on
the gateway's request path in-process, and through the gateway over HTTP) and prints, per
concurrency level, each path's TTFT and E2E p50/p99, the added milliseconds and the
throughput ratio against the engine. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.client import pool_prices  # noqa: E402
from loadtests.gateway_proc import GatewayProcess  # noqa: E402
from loadtests.overhead import run_overhead  # noqa: E402
from loadtests.runner import http_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


async def bench(args: argparse.Namespace, base_url: str) -> dict:
    async with http_client(base_url) as client:
        prices = await pool_prices(client)
        model = args.model or min(prices, key=lambda m: (prices[m].output_per_mtok, m))
        levels = [int(x) for x in args.levels.split(",") if x.strip()]
        return await run_overhead(args.pool, model, client, prices, levels, args.requests, args.max_tokens)


def show(result: dict) -> None:
    print(f"gateway overhead on {result['model']} (greedy, max_tokens {result['max_tokens']}, "
          f"{result['requests_per_level']} requests per path per level, closed loop)")
    print(f"{'conc':>4} {'path':18} {'req/s':>6} {'TTFT p50':>9} {'p99':>7} {'E2E p50':>8} {'p99':>7} "
          f"{'+TTFT p50':>10} {'p99':>7} {'+E2E p50':>9} {'p99':>7} {'thr ratio':>9}")
    for lv in result["levels"]:
        for tier, t in lv["tiers"].items():
            ov = lv["overhead"].get(tier, {})
            at, ae = ov.get("added_ttft_ms", {}), ov.get("added_e2e_ms", {})
            print(f"{lv['concurrency']:>4} {tier:18} {t['requests_per_s']:>6.2f} {t['ttft_ms']['p50']:>9.0f} "
                  f"{t['ttft_ms']['p99']:>7.0f} {t['e2e_ms']['p50']:>8.0f} {t['e2e_ms']['p99']:>7.0f} "
                  f"{at.get('p50', 0):>10.0f} {at.get('p99', 0):>7.0f} {ae.get('p50', 0):>9.0f} "
                  f"{ae.get('p99', 0):>7.0f} {ov.get('throughput_ratio', 1.0):>9.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url")
    p.add_argument("--pool", default=str(ROOT / "deploy" / "pools" / "cpu-default.yaml"))
    p.add_argument("--model", help="pool model (default: the cheapest)")
    p.add_argument("--levels", default="1,2,4")
    p.add_argument("--requests", type=int, default=12, help="per path per level")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    gateway = None if args.base_url else GatewayProcess(args.pool)
    try:
        base_url = args.base_url.rstrip("/") if args.base_url else gateway.start()
        result = asyncio.run(bench(args, base_url))
    finally:
        if gateway is not None:
            gateway.stop()
    show(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
