"""Gateway overhead alone: the engine in-process against tiergate's path, over concurrency.

    .venv/bin/python loadtests/bench_gateway_overhead.py [--base-url URL] [--levels 1,2,4]
        [--pool loadtests/pools/overhead-fake.yaml] [--placement ingress] [--env RAY_SERVE_...=0] [--direct]

Starts the gateway on the embedded CPU pool unless ``--base-url`` is given, runs the overhead
sweep of ``loadtests.overhead`` (the same greedy requests on the engine called directly, on
the gateway's request path in-process, and through the gateway over HTTP) and prints, per
concurrency level, each path's TTFT and E2E p50/p99, the added milliseconds and the
throughput ratio against the engine. Figures only; nothing is asserted.

``--placement`` overrides the pool models' placement (``ingress``: the engine inside the ingress
replica), ``--env`` sets environment variables of the gateway process (Ray Serve's own options,
one at a time), ``--direct`` sends the HTTP tier to the ingress replica's own port (Ray Serve's
direct ingress, ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``) instead of the Serve proxy's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.client import pool_prices  # noqa: E402
from loadtests.gateway_proc import GatewayProcess  # noqa: E402
from loadtests.overhead import run_overhead  # noqa: E402
from loadtests.runner import http_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def gateway_cpu(pid: int) -> Callable[[], float]:
    """CPU seconds so far of the gateway's own processes under ``pid``: the Serve proxy (or HAProxy) and
    the ingress replica (not the model replicas, whose engine work the in-process baseline does too;
    an engine placed in the ingress is in it, and taken out in ``net_cpu``)."""
    import psutil

    def used() -> float:
        total = 0.0
        for proc in psutil.Process(pid).children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
                if ("ProxyActor" in title or "haproxy" in title
                        or ("ServeReplica" in title and ":ingress" in title)):
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
        return await run_overhead(gateways["main"].pool if "main" in gateways else args.pool, model, client, prices, levels, args.requests, args.max_tokens,
                                  rounds=args.rounds, others=others, cpu=cpu)


def direct_port(pid: int, timeout_s: float = 60.0) -> int:
    """The HTTP port the ingress replica under ``pid`` listens on itself (Ray Serve's direct ingress)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in psutil.Process(pid).children(recursive=True):
            try:
                if "ServeReplica" not in " ".join(proc.cmdline()) or ":ingress" not in " ".join(proc.cmdline()):
                    continue
                ports = sorted(c.laddr.port for c in proc.net_connections(kind="tcp")
                               if c.status == psutil.CONN_LISTEN and 30000 <= c.laddr.port <= 31000)
            except psutil.Error:
                continue
            if ports:
                return ports[0]
        time.sleep(1.0)
    raise RuntimeError("no direct-ingress port found on the ingress replica (is RAY_SERVE_ENABLE_DIRECT_INGRESS=1 set?)")


def placed_pool(pool: str, placement: str | None, folder: Path) -> str:
    """``pool`` with every model's placement set to ``placement`` (None: the pool as it is)."""
    if placement is None:
        return pool
    data = yaml.safe_load(Path(pool).read_text())
    for m in data["models"]:
        m["placement"] = placement
    out = folder / Path(pool).name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(out)


def net_cpu(result: dict, placement: str | None) -> None:
    """Per level, the gateway's CPU per 1,000 tokens beyond the engine's own: with the engine in the
    ingress replica its work is in the ingress's CPU, so the engine tier's (this process's CPU while
    it ran: the engine and a bare loop over its stream) is taken out."""
    for lv in result["levels"]:
        for t in lv["tiers"].values():
            raw = t.get("gateway_cpu_ms_per_1k_tokens")
            if raw is not None:
                engine = lv["tiers"]["engine"]["process_cpu_ms_per_1k_tokens"] if placement == "ingress" else 0.0
                t["gateway_net_cpu_ms_per_1k_tokens"] = round(raw - engine, 1)


def meta(args: argparse.Namespace) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit.stdout.strip(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
            "pool": args.pool, "placement": args.placement, "env": dict(args.env), "direct": args.direct}


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
                      f"per 1,000 streamed tokens, beyond its idle {t['gateway_idle_cpu_pct']:.1f}% of a core; "
                      f"net of the engine's own {t.get('gateway_net_cpu_ms_per_1k_tokens', 0):.0f} ms")
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
    p.add_argument("--placement", choices=("deployment", "ingress"), help="override the pool models' placement")
    p.add_argument("--env", action="append", default=[], type=lambda kv: tuple(kv.split("=", 1)),
                   help="KEY=VALUE for the gateway process (e.g. a RAY_SERVE_* option); repeatable")
    p.add_argument("--direct", action="store_true", help="send HTTP to the ingress replica's direct-ingress port")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tg-overhead-"))
    pool = placed_pool(args.pool, args.placement, folder)
    gateways: dict[str, GatewayProcess] = {}
    if not args.base_url:
        gateways["main"] = GatewayProcess(pool, env=dict(args.env))
    if args.baseline_tree:
        tree = Path(args.baseline_tree).resolve()
        gateways["baseline"] = GatewayProcess(pool, cwd=tree, env={**dict(args.env), "PYTHONPATH": str(tree)})
    try:
        urls = {name: g.start() for name, g in gateways.items()}
        base_url = args.base_url.rstrip("/") if args.base_url else urls["main"]
        if args.direct and "main" in gateways:
            base_url = f"http://127.0.0.1:{direct_port(gateways['main'].proc.pid)}"
        started = meta(args)
        result = asyncio.run(bench(args, base_url, gateways))
    finally:
        for g in gateways.values():
            g.stop()
    net_cpu(result, args.placement or yaml.safe_load(Path(args.pool).read_text())["models"][0].get("placement"))
    result["meta"] = {**started, "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    show(result)
    print(f"load average before {started['load_average_1_5_15']}, after {result['meta']['load_average_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
