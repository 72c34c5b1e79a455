"""Several nodes: a two-node Ray cluster built with ``ray start`` on this machine (``tests/ray_nodes.py``),
the gateway on the head and the cheap model on the worker; the worker node is killed under load and
comes back."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import CPU_POOL
from tests.ray_nodes import LocalCluster, local_cluster, wait_for
from tests.serve.test_gateway_e2e import _counter

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with local_cluster() as c:
        yield c


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

    app = {"name": "tiergate", "route_prefix": "/", "import_path": "serve.app:build_app",
           "args": {"pool_config": multinode_pool()}}
    base = cluster.deploy({"applications": [app]})
    started = time.monotonic() - t0

    def placement() -> dict[str, list[tuple[str, str]]]:
        return {d: sorted((r["state"], r.get("node_id") or "") for r in reps)
                for d, reps in cluster.replicas("tiergate").items()}

    small, mid = f"model-{SMALL['name']}", f"model-{MID['name']}"
    placed = {"ingress": [("RUNNING", head_id)], "telemetry": [("RUNNING", head_id)],
              mid: [("RUNNING", head_id)], small: [("RUNNING", worker_id)]}
    # /health answers once the models are ready; Serve may still list another replica as STARTING a moment
    wait_for("every replica running on its node", lambda: placement() == placed, 60,
             explain=lambda: f" placement: {placement()}")
    assert placement() == placed

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
