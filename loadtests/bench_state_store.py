"""What each shared-state store adds to a request, against the in-memory store, in one run.

    .venv/bin/python loadtests/bench_state_store.py --requests 2000 --rounds 10 \\
        --json loadtests/results/state-store.json

One "request" is what the ingress does with the store for a keyed request: one quota ``hit``
(requests and tokens per minute, all or none), one in-flight ``lease`` at admission, its
``unlease`` and the token ``refund`` that settles the reservation. Stores run in rounds, in an
order that rotates each round, so drift of the machine's load falls on every store alike; each
store's p50/p99 are printed for admission (on the way to the first token), release (after the
last) and both, with what each adds to the memory store's figure. The Ray actor runs
on a local Ray cluster this script starts, Redis on a redis-server it starts (Debian's package).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.state import Charge, MemoryStore, StateStore, Window  # noqa: E402
from loadtests.summary import percentile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_request(store: StateStore, i: int, windows: tuple[Window, Window]) -> tuple[float, float]:
    """(admission, release) seconds: the first is on the way to the first token, the second after the last."""
    rpm, tpm = windows
    t0 = time.perf_counter()
    refusal = await store.hit([Charge(rpm, 1), Charge(tpm, 200)])
    assert refusal is None, refusal
    holder = f"r{i}"
    assert await store.lease("inflight:bench", holder, 1 << 20, 60) is not None
    t1 = time.perf_counter()
    await store.unlease("inflight:bench", holder)
    await store.refund([Charge(tpm, 150)])
    return t1 - t0, time.perf_counter() - t1


async def run_round(store: StateStore, n: int) -> list[tuple[float, float]]:
    name = uuid.uuid4().hex[:8]
    windows = (Window(f"rpm:{name}", 10**9, 60), Window(f"tpm:{name}", 10**12, 60))
    return [await one_request(store, i, windows) for i in range(n)]


async def bench(stores: dict[str, StateStore], n: int, rounds: int, warmup: int) -> dict[str, dict[str, float]]:
    for store in stores.values():
        await store.start()
        await run_round(store, warmup)
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in stores}
    names = list(stores)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name] += await run_round(stores[name], n // rounds)
    out = {}
    for part, idx in (("admission", 0), ("release", 1), ("total", None)):
        per = {k: [a + b if idx is None else (a, b)[idx] for a, b in xs] for k, xs in samples.items()}
        base50, base99 = statistics.median(per["memory"]), percentile(per["memory"], 99)
        for name, xs in per.items():
            p50, p99 = statistics.median(xs), percentile(xs, 99)
            out.setdefault(name, {})[part] = {
                "requests": len(xs), "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "added_p50_ms": (p50 - base50) * 1e3,
                "added_p99_ms": (p99 - base99) * 1e3}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per store, over all rounds")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--stores", default="memory,ray,redis")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    wanted = args.stores.split(",")
    stores: dict[str, StateStore] = {"memory": MemoryStore()}
    redis_proc = None
    tmp = tempfile.mkdtemp(prefix="bench-redis-")
    try:
        if "ray" in wanted:
            import ray

            from serve.state.ray_actor import RayActorStore

            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            stores["ray"] = RayActorStore(f"bench-{uuid.uuid4().hex[:6]}", timeout_s=10)
        if "redis" in wanted:
            from serve.state.redis_store import RedisStore

            exe = shutil.which("redis-server")
            if exe is None:
                raise SystemExit("redis-server is not installed (Debian package redis-server)")
            port = _free_port()
            redis_proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                           "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            stores["redis"] = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=5)
        figures = asyncio.run(_run(stores, args))
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        if "ray" in stores:
            import ray

            ray.shutdown()
    print(f"{'store':8} {'part':10} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}")
    for name, parts in figures.items():
        for part, f in parts.items():
            print(f"{name:8} {part:10} {f['requests']:8d} {f['p50_ms']:8.3f} {f['p99_ms']:8.3f} "
                  f"{f['added_p50_ms']:10.3f} {f['added_p99_ms']:10.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "stores": figures}, indent=2) + "\n")
    return 0


async def _run(stores: dict[str, StateStore], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    try:
        return await bench(stores, args.requests, args.rounds, args.warmup)
    finally:
        for s in stores.values():
            await s.close()


if __name__ == "__main__":
    raise SystemExit(main())
