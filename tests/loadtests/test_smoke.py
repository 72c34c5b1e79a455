"""The load test in miniature, on the real CPU pool: seconds of open- and closed-loop traffic.

It fails if any request is lost, times out, or fails without a cause; the one class whose
strict budget no model can meet must be refused with a 422, never lost. Answers to labelled
items are scored against gold, and a quality budget is met exactly when the answer is correct.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.client import pool_prices
from loadtests.policies import make_policy
from loadtests.runner import Run, http_client, run_closed, run_open
from loadtests.scenario import PlannedRequest, Scenario, load_scenario, plan
from loadtests.summary import problems, summarize
from serve.evaluation.scorer import score_item

pytestmark = pytest.mark.e2e

SMOKE = Path(__file__).resolve().parents[2] / "loadtests" / "scenarios" / "smoke.yaml"


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(SMOKE)


def check_run(run: Run, scenario: Scenario, reqs: list[PlannedRequest], prices: dict) -> None:
    n = len(reqs)
    assert sorted(r.index for r in run.results) == list(range(n)), "a planned request has no result"
    assert problems(run.results) == []
    for r in run.results:
        klass = scenario.klass(r.klass)
        planned = reqs[r.index]
        if klass.budget.strict:
            assert (r.outcome, r.status) == ("rejected", 422), r
            assert "budget" in r.error.lower()
            continue
        assert r.outcome == "ok", r
        assert r.model in prices
        assert 1 <= r.completion_tokens <= planned.body["max_tokens"] and r.prompt_tokens > 0
        assert r.reply, r  # the answer's text came through (streams: concatenated)
        assert r.finish_reason in ("stop", "length")
        assert r.e2e_s is not None and r.e2e_s > 0
        if klass.stream:
            assert r.ttft_s is not None and 0 < r.ttft_s <= r.e2e_s
        # the gateway's reported cost is the pool's price times the usage it returned
        assert r.gateway_cost_usd == pytest.approx(r.cost_usd, rel=1e-9, abs=1e-15)
        assert r.cost_usd > 0
        if klass.budget.max_cost_usd is not None:
            assert r.cost_met is (r.cost_usd <= klass.budget.max_cost_usd)
        if planned.item is not None:  # scored against gold; a quality budget is met by a correct answer only
            assert r.item_id == planned.item["id"]
            assert r.score == score_item(dict(planned.item), r.reply)
            if klass.budget.min_quality is not None:
                assert r.quality_met is (r.score == 1.0)
        else:
            assert r.score is None and r.quality_met is None
    summary = summarize(run, scenario.floors())
    assert sum(summary["outcomes"].values()) == n
    assert 0 < summary["requests_per_s"] and summary["goodput_rps"] <= summary["requests_per_s"]
    assert sum(summary["routing_mix"].values()) == summary["outcomes"]["ok"]
    labelled = [r for r in run.results if r.item_id]
    assert summary["scored_requests"] == len(labelled) > 0
    assert summary["correct"] == sum(r.score == 1.0 for r in labelled)


async def test_open_loop_every_request_accounted_for(gateway, scenario):
    rate, n = scenario.load.rates[0], scenario.load.requests_per_rate
    reqs = plan(scenario, n, rate)
    assert {r.klass for r in reqs} == {c.name for c in scenario.classes}, "the smoke plan must cover every class"
    scores = []
    async with http_client(gateway.base_url) as client:
        prices = await pool_prices(client)
        for name in ("tiergate", "random"):
            run = await run_open(client, reqs, rate, name, make_policy(name, prices, scenario.seed), prices,
                                 scenario.load.timeout_s)
            check_run(run, scenario, reqs, prices)
            scores += [r.score for r in run.results if r.score is not None]
            if name == "random":  # pinned from the client side: the model asked for is the one that answered
                assert all(r.model == r.requested_model for r in run.results if r.outcome == "ok")
    # greedy answers to closed-form items (sums, capitals, ...): some are right, so scoring reads the real
    # reply (a stream's text concatenated), not an empty or partial one
    assert 1.0 in scores, scores


async def test_closed_loop(gateway, scenario):
    n, conc = scenario.load.requests_per_concurrency, scenario.load.concurrency[0]
    reqs = plan(scenario, n, None)
    async with http_client(gateway.base_url) as client:
        prices = await pool_prices(client)
        run = await run_closed(client, reqs, conc, "always-smallest", make_policy("always-smallest", prices), prices,
                               scenario.load.timeout_s)
    check_run(run, scenario, reqs, prices)
    cheapest = min(prices, key=lambda m: prices[m].output_per_mtok)
    assert {r.model for r in run.results if r.outcome == "ok"} == {cheapest}
