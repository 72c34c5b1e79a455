"""Unit tests of the load generator's pure parts, and of how the client classifies answers
(fault injection through httpx's MockTransport: no server)."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from loadtests.arrivals import arrival_times
from loadtests.client import Price, send
from loadtests.policies import make_policy
from loadtests.report import capacity, verdicts
from loadtests.runner import Run
from loadtests.scenario import BudgetSpec, PlannedRequest, Scenario, plan
from loadtests.summary import percentiles, summarize
from serve.evaluation.scorer import product_prompt

PRICES = {"small": Price(0.02, 0.06), "big": Price(0.05, 0.15)}


def scenario(**over) -> Scenario:
    raw = {"name": "t", "seed": 3, "classes": [
        {"name": "a", "weight": 3, "max_tokens": 8, "prompts": ["x", "y"], "budget": {"max_latency_ms": 500}},
        {"name": "b", "weight": 1, "max_tokens": 4, "endpoint": "completions", "stream": False,
         "budget": {"min_quality": 0.5, "max_cost_usd": 1e-6}, "budget_via": "headers",
         "labelled": {"file": "deploy/eval/cpu-labelled.jsonl", "items": 5}}]}
    raw.update(over)
    return Scenario.model_validate(raw)


@pytest.mark.parametrize("process,cv", [("poisson", 1.0), ("gamma", 2.0), ("gamma", 0.5)])
def test_arrivals_have_the_rate_and_spread_asked_for(process, cv):
    t = arrival_times(process, 4.0, 40_000, np.random.default_rng(1), cv=cv)
    gaps = np.diff(t)
    assert t[0] == 0 and np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(0.25, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_unknown_arrival_process_lists_valid_ones():
    with pytest.raises(ValueError, match="constant, gamma, poisson"):
        arrival_times("bursty", 1.0, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown arrival process"):
        scenario(arrival={"process": "bursty"})


def test_scenario_rejects_unknown_fields_and_duplicate_classes():
    with pytest.raises(ValueError, match="extra"):
        scenario(burst=True)
    with pytest.raises(ValueError, match="repeated: a"):
        s = scenario()
        Scenario.model_validate({**s.model_dump(), "classes": [s.classes[0].model_dump()] * 2})


def test_plan_is_seeded_and_follows_the_mix():
    s = scenario()
    p1, p2 = plan(s, 400, 2.0), plan(s, 400, 2.0)
    assert [(r.klass, r.at_s, r.body) for r in p1] == [(r.klass, r.at_s, r.body) for r in p2]
    assert sum(r.klass == "a" for r in p1) == 300  # the mix is exact, not a draw
    assert [r.klass for r in plan(s, 5, None)].count("a") == 4  # 3.75 rounds up by largest remainder
    assert len({tuple(r.klass for r in plan(s, 8, None, seed=k)) for k in range(5)}) > 1  # but shuffled
    a = next(r for r in p1 if r.klass == "a")
    b = next(r for r in p1 if r.klass == "b")
    assert a.body["routing"] == {"max_latency_ms": 500} and a.body["stream_options"] == {"include_usage": True}
    assert "routing" not in b.body and b.body["prompt"] == product_prompt(dict(b.item)) and b.body["max_tokens"] == 4
    assert b.headers == {"x-tiergate-min-quality": "0.5", "x-tiergate-max-cost-usd": "1e-06"}


def test_policies_pin_from_the_client_side():
    req = plan(scenario(), 1, None)[0]
    assert make_policy("tiergate", PRICES)(req) == "auto"
    assert make_policy("always-smallest", PRICES)(req) == "small"
    assert make_policy("always-largest", PRICES)(req) == "big"
    reqs = plan(scenario(), 200, None)
    picks = [make_policy("random", PRICES, 5)(r) for r in reqs]
    assert picks == [make_policy("random", PRICES, 5)(r) for r in reqs]
    assert 70 < picks.count("small") < 130
    with pytest.raises(ValueError, match="valid: tiergate, always-smallest"):
        make_policy("cheapest", PRICES)


def _req(stream: bool, budget: BudgetSpec | None = None) -> PlannedRequest:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": stream}
    return PlannedRequest(0, "a", "chat", 0.0, body, {}, budget or BudgetSpec())


def _sse(*events) -> bytes:
    return b"".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events)


GOOD_STREAM = _sse(
    {"model": "small", "choices": [{"delta": {"role": "assistant", "content": "He"}, "finish_reason": None}]},
    {"model": "small", "choices": [{"delta": {"content": "llo"}, "finish_reason": "stop"}]},
    {"model": "small", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 3},
     "tiergate": {"cost_usd": 3.8e-7, "budget_met": True}},
    "[DONE]")
HEADERS = {"x-tiergate-model": "small", "x-tiergate-route-reason": "cheapest_feasible",
           "x-tiergate-predicted-quality": "0.3500", "content-type": "text/event-stream"}


async def _send(handler, req: PlannedRequest, timeout_s: float = 5.0):
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://t") as client:
        return await send(client, req, "auto", "tiergate", PRICES, time.perf_counter(), timeout_s)


async def test_complete_stream_is_ok_and_judged_against_its_budgets():
    budget = BudgetSpec(max_latency_ms=60_000, min_quality=0.5, max_cost_usd=1e-6)
    r = await _send(lambda request: httpx.Response(200, content=GOOD_STREAM, headers=HEADERS), _req(True, budget))
    assert r.outcome == "ok" and r.model == "small" and r.route_reason == "cheapest_feasible"
    assert (r.prompt_tokens, r.completion_tokens, r.finish_reason) == (10, 3, "stop")
    assert r.cost_usd == pytest.approx((10 * 0.02 + 3 * 0.06) / 1e6) == pytest.approx(r.gateway_cost_usd)
    assert r.ttft_s is not None and r.ttft_s <= r.e2e_s and r.tpot_s is not None
    assert (r.latency_met, r.quality_met, r.cost_met) == (True, False, True)
    assert r.predicted_quality == pytest.approx(0.35) and r.reply == "Hello" and r.score is None
    assert not r.budget_met  # no labelled item, no scored answer: a quality floor is not shown met


@pytest.mark.parametrize("handler,outcome,status", [
    (lambda q: httpx.Response(200, content=GOOD_STREAM.replace(b"data: [DONE]\n\n", b""), headers=HEADERS),
     "failed", 200),
    (lambda q: httpx.Response(200, content=_sse({"error": {"type": "server_error", "message": "boom"}}, "[DONE]")),
     "failed", 200),
    (lambda q: httpx.Response(500, text="Internal Server Error"), "failed", 500),
    (lambda q: httpx.Response(502, json={"error": {"type": "server_error", "code": "engine_error", "message": "x"}}),
     "failed", 502),
    (lambda q: httpx.Response(429, json={"error": {"type": "rate_limit", "code": "overloaded", "message": "busy"}}),
     "rejected", 429),
    (lambda q: httpx.Response(422, json={"error": {"type": "invalid_request_error", "code": "budget_infeasible",
                                                   "message": "no model"}}), "rejected", 422),
])
async def test_errors_are_classified_by_cause(handler, outcome, status):
    r = await _send(handler, _req(True))
    assert (r.outcome, r.status) == (outcome, status)
    assert r.error and not r.budget_met


async def test_transport_failures_are_lost_or_timed_out():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    def slow(request):
        raise httpx.ReadTimeout("slow", request=request)

    assert (await _send(refuse, _req(False))).outcome == "lost"
    assert (await _send(slow, _req(False))).outcome == "timeout"


async def test_non_streaming_answer_has_no_ttft():
    body = {"model": "big", "choices": [{"message": {"content": "hi"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4}, "tiergate": {"cost_usd": 8.5e-7}}
    r = await _send(lambda q: httpx.Response(200, json=body, headers={"x-tiergate-model": "big"}), _req(False))
    assert r.outcome == "ok" and r.model == "big" and r.ttft_s is None and r.tpot_s is None
    assert r.cost_usd == pytest.approx((5 * 0.05 + 4 * 0.15) / 1e6)


def test_summary_goodput_cost_and_capacity():
    from loadtests.client import RequestResult

    def res(i, model, met, cost, outcome="ok"):
        return RequestResult(index=i, klass="a", policy="p", requested_model="auto", stream=True, outcome=outcome,
                             model=model, e2e_s=0.1 * (i + 1), ttft_s=0.01, completion_tokens=10, cost_usd=cost,
                             latency_met=met)

    rs = (res(0, "small", True, 1e-6), res(1, "small", False, 1e-6), res(2, "big", True, 2e-6),
          res(3, "", None, 0.0, outcome="rejected"))
    s = summarize(Run("p", "open", 1.0, 2.0, rs))
    assert s["outcomes"] == {"ok": 3, "rejected": 1}
    assert s["budget_met_rate"] == 0.5 and s["goodput_rps"] == 1.0 and s["requests_per_s"] == 1.5
    assert s["cost_per_1k_requests_usd"] == pytest.approx(1e-3) and s["cost_per_1k_budget_met_usd"] == pytest.approx(2e-3)
    assert s["routing_mix"] == {"big": 1, "small": 2} and s["output_tokens_per_s"] == 15.0
    assert percentiles([0.1, 0.2, None, 0.3])["p50"] == pytest.approx(200.0)
    sweep = [{"policy": "x", "level": 1.0, "budget_met_rate": 1.0, "requests": 10, "cost_usd": 1.0},
             {"policy": "x", "level": 2.0, "budget_met_rate": 0.9, "requests": 10, "cost_usd": 1.0},
             {"policy": "x", "level": 3.0, "budget_met_rate": 1.0, "requests": 10, "cost_usd": 1.0},
             {"policy": "tiergate", "level": 1.0, "budget_met_rate": 1.0, "requests": 10, "cost_usd": 0.5},
             {"policy": "tiergate", "level": 2.0, "skipped": "saturated"},
             {"policy": "tiergate", "level": 4.0, "budget_met_rate": 0.5, "requests": 10, "cost_usd": 1.0},
             {"policy": "x", "level": 4.0, "skipped": "saturated"}]
    assert capacity(sweep, "budget_met_rate") == {"x": 1.0, "tiergate": 1.0}
    v = verdicts(sweep)
    assert [x["rate"] for x in v] == [1.0] and v[0]["more_met_per_usd_than_every_fixed"]  # 4.0: nothing to compare
    assert v[0]["router_met_per_usd"] == 20.0 and v[0]["fixed_met_per_usd"] == {"x": 10.0}
