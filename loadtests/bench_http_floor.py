"""The HTTP serving floor under the gateway: what a trivial streaming endpoint adds to the first token.

    .venv/bin/python loadtests/bench_http_floor.py [--waits-ms 0,2,10,30] [--requests 300] [--rounds 2]

Two servers of one endpoint, ``POST /v1/chat/completions``, that reads the JSON body, waits
``t`` ms (an engine's time to first token, as ``asyncio.sleep``) and streams one SSE content event
and ``[DONE]``:

- ``uvicorn``: a bare Starlette app under uvicorn (uvloop, httptools), the stack under Ray Serve;
- ``ray-serve``: the same handler under FastAPI as a Ray Serve ingress deployment (as tiergate's
  ingress is), with the options ``tiergate serve``
  turns on (throughput-optimized mode, HAProxy where a binary exists; ``serve/serve_options.py``).

For each wait it prints the client's time to the content event minus the wait (p50 / p99), the
same figure the overhead benchmark reports as added TTFT. Set beside
``bench_gateway_overhead.py``'s figures for the fake engine (10 ms to the first token) it splits
the gateway's added TTFT into the serving stack's floor and tiergate's own share. Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from starlette.requests import Request  # at module level: FastAPI resolves the handler's annotation here

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve.serve_options import free_port, haproxy_available, serve_env

READY = "floor: ready"


def _app():
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> StreamingResponse:
        await request.json()
        wait_s = float(request.query_params.get("t", "0"))

        async def events():
            await asyncio.sleep(wait_s)
            yield b'data: {"choices":[{"index":0,"delta":{"content":"one"}}]}\n\n'
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def serve_uvicorn(port: int) -> None:
    import uvicorn

    config = uvicorn.Config(_app(), host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning")
    server = uvicorn.Server(config)
    print(READY, flush=True)
    server.run()


def serve_ray(port: int) -> None:
    import ray
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()
    handler = _app().routes[0].endpoint

    @serve.deployment
    @serve.ingress(api)
    class Floor:  # FastAPI under Serve's ingress, as tiergate's own ingress is
        @api.post("/v1/chat/completions")
        async def chat(self, request: Request):
            return await handler(request)

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Floor.bind(), route_prefix="/")
    print(READY, flush=True)
    while True:
        time.sleep(3600)


def _start(kind: str, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if kind == "ray-serve":
        env.update(serve_env(env, haproxy_available()))
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(READY):
            return proc
    raise RuntimeError(f"{kind} server exited before it was ready")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def added_ttft_ms(url: str, wait_ms: float, n: int) -> list[float]:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "stream": True}
    out = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            with client.stream("POST", f"/v1/chat/completions?t={wait_ms / 1000}", json=body) as r:
                r.raise_for_status()
                if not any('"content"' in line for line in r.iter_lines()):  # stops at the content event
                    raise RuntimeError(f"{url}: the stream ended without its content event")
            out.append((time.perf_counter() - t0) * 1000 - wait_ms)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--waits-ms", default="0,2,10,30")
    p.add_argument("--requests", type=int, default=300, help="per server per wait per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (server order reversed each)")
    p.add_argument("--serve", choices=("uvicorn", "ray-serve"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        (serve_uvicorn if args.serve == "uvicorn" else serve_ray)(args.port)
        return 0
    waits = [float(w) for w in args.waits_ms.split(",")]
    servers = {kind: free_port() for kind in ("uvicorn", "ray-serve")}
    procs = {kind: _start(kind, port) for kind, port in servers.items()}
    samples: dict[tuple[str, float], list[float]] = {}
    try:
        for rnd in range(args.rounds):
            order = list(servers) if rnd % 2 == 0 else list(reversed(servers))
            for wait in waits:
                for kind in order:
                    samples.setdefault((kind, wait), []).extend(
                        added_ttft_ms(f"http://127.0.0.1:{servers[kind]}", wait, args.requests))
    finally:
        for proc in procs.values():
            _stop(proc)
    print(f"added TTFT (ms) of a trivial streaming endpoint; {args.requests * args.rounds} requests per cell, "
          f"load average {[round(x, 2) for x in os.getloadavg()]}")
    print(f"{'server':10} {'wait ms':>8} {'p50':>7} {'p99':>7}")
    for (kind, wait), xs in sorted(samples.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        xs.sort()
        print(f"{kind:10} {wait:8g} {statistics.median(xs):7.2f} {xs[int(0.99 * (len(xs) - 1))]:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
