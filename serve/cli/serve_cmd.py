"""``tiergate serve``: start the gateway on a pool, locally, and wait until it is ready."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx

from serve.config import PoolConfig
from serve.data import DEFAULT_POOL  # shipped in the package (links to deploy/pools in a checkout)



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the gateway on a pool (local Ray)")
    p.add_argument("--pool", default=str(DEFAULT_POOL), help="pool YAML file (default: the embedded CPU pool)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs for Ray (default: enough for the pool)")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for every model to load")
    p.set_defaults(func=run)


def start(pool_path: str, host: str, port: int, num_cpus: int | None = None) -> None:
    """Start local Ray and Serve, and deploy the app (returns before models finish loading)."""
    from serve.serve_options import haproxy_available, serve_env

    added = serve_env(os.environ, haproxy_available())
    os.environ.update(added)  # before Ray is imported or started: every Serve process reads them at import
    if added:
        print(f"tiergate: Ray Serve options: {' '.join(f'{k}={v}' for k, v in sorted(added.items()))}", flush=True)
    import ray
    from ray import serve

    from serve.app import build_app, pool_from_args

    pool = pool_from_args({"pool": pool_path})
    needed = int(sum(m.resources.num_cpus * m.replicas for m in pool.models)) + 1
    ray.init(address="local", num_cpus=num_cpus or max(os.cpu_count() or 1, needed),
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app({"pool": pool_path}), name="tiergate", route_prefix="/", blocking=False)


def wait_ready(base: str, timeout: float, out=sys.stdout) -> bool:
    """Poll /health, printing a progress line per model until all are ready."""
    deadline = time.monotonic() + timeout
    last = ""
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                r = client.get(f"{base}/health")
                models = r.json().get("models", {})
                line = "loading models: " + ", ".join(
                    f"{n} {'ready' if h['ready'] else h.get('detail') or 'loading'}" for n, h in models.items())
                if line != last:
                    print(line, file=out, flush=True)
                    last = line
                if r.status_code == 200:
                    return True
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
    return False


def prepare_weights(pool: PoolConfig) -> None:
    """Assemble every weights file that comes in parts, here with a progress bar, before Ray starts:
    a missing or damaged part stops ``tiergate serve`` at once with an error naming the package."""
    from serve.config import PartsWeights
    from serve.weights import assemble_parts

    for m in pool.models:
        if isinstance(m.weights, PartsWeights):
            cache = m.engine_args.get("cache_dir")
            path = assemble_parts(m.weights.parts, Path(cache).expanduser() if cache else None)
            print(f"tiergate: weights of {m.name}: {path}", flush=True)


def run(args: argparse.Namespace) -> int:
    from serve.config import load_pool

    pool = load_pool(args.pool)
    prepare_weights(pool)
    print(f"tiergate: starting Ray Serve with pool {args.pool}", flush=True)
    if not pool.auth.enabled:
        print("tiergate: WARNING: authentication is DISABLED by this pool's config (auth.enabled: false): anyone "
              f"who can reach {args.host}:{args.port} can use every model", file=sys.stderr, flush=True)
    start(args.pool, args.host, args.port, args.num_cpus)
    base = f"http://{args.host}:{args.port}"
    if not wait_ready(base, args.ready_timeout):
        print(f"tiergate: models did not become ready within {args.ready_timeout:g}s", file=sys.stderr)
        return 1
    print(f"tiergate: ready. OpenAI API: {base}/v1  metrics: {base}/metrics  health: {base}/health", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background, where SIGINT is ignored
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("tiergate: shutting down", flush=True)
    from ray import serve

    serve.shutdown()
    return 0
