"""Several nodes: a two-node Ray cluster built with ``ray start`` on this machine, the gateway on the
head and the cheap model on the worker; the worker node is killed under load and comes back.

The cluster is apart from the session's (``tests/conftest.py``, ``ray.init(address="local")`` in the
pytest process): its own temp dir, ports and auth token, driven only through subprocesses and HTTP
(``serve deploy`` to its dashboard, the openai client to its Serve proxy), so the two never meet.
A node is killed as a machine dies: SIGKILL to every process under its ``ray start --block``, at once.
At the end every process of the cluster is killed, found by the marker in its environment or by its
use of the cluster's temp dir (Ray retitles its workers, which hides both), and none may survive.
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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
import yaml

from tests.conftest import CPU_POOL, ROOT, free_port
from tests.serve.test_gateway_e2e import _counter

pytestmark = pytest.mark.e2e

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


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
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


# --------------------------------------------------------------------------- load
@dataclass(frozen=True)
class Outcome:
    """One request, from the client's side. Exactly one of ``model`` (a complete answer by that model),
    ``error`` (a clean OpenAI-style error: status or stream error event, with type and message) and
    ``broken`` (anything else: no answer, a truncated stream, a connection error, a timeout) is set."""

    sent: float
    done: float
    stream: bool
    model: str | None = None
    error: str | None = None
    broken: str | None = None


def _error_body(err: openai.APIError) -> str | None:
    body = err.body
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body.get("type"):
        return f"{body['type']}: {body['message']}"
    return None


@contextlib.contextmanager
def sending(api: str) -> Iterator[Load]:
    load = Load(api)
    load.start()
    try:
        yield load
    finally:
        load.stop()


class Load:
    """``concurrency`` closed-loop clients, each with its own openai client, alternating streamed and
    plain chat completions routed by the gateway (``model="auto"``), until stopped."""

    def __init__(self, api: str, concurrency: int = 3, max_tokens: int = 12, timeout_s: float = 90) -> None:
        self.api, self.max_tokens, self.timeout_s = api, max_tokens, timeout_s
        self.outcomes: list[Outcome] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(k,), daemon=True, name=f"load-{k}")
                         for k in range(concurrency)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> list[str]:
        """Stop sending and wait for the requests in flight; the clients that did not finish."""
        self._stop.set()
        deadline = time.monotonic() + self.timeout_s + 30
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    def answers(self, model: str, sent_after: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.model == model and o.sent >= sent_after]

    def _client(self, k: int) -> None:
        with openai.OpenAI(base_url=self.api, api_key="unused", max_retries=0, timeout=self.timeout_s) as client:
            i = 0
            while not self._stop.is_set():
                with self._lock:
                    self.sent += 1
                sent = time.monotonic()
                fields = self._one(client, stream=(i + k) % 2 == 0, n=i % 5 + 3)
                with self._lock:
                    self.outcomes.append(Outcome(sent=sent, done=time.monotonic(), **fields))
                i += 1

    def _one(self, client: openai.OpenAI, *, stream: bool, n: int) -> dict[str, Any]:
        messages = [{"role": "user", "content": f"Count from 1 to {n}."}]
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=messages, max_tokens=self.max_tokens, temperature=0, stream=stream)
            header = raw.headers.get("x-tiergate-model")
            if stream:
                models, finish = set(), None
                for chunk in raw.parse():
                    models.add(chunk.model)
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                if finish is None:
                    return {"stream": True, "broken": f"stream ended without a finish_reason or an error ({models})"}
            else:
                body = raw.parse()
                models, finish = {body.model}, body.choices[0].finish_reason
                if finish not in ("stop", "length") or not isinstance(body.choices[0].message.content, str):
                    return {"stream": False, "broken": f"answer without content or finish_reason: {body}"}
            if models != {header}:
                return {"stream": stream, "broken": f"x-tiergate-model {header} but answered by {models}"}
            return {"stream": stream, "model": header}
        except openai.APIStatusError as err:
            clean = _error_body(err)
            if clean is not None and (err.status_code >= 500 or err.status_code == 429):
                return {"stream": stream, "error": f"{err.status_code} {clean}"}
            return {"stream": stream, "broken": f"{err.status_code}: {err.body!r}"}
        except (openai.APIConnectionError, openai.APITimeoutError) as err:  # no answer at all
            return {"stream": stream, "broken": f"{type(err).__name__}: {err}"}
        except openai.APIError as err:  # an error event inside a stream
            clean = _error_body(err)
            return {"stream": stream, **({"error": f"stream {clean}"} if clean else {"broken": repr(err)})}


# --------------------------------------------------------------------------- the test
BASE_POOL = yaml.safe_load(CPU_POOL.read_text())
SMALL, MID = (next(m for m in BASE_POOL["models"] if m["name"] == n)
              for n in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"))
HEAD, WORKER = "tg-head", "tg-worker"  # each node's own custom resource


def multinode_pool() -> dict[str, Any]:
    """The cheap model on the worker, the next one up beside the gateway on the head. Failover is
    quick (a silent model has failed after 15 s; two failures open its circuit for 5 s)."""
    def placed(model: dict[str, Any], node: str) -> dict[str, Any]:
        return {**model, "resources": {**model["resources"], "custom": {node: 1}}}

    return {"name": "multinode", "models": [placed(SMALL, WORKER), placed(MID, HEAD)],
            "limits": BASE_POOL["limits"], "auth": {"enabled": False}, "ingress_resources": {HEAD: 0.01},
            "failover": {"max_retries": 1, "first_token_timeout_s": 15, "breaker_failures": 2, "breaker_reset_s": 5}}


def test_a_worker_node_lost_under_load_loses_no_request_and_comes_back(cluster):
    t0 = time.monotonic()
    cluster.start("head", num_cpus=1, resources={HEAD: 4}, head=True)
    cluster.wait_nodes(1)
    nodes = cluster.join("worker", num_cpus=1, resources={WORKER: 4}, count=2)
    head_id = next(n["node_id"] for n in nodes if n["is_head_node"])
    worker_id = next(n["node_id"] for n in nodes if not n["is_head_node"])

    serve_port = free_port()
    config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": serve_port},
              "applications": [{"name": "tiergate", "route_prefix": "/", "import_path": "serve.app:build_app",
                                "args": {"pool_config": multinode_pool()}}]}
    (cluster.root / "serve.yaml").write_text(yaml.safe_dump(config))
    cluster.serve("deploy", str(cluster.root / "serve.yaml"))
    base = f"http://127.0.0.1:{serve_port}"
    wait_for("the gateway's /health", lambda: httpx.get(f"{base}/health", timeout=30).status_code == 200, 300, 2,
             explain=lambda: f"\nServe: {cluster.get('/api/serve/applications/')}")
    started = time.monotonic() - t0

    def placement() -> dict[str, list[tuple[str, str]]]:
        return {d: sorted((r["state"], r.get("node_id") or "") for r in reps)
                for d, reps in cluster.replicas("tiergate").items()}

    small, mid = f"model-{SMALL['name']}", f"model-{MID['name']}"
    assert placement() == {"ingress": [("RUNNING", head_id)], "telemetry": [("RUNNING", head_id)],
                           mid: [("RUNNING", head_id)], small: [("RUNNING", worker_id)]}

    with sending(f"{base}/v1") as load:
        # the cheapest model answers "auto" while its node is up
        wait_for("answers by the worker's model", lambda: len(load.answers(SMALL["name"], 0)) >= 6, 120, 0.2)
        killed_at = time.monotonic()
        n_killed = cluster.kill("worker")
        # the cluster notices, and the model's replica has no node to run on
        cluster.wait_nodes(1)
        dead_after = time.monotonic() - killed_at
        wait_for("Serve to notice the replica is gone", lambda: small not in placement()
                 or all(state != "RUNNING" for state, _ in placement()[small]), 120)
        # traffic moves to what is left
        wait_for("answers by the head's model", lambda: len(load.answers(MID["name"], killed_at)) >= 6, 120, 0.2)

        back_at = time.monotonic()
        nodes = cluster.join("worker-2", num_cpus=1, resources={WORKER: 4}, count=2)
        new_worker = next(n["node_id"] for n in nodes if not n["is_head_node"])
        wait_for("the model's replica on the new node", lambda: placement()[small] == [("RUNNING", new_worker)], 180)
        rescheduled_after = time.monotonic() - back_at
        # and the cheapest model answers again
        wait_for("answers by the worker's model again", lambda: load.answers(SMALL["name"], back_at), 120, 0.2)
        recovered_after = min(o.done for o in load.answers(SMALL["name"], back_at)) - back_at
        hung = load.stop()

    outcomes = load.outcomes
    answered = [o for o in outcomes if o.model]
    errors = [o for o in outcomes if o.error]
    broken = [o for o in outcomes if o.broken]
    in_flight_at_kill = [o for o in outcomes if o.sent < killed_at <= o.done]
    print(f"\nmultinode: cluster and gateway up in {started:.0f}s; {load.sent} requests sent, {len(answered)} "
          f"answered ({sum(o.model == SMALL['name'] for o in answered)} by {SMALL['name']}, "
          f"{sum(o.model == MID['name'] for o in answered)} by {MID['name']}), {len(errors)} clean errors, "
          f"{len(broken)} broken; {n_killed} processes killed with the worker node, {len(in_flight_at_kill)} "
          f"requests in flight then; node declared dead after {dead_after:.1f}s; node back after "
          f"{cluster.starts['worker-2']} start(s) of `ray start`; replica running again "
          f"{rescheduled_after:.1f}s and first answer by {SMALL['name']} {recovered_after:.1f}s after the node "
          f"returned; errors: {[o.error for o in errors]}")

    assert hung == [], f"clients still waiting for an answer: {hung}"
    assert len(outcomes) == load.sent, "a request has no outcome"
    assert broken == [], [o.broken for o in broken]
    # Only requests that were generating on the node when it died may fail (cleanly, above): any
    # request sent after that is answered, by failover if need be.
    assert all(o in in_flight_at_kill for o in errors), [(o.error, o.sent - killed_at) for o in errors]
    # the gateway counted every request it was sent, failed ones included
    wait_for("every request in tiergate_requests_total",
             lambda: _counter(httpx.get(f"{base}/metrics", timeout=30).text, "tiergate_requests_total") == load.sent,
             60)
