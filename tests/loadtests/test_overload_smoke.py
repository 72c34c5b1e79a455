"""The overload run in miniature (loadtests/overload.py), through Ray Serve on the real SmolLM2: seconds of
the overload scenario at a rate one small model cannot keep up with. Every request is answered, dropped
by the client as planned, or refused at once with a cause and a Retry-After; nothing is lost or left
hanging; and the memory sampler reads the session's Ray processes.

The timing verdicts (every 503 within 100 ms, waits within budget plus the margin, memory flat after
warm-up) are printed here and judged on the 3-minute run committed under loadtests/results/overload/,
not on a few seconds of a shared CI machine."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import yaml

from loadtests.overload import CUT_OFF, SCENARIO, RssSampler, _open, figures, memory
from loadtests.scenario import load_scenario
from loadtests.summary import problems
from tests.conftest import CPU_POOL, Gateway, ServeCluster

pytestmark = pytest.mark.e2e

BASE = yaml.safe_load(CPU_POOL.read_text())
SMALL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def app(serve_cluster: ServeCluster) -> Iterator[Gateway]:
    from ray import serve

    model = next(m for m in BASE["models"] if m["name"] == SMALL)
    cfg = {"name": "overload-smoke", "models": [model], "auth": {"enabled": False},
           "limits": {**BASE["limits"], "max_queue_wait_ms": 4000}}
    yield serve_cluster.deploy("overload-smoke", {"pool_config": cfg}, "/overload-smoke")
    serve.delete("overload-smoke")


async def test_overload_is_answered_dropped_or_refused_at_once(app):
    scenario = load_scenario(SCENARIO)
    sampler = RssSampler(os.getpid())
    sampler.sample(0.0)
    run = await _open(app.base_url, scenario, rate=5.0, seconds=8.0, seed=1)
    sampler.sample(run.wall_s)
    rs = run.results
    assert sorted(r.index for r in rs) == list(range(40)), "a planned request has no result"
    assert problems(rs) == []  # none lost, timed out, or failed without a cause
    assert {r.outcome for r in rs} <= {"ok", "dropped", "rejected"}
    f = figures(rs, scenario)
    print({k: f[k] for k in ("statuses", "shed_codes", "shed_latency_ms", "answered_over_budget_ms", "worst_wait")})
    refused = [r for r in rs if r.status == 503]
    assert refused and all(r.retry_after and int(r.retry_after) >= 1 for r in refused)
    assert set(f["shed_codes"]) <= {"service_unavailable/queue_wait_exceeded", "service_unavailable/overloaded",
                                    "service_unavailable/latency_budget_exceeded"}
    assert "service_unavailable/queue_wait_exceeded" in f["shed_codes"]  # the wait bound, not only full slots
    shed = [r for r in refused if not r.error.startswith(CUT_OFF)]
    assert max(r.e2e_s for r in shed) < 1.0  # refused without waiting for the model (100 ms: the committed run)
    overrun_s = BASE["limits"]["budget_overrun_ms"] / 1000  # an admitted request misjudged: cut off, not late
    for cut in f["cut_off"]:
        assert cut["budget_s"] + overrun_s - 0.5 <= cut["waited_s"] <= cut["budget_s"] + overrun_s + 2, cut
    answered = [r for r in rs if r.outcome == "ok"]
    assert answered and all(r.finish_reason and r.completion_tokens > 0 for r in answered)
    # a planned hang-up happens only on an answered stream (a refused one has nothing to hang up on); how
    # many there are depends on how many the gateway refused (the client's drop: test_overload.py)
    planned = {r.index for r in rs if r.outcome == "dropped"}
    assert all(r.status == 200 and r.stream for r in rs if r.index in planned)
    mem = memory(sampler.named(), warmup_s=0.0, end_s=run.wall_s, window_s=run.wall_s + 1)
    assert any("ServeReplica:overload-smoke:model-" in name for name in mem), sorted(mem)
