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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server (Debian's redis-server) on a free port, for this test session only."""
    import shutil
    import subprocess

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (scripts/bootstrap.sh installs Debian's package)")
    port, folder = free_port(), tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
