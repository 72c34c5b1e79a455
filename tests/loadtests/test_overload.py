"""The overload run's parts without a server: the planned drops, the client's hang-up after the first
line and its record of a refusal's Retry-After (faults injected through httpx's MockTransport), and the
figures and verdicts (waits against budgets, fast 503s, memory after warm-up) on hand-made results."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from loadtests.client import RequestResult
from loadtests.overload import FLAT_MB, SCENARIO, figures, memory, render, sustained
from loadtests.scenario import load_scenario, plan
from tests.loadtests.test_generator import GOOD_STREAM, HEADERS, _req, _send


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(SCENARIO)


def test_the_scenario_is_the_issue_s_traffic(scenario):
    words = [len(p.split()) for c in scenario.classes for p in c.prompts]
    assert max(words) >= 280 and min(words) <= 8  # prompts from a few words to ~300
    tokens = [c.max_tokens for c in scenario.classes]
    assert min(tokens) == 4 and max(tokens) == 48
    assert all(c.budget.max_latency_ms for c in scenario.classes)
    reqs = plan(scenario, 200, 3.0)
    streams = [r for r in reqs if r.body["stream"]]
    assert sum(r.drop for r in reqs) == sum(r.drop for r in streams) == round(len(streams) / 5)  # a fifth
    assert not any(r.drop for r in reqs if not r.body["stream"])
    assert plan(scenario, 200, 3.0) == reqs  # seeded


def test_drops_do_not_move_another_scenario_s_plan():
    smoke = load_scenario(Path(SCENARIO).with_name("smoke.yaml"))
    assert not any(r.drop for r in plan(smoke, 40, 4.0))


async def test_the_client_hangs_up_after_the_first_line():
    r = await _send(lambda q: httpx.Response(200, content=GOOD_STREAM, headers=HEADERS), replace(_req(True), drop=True))
    assert r.outcome == "dropped" and r.headers_s is not None and r.completion_tokens == 0


async def test_a_refusal_s_retry_after_is_kept():
    body = {"error": {"message": "busy", "type": "service_unavailable", "param": None, "code": "queue_wait_exceeded"}}
    r = await _send(lambda q: httpx.Response(503, json=body, headers={"retry-after": "3"}), _req(True))
    assert (r.outcome, r.status, r.retry_after) == ("rejected", 503, "3") and "queue_wait_exceeded" in r.error


def _res(i, klass, status, waited, outcome=None, retry="1"):
    return RequestResult(index=i, klass=klass, policy="tiergate", requested_model="auto", stream=True,
                         outcome=outcome or ("ok" if status == 200 else "rejected"), status=status, e2e_s=waited,
                         headers_s=waited, retry_after=retry if status == 503 else None,
                         error="service_unavailable/queue_wait_exceeded: x" if status == 503 else "")


def test_figures_and_verdicts(scenario):
    # chat-short's budget is 10 s, chat-long's 30 s
    ok = [_res(0, "chat-short", 200, 9.0), _res(1, "chat-long", 200, 33.0), _res(2, "chat-short", 200, 2.0, "dropped"),
          _res(3, "chat-short", 503, 0.02), _res(4, "chat-short", 503, 0.05)]
    f = figures(ok, scenario, margin_s=5.0)
    assert f["verdict_waits"] and f["verdict_fast_503"]
    assert f["statuses"] == {"200": 3, "503": 2} and f["outcomes"] == {"dropped": 1, "ok": 2, "rejected": 2}
    assert f["shed_latency_ms"]["max"] == 50.0 and f["shed_with_retry_after"] == 2
    assert f["worst_wait"]["index"] == 1 and f["worst_wait"]["over_budget_s"] == 3.0
    assert f["answered_over_budget_ms"]["count_over_budget"] == 1
    assert f["shed_codes"] == {"service_unavailable/queue_wait_exceeded": 2}
    late = ok + [_res(5, "chat-long", 200, 36.0), _res(6, "chat-short", 503, 0.3), _res(7, "chat-short", 503, 0.01, retry=None),
                 RequestResult(index=8, klass="chat-short", policy="tiergate", requested_model="auto", stream=True,
                               outcome="timeout")]
    f = figures(late, scenario, margin_s=5.0)
    assert not f["verdict_waits"] and [x["index"] for x in f["late"]] == [5] and f["unanswered"] == [8]
    assert not f["verdict_fast_503"] and f["slow_503"] == [6] and f["shed_without_retry_after"] == [7]
    cut = replace(_res(9, "chat-short", 503, 14.9), error="service_unavailable/latency_budget_exceeded: x")
    f = figures(ok + [cut], scenario, margin_s=5.0)  # admitted, then cut off at budget + overrun
    assert f["verdict_waits"] and not f["verdict_fast_503"] and f["slow_503"] == []
    assert [c["index"] for c in f["cut_off"]] == [9] and f["shed_latency_ms"]["max"] == 50.0
    assert sustained([_res(0, "chat-short", 200, 9.0)], scenario)
    assert not sustained([_res(0, "chat-short", 200, 11.0)], scenario)  # past its budget
    assert not sustained([_res(0, "chat-short", 503, 0.01)], scenario)  # refused


def test_memory_is_judged_after_warm_up():
    samples = [{"t_s": t, "load_avg_1m": 1.0, "rss_mb": {"steady [1]": 100.0 + (50 if t < 30 else 0),
                                                         "leaky [2]": 100.0 + t, "late [3]": 50.0}}
               for t in range(0, 181, 5)]
    for s in samples[:13]:
        del s["rss_mb"]["late [3]"]  # started only after the first window past warm-up
    m = memory(samples, warmup_s=30, end_s=180)
    assert m["steady [1]"]["flat"] and m["steady [1]"]["growth_mb"] == 0  # its warm-up growth does not count
    assert not m["leaky [2]"]["flat"] and m["leaky [2]"]["growth_mb"] > FLAT_MB
    assert m["late [3]"]["flat"] is None
    report = {"rate": 3.0, "duration_s": 180, "scenario": "overload.yaml", "pool": "cpu-default.yaml",
              "sustainable_rate": 1.5, "sustainable_source": "given", "load_avg_start": 1, "load_avg_end": 1,
              "load_avg_during": {"min": 1, "max": 1}, "probes": [], "warmup_s": 30, "verdict_memory": False,
              "figures": figures([_res(0, "chat-short", 200, 1.0)], load_scenario(SCENARIO)), "memory": m}
    text = render(report)
    assert "| leaky [2] | 142.5 | 265.0 | 122.5 | False |" in text and "memory flat after 30 s warm-up | NO" in text
    assert Counter(line.startswith("|") for line in text.splitlines())[True] > 10
