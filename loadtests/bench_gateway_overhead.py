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
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.client import pool_prices  # noqa: E402
from loadtests.gateway_proc import GatewayProcess  # noqa: E402
from loadtests.overhead import run_overhead  # noqa: E402
from loadtests.runner import http_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def gateway_cpu(pid: int) -> Callable[[], float]:
    """CPU seconds so far of the gateway's own processes under ``pid``: the Serve proxy and the ingress
    replica (not the model replicas, whose engine work the in-process baseline does too)."""
    import psutil

    def used() -> float:
        total = 0.0
        for proc in psutil.Process(pid).children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
                if "ProxyActor" in title or ("ServeReplica" in title and ":ingress" in title):
                    t = proc.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                continue
        return total

    return used


async def bench(args: argparse.Namespace, base_url: str, gateways: dict[str, GatewayProcess]) -> dict:
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    cpu = {("gateway-http" if name == "main" else f"gateway-http-{name}"): gateway_cpu(g.proc.pid)
           for name, g in gateways.items() if g.proc is not None}
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(http_client(base_url))
        others = {name: await stack.enter_async_context(http_client(g.base_url))
                  for name, g in gateways.items() if name != "main"}
        prices = await pool_prices(client)
        model = args.model or min(prices, key=lambda m: (prices[m].output_per_mtok, m))
        return await run_overhead(args.pool, model, client, prices, levels, args.requests, args.max_tokens,
                                  rounds=args.rounds, others=others, cpu=cpu)


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
        for tier, t in lv["tiers"].items():
            if t.get("gateway_cpu_ms_per_1k_tokens") is not None:
                print(f"{'':>4} {tier:18} gateway CPU (proxy + ingress) {t['gateway_cpu_ms_per_1k_tokens']:.0f} ms "
                      f"per 1,000 streamed tokens, beyond its idle {t['gateway_idle_cpu_pct']:.1f}% of a core")
        base = lv["tiers"].get("gateway-http-baseline")
        if base is not None:
            new, engine = lv["tiers"]["gateway-http"], lv["tiers"]["engine"]

            def ratio(metric: str, q: str) -> str:
                a, b = base[metric][q] - engine[metric][q], new[metric][q] - engine[metric][q]
                return f"{b:.1f}/{a:.1f} ms"

            print(f"{'':>4} this/baseline: added TTFT p50 {ratio('ttft_ms', 'p50')}, p99 {ratio('ttft_ms', 'p99')}; "
                  f"added E2E p50 {ratio('e2e_ms', 'p50')}; throughput "
                  f"{new['requests_per_s'] / base['requests_per_s']:.3f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url")
    p.add_argument("--pool", default=str(ROOT / "deploy" / "pools" / "cpu-default.yaml"))
    p.add_argument("--model", help="pool model (default: the cheapest)")
    p.add_argument("--levels", default="1,2,4")
    p.add_argument("--requests", type=int, default=12, help="per path per level")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per level (order reversed each)")
    p.add_argument("--baseline-tree", help="another checkout (e.g. a git worktree of the code before a change): "
                                           "its gateway runs beside this one, in the same alternating rounds")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    gateways: dict[str, GatewayProcess] = {}
    if not args.base_url:
        gateways["main"] = GatewayProcess(args.pool)
    if args.baseline_tree:
        tree = Path(args.baseline_tree).resolve()
        gateways["baseline"] = GatewayProcess(args.pool, cwd=tree, env={"PYTHONPATH": str(tree)})
    try:
        urls = {name: g.start() for name, g in gateways.items()}
        base_url = args.base_url.rstrip("/") if args.base_url else urls["main"]
        result = asyncio.run(bench(args, base_url, gateways))
    finally:
        for g in gateways.values():
            g.stop()
    show(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
