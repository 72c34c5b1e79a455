"""Shared fixtures. One Ray cluster and one Serve instance per test session: Ray starts in
about 13 s here, so every end-to-end test shares the gateway deployed on the real CPU pool
(``gateway``) and further apps are added beside it under their own route prefix."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

# Ray Serve kills an HTTP proxy that is not ready within 5 s; on a loaded 2-core machine starting one takes
# longer (imports at worker niceness 15), so every Serve test errored at setup. Read when Serve is imported.
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")

ROOT = Path(__file__).resolve().parents[1]
CPU_POOL = ROOT / "deploy" / "pools" / "cpu-default.yaml"
SHARED = ROOT.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Gateway:
    """A deployed tiergate app: ``base_url`` is its root, ``api`` its OpenAI base URL."""

    base_url: str
    name: str

    @property
    def api(self) -> str:
        return f"{self.base_url}/v1"


@dataclass
class ServeCluster:
    host: str
    port: int

    def deploy(self, name: str, args: dict[str, Any], prefix: str, timeout: float = 300) -> Gateway:
        """Deploy one tiergate app under ``prefix`` and wait until /health says every model is ready."""
        from ray import serve

        from serve.app import build_app

        serve.run(build_app(args), name=name, route_prefix=prefix, blocking=False)
        base = f"http://{self.host}:{self.port}{'' if prefix == '/' else prefix}"
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{base}/health", timeout=5)
                last = r.text
                if r.status_code == 200:
                    return Gateway(base, name)
            except httpx.HTTPError as err:
                last = err
            time.sleep(0.5)
        raise RuntimeError(f"app {name} not ready after {timeout}s: {last}")


@pytest.fixture(scope="session")
def serve_cluster() -> Iterator[ServeCluster]:
    import ray
    from ray import serve

    port = free_port()
    ray.init(address="local", num_cpus=16, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield ServeCluster("127.0.0.1", port)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def gateway(serve_cluster: ServeCluster) -> Gateway:
    """tiergate on the embedded CPU pool (the two real GGUF models), at the root prefix."""
    return serve_cluster.deploy("tiergate", {"pool": str(CPU_POOL)}, "/")
