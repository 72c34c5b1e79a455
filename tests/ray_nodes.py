"""A Ray cluster of ``ray start`` nodes on this machine, apart from the test session's.

The session's cluster (``tests/conftest.py``) is ``ray.init(address="local")`` inside the pytest
process; this one has its own temp dir, ports and auth token and is driven only through
subprocesses and HTTP (``serve deploy`` to its dashboard, the Serve proxy), so the two never meet.
Each node is its ``ray start --block`` in a session of its own. A node is killed as a machine dies:
SIGKILL to every process under its ``ray start``, at once. At the end every process of the cluster is
killed, found by the marker in its environment or by its use of the cluster's temp dir (Ray retitles
its workers, which hides both), and none may survive.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from tests.conftest import ROOT, free_port

RAY = str(Path(sys.executable).with_name("ray"))
SERVE = str(Path(sys.executable).with_name("serve"))
MARKER = "TIERGATE_TEST_RAY_NODE"  # in the environment of every process a node starts: "<cluster>/<node>/"
# Ray variables of the environment that would point these processes at another cluster or token.
FOREIGN = ("RAY_ADDRESS", "RAY_DASHBOARD_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
           "RAY_AUTH_TOKEN_PATH")


def _marked(p: psutil.Process, mark: str) -> bool:
    """Whether the environment of ``p`` carries ``MARKER`` starting with ``mark`` (not readable for the
    processes Ray retitles, its workers and agents: their title overwrites it)."""
    try:
        return p.pid != os.getpid() and (p.environ().get(MARKER) or "").startswith(mark)
    except (psutil.Error, OSError):
        return False


def _owned_by(p: psutil.Process, root: str, mark: str) -> bool:
    """Whether ``p`` belongs to the cluster: marked, or it names or writes into ``root`` (its temp dir)."""
    if _marked(p, mark):
        return True
    try:
        return p.pid != os.getpid() and (root in " ".join(p.cmdline())
                                         or any(f.path.startswith(root) for f in p.open_files()))
    except (psutil.Error, OSError):
        return False


def _kill_all(procs: list[psutil.Process]) -> list[psutil.Process]:
    """SIGKILL ``procs`` at once; the ones still alive 10 s later."""
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    return psutil.wait_procs(procs, timeout=10)[1]


@dataclass
class LocalCluster:
    """Ray nodes started by ``ray start --block`` on this machine, each in a session of its own."""

    root: Path
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)  # name -> its `ray start --block`
    starts: dict[str, int] = field(default_factory=dict)  # name -> how many times `join` started it

    @property
    def id(self) -> str:
        return self.root.name

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self, node: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, PYTHONUNBUFFERED="1")
        if node is not None:
            env[MARKER] = f"{self.id}/{node}/"
        return env

    def start(self, name: str, *, num_cpus: float, resources: dict[str, float], head: bool = False) -> None:
        args = [RAY, "start", "--block", f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}",
                "--object-store-memory=200000000", "--min-worker-port=0", "--max-worker-port=0",
                f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
                "--disable-usage-stats"]
        if head:
            args += ["--head", f"--port={self.gcs_port}", f"--temp-dir={self.root}", "--include-dashboard=true",
                     "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                     f"--ray-client-server-port={free_port()}"]
        else:
            args += [f"--address=127.0.0.1:{self.gcs_port}"]
        with open(self.root / f"{name}.log", "ab") as log:
            self.nodes[name] = subprocess.Popen(args, cwd=ROOT, env=self.env(name), stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True)

    def kill(self, name: str) -> int:
        """The node dies at once, as a machine does: SIGKILL to every process it started, all together.

        They are all descendants of its ``ray start --block`` (Ray's workers have process groups of their own)."""
        proc = self.nodes.pop(name)
        try:
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:  # it gave up starting: what it left carries the node's mark
            tree = []
        mark = f"{self.id}/{name}/"
        tree += [p for p in psutil.process_iter() if p not in tree and _marked(p, mark)]
        alive = _kill_all(tree)
        proc.wait(timeout=10)
        assert not alive, f"node {name}: processes still alive after SIGKILL: {alive}"
        return len(tree)

    def leftovers(self) -> list[psutil.Process]:
        """Processes of this cluster still running: marked by it, or using its temp dir."""
        return [p for p in psutil.process_iter() if _owned_by(p, str(self.root), f"{self.id}/")]

    def shutdown(self) -> list[psutil.Process]:
        """Kill every node, then anything of the cluster left behind; return what would not die."""
        for name in list(self.nodes):
            try:
                self.kill(name)
            except AssertionError:
                pass
        alive = _kill_all(self.leftovers())
        shutil.rmtree(self.root, ignore_errors=True)
        return alive

    # ------------------------------------------------------------------ reading the cluster
    def get(self, path: str, timeout: float = 30) -> Any:
        r = httpx.get(f"{self.dashboard}{path}", headers={"authorization": f"Bearer {self.token}"}, timeout=timeout)
        r.raise_for_status()
        return r.json()

    def alive_nodes(self) -> list[dict[str, Any]]:
        data = self.get("/api/v0/nodes?limit=100&detail=true")
        return [n for n in data["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def wait_nodes(self, count: int, timeout: float = 120) -> list[dict[str, Any]]:
        """The alive nodes, once there are ``count`` of them. Raises NodeExited at once when a node's
        ``ray start`` has exited (it gave up starting)."""
        seen: list[Any] = []

        def counted() -> list[dict[str, Any]] | None:
            for name, proc in self.nodes.items():
                if proc.poll() is not None:
                    raise NodeExited(f"node {name}: `ray start` exited with {proc.returncode}{self.logs()}")
            nodes = self.alive_nodes()
            seen[:] = [(n["node_id"][:8], n["is_head_node"]) for n in nodes]
            return nodes if len(nodes) == count else None

        return wait_for(f"{count} alive node(s)", counted, timeout,
                        explain=lambda: f"\nalive: {seen}{self.logs()}")

    def join(self, name: str, *, num_cpus: float, resources: dict[str, float], count: int,
             attempts: int = 3) -> list[dict[str, Any]]:
        """Start a worker node and wait until the cluster has ``count`` alive nodes.

        ``ray start`` gives up when its raylet has not registered within 30 s (Ray's fixed limit), which a
        heavily loaded machine can exceed; a node supervisor (Kubernetes restarting a worker pod's container)
        starts it again, and so does this, ``attempts`` times at most. ``self.starts`` counts the starts."""
        for attempt in range(1, attempts + 1):
            self.start(name, num_cpus=num_cpus, resources=resources)
            self.starts[name] = attempt
            try:
                return self.wait_nodes(count)
            except NodeExited:
                self.kill(name)
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def logs(self, lines: int = 15) -> str:
        """The last lines of each node's ``ray start`` output and of the GCS log, for a failure message."""
        out = []
        logs = self.root / "session_latest" / "logs"
        for log in [*sorted(self.root.glob("*.log")), *logs.glob("gcs_server.out"), *sorted(logs.glob("raylet*.out"))]:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"\n--- {log.name}\n" + "\n".join(tail))
        return "".join(out)

    def serve(self, *args: str, timeout: float = 120) -> str:
        out = subprocess.run([SERVE, *args, "--address", self.dashboard], cwd=ROOT, env=self.env(), text=True,
                             capture_output=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"serve {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def replicas(self, app: str) -> dict[str, list[dict[str, Any]]]:
        """Deployment name -> its replicas (state, node_id) as Serve reports them."""
        details = self.get("/api/serve/applications/")
        deployments = details.get("applications", {}).get(app, {}).get("deployments", {})
        return {name: d.get("replicas", []) for name, d in deployments.items()}

    def deploy(self, config: dict[str, Any], timeout: float = 300) -> str:
        """``serve deploy`` a Serve config (its HTTP proxy on a free port of the head) and wait until the
        gateway's /health says ready; the gateway's base URL."""
        port = free_port()
        config = {**config, "proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port}}
        path = self.root / "serve.yaml"
        path.write_text(yaml.safe_dump(config))
        self.serve("deploy", str(path))
        base = f"http://127.0.0.1:{port}"
        wait_for("the gateway's /health", lambda: httpx.get(f"{base}/health", timeout=30).status_code == 200,
                 timeout, 2, explain=lambda: f"\nServe: {self.get('/api/serve/applications/')}")
        return base


@contextlib.contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    """A cluster with no node yet; every process it started is killed when the block ends."""
    # Unix socket paths are limited to 107 bytes: a short root under /tmp, not pytest's tmp_path.
    c = LocalCluster(Path(tempfile.mkdtemp(prefix="tgmn-", dir="/tmp")))
    try:
        yield c
    finally:
        alive = c.shutdown()
        assert not alive, f"processes of the test's Ray cluster survived SIGKILL: {alive}"
        assert c.leftovers() == []


class NodeExited(AssertionError):
    """A node's ``ray start`` exited: waiting longer for it is pointless."""


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0,
             explain: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except NodeExited:
            raise
        except Exception as err:  # noqa: BLE001 - reported when the wait gives up
            last = err
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout:g}s (last: {last!r}){explain() if explain else ''}")
