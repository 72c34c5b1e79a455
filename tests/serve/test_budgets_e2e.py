"""Spend budgets end to end: real models through Ray Serve, two ingress replicas sharing a real
Redis, the official openai client, and a real Prometheus scraping the app.

Prices are set high (integer USD per 1M tokens, so a request's true cost is an exact number of
micro-USD: prompt_tokens x input price + completion_tokens x output price) so that a handful of
SmolLM2 requests exhaust a $1 budget. The pacing key's day runs in a fixed-offset zone where it
is between 01:00 and 03:00 now, so the period has only just begun and even pace is small.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
import openai
import pytest
import yaml

from serve.api.schemas import ChatCompletionRequest
from serve.budgets import max_cost, prompt_bound
from serve.config import parse_pool
from tests.serve.test_reliability_e2e import BASE_POOL, LARGE, SMALL

pytestmark = pytest.mark.e2e

SMOL, QWEN, FREE = SMALL["name"], LARGE["name"], "smollm2-free"
PRICE = {SMOL: (2000, 4000), QWEN: (4000, 8000), FREE: (0, 0)}  # USD per 1M tokens = micro-USD per token
DAY_BUDGET = 3.0  # USD, the capped key's: a handful of SmolLM2 answers
SMALL_BUDGET = 0.5  # the zero-cost keys': one SmolLM2 answer, then exhausted
FLOOR = 0.4  # the pool's default quality floor: above SmolLM2's prior (0.3), below Qwen's (0.45)
EVEN_PACE_TARGET = 1.2  # USD that even pace allows the paced key when the test starts (~4 Qwen answers)
PACED: dict = {}  # the paced key's zone and the fraction of its day gone at deployment
KEYS = {"capped": "capped-key-0123456789", "paced": "paced-key-01234567890", "free-ok": "free-ok-key-012345678",
        "free-no": "free-no-key-012345678", "other": "other-key-0123456789"}


def early_zone(now: datetime) -> tuple[str, float]:
    """A fixed-offset IANA zone where it is between 01:00 and 03:00 now, and the fraction of its day gone."""
    for offset in range(-12, 15):
        local = now + timedelta(hours=offset)
        if 1 <= local.hour < 3:
            name = "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"  # POSIX sign
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            return name, (local - midnight).total_seconds() / 86400
    raise AssertionError("every hour of the day is 01:00-03:00 somewhere between UTC-12 and UTC+14")


def model(base: dict, name: str) -> dict:
    inp, out = PRICE[name]
    return {**base, "name": name, "price": {"input_per_mtok": inp, "output_per_mtok": out}}


@pytest.fixture(scope="module")
def budget_app(serve_cluster, redis_url, tmp_path_factory):
    zone, elapsed = early_zone(datetime.now(timezone.utc))
    keys = [
        {"name": "capped", "key": KEYS["capped"], "models": [SMOL], "budget": {"usd": DAY_BUDGET}},
        {"name": "paced", "key": KEYS["paced"], "models": [SMOL, QWEN],
         "budget": {"usd": round(EVEN_PACE_TARGET / elapsed, 2), "timezone": zone, "pace_full_at": 0.1}},
        {"name": "free-ok", "key": KEYS["free-ok"], "models": [SMOL, FREE],
         "budget": {"usd": SMALL_BUDGET, "zero_cost_models": True}},
        {"name": "free-no", "key": KEYS["free-no"], "models": [SMOL, FREE], "budget": {"usd": SMALL_BUDGET}},
        {"name": "other", "key": KEYS["other"]},
    ]
    keys_file = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"keys": keys}))
    once = {"rate": 1.0, "max_per_minute": 4, "burst": 2, "max_cost_usd_per_hour": None, "max_in_flight": 1}
    cfg = {"name": "budgets", "ingress_replicas": 2, "state": {"store": "redis", "redis_url": redis_url},
           "models": [model(SMALL, SMOL), model(LARGE, QWEN), model(SMALL, FREE)],
           "routing": {"max_latency_ms": 120000, "min_quality": FLOOR},
           "limits": {**BASE_POOL["limits"], "default_max_tokens": 16},
           "auth": {"enabled": True, "keys_file": str(keys_file)},
           # brittleness shadow calls (to the strongest model) are the operator's spend, never a key's
           "monitoring": {"brittleness": {"shadow": once, "probe": {**once, "rate": 0.0}}}}
    parse_pool(cfg)  # a bad config fails here, not as a deployment that never gets ready
    PACED.update(zone=zone, elapsed=elapsed)
    yield serve_cluster.deploy("budgets", {"pool_config": cfg}, "/budgets", timeout=600)
    from ray import serve

    serve.delete("budgets")


def client(app, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=app.api, api_key=KEYS[key], max_retries=0, timeout=180)


async def report(app, key: str) -> dict:
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(f"{app.api}/tiergate/budget", headers={"authorization": f"Bearer {KEYS[key]}"})
    assert r.status_code == 200, r.text
    return r.json()


async def spent_micro(app, key: str) -> int:
    (row,) = (await report(app, key))["budgets"]
    return round(row["spent_usd"] * 1_000_000)


def true_cost(model_name: str, usage) -> int:
    """Micro-USD, from the answer's own usage."""
    inp, out = PRICE[model_name]
    return usage.prompt_tokens * inp + usage.completion_tokens * out


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Give one word that rhymes with cat. ({i})"}]


async def ask(c: openai.AsyncOpenAI, i: int, *, stream: bool, model_name: str = "auto", max_tokens: int = 16,
              **extra):
    """One request: (status, answering model, true cost in micro-USD, headers, body or None)."""
    try:
        if stream:
            raw = await c.chat.completions.with_raw_response.create(
                model=model_name, messages=messages(i), max_tokens=max_tokens, temperature=0, stream=True,
                stream_options={"include_usage": True}, **extra)
            usage, answered = None, None
            async for chunk in raw.parse():
                answered = chunk.model or answered
                usage = chunk.usage or usage
            assert usage is not None, "a stream asked for usage must end with it"
            return 200, answered, true_cost(answered, usage), raw.headers, None
        raw = await c.chat.completions.with_raw_response.create(
            model=model_name, messages=messages(i), max_tokens=max_tokens, temperature=0, **extra)
        body = raw.parse()
        return 200, body.model, true_cost(body.model, body.usage), raw.headers, body
    except openai.RateLimitError as err:
        assert err.code == "insufficient_quota", err.body
        return 429, None, 0, err.response.headers, err.body


async def settled(app, key: str, below: int | None = None, timeout: float = 60) -> int:
    """The key's spend once nothing of it is in flight any more: two equal reads a second apart
    (and, for a request whose hang-up the gateway has yet to notice, below its reservation)."""
    last, deadline = await spent_micro(app, key), time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = await spent_micro(app, key)
        if now == last and (below is None or now < below):
            return now
        last = now
    raise AssertionError(f"{key}'s spend did not settle within {timeout}s")


def max_request_cost(i: int, model_name: str = SMOL, max_tokens: int = 16, **sent) -> int:
    """The most one such request can cost (what admission reserves for it), micro-USD."""
    body = ChatCompletionRequest.model_validate({"model": "auto", "messages": messages(i), "max_tokens": max_tokens,
                                                 "temperature": 0, **sent})
    cfg = parse_pool({"name": "p", "models": [model(SMALL, SMOL), model(LARGE, QWEN)]})
    return max_cost(cfg.model(model_name), prompt_bound(body), max_tokens)


# ----------------------------------------------------------------------------- (a) the budget holds
async def test_two_replicas_concurrent_load_never_spend_past_the_budget_and_streams_pay_their_usage(budget_app):
    app = budget_app
    async with httpx.AsyncClient(timeout=30) as http:  # the proxy reaches both ingress replicas
        replicas = set()
        for _ in range(40):
            r = await http.get(f"{app.api}/tiergate/load", headers={"authorization": f"Bearer {KEYS['other']}"})
            replicas.add(r.json()["replica"])
            if len(replicas) == 2:
                break
    assert len(replicas) == 2, "the proxy never reached a second ingress replica"
    async with client(app, "capped") as c:
        assert await spent_micro(app, "capped") == 0

        # a streamed answer is charged exactly what its usage says
        status, answered, cost, headers, _ = await ask(c, 0, stream=True)
        assert (status, answered) == (200, SMOL) and cost > 0
        assert await settled(app, "capped") == cost
        # a stream the client abandons after its first token is charged the tokens it was given
        stream = await c.chat.completions.create(model="auto", messages=messages(0), max_tokens=64, temperature=0,
                                                 stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await stream.close()
        reserved = max_request_cost(0, max_tokens=64, stream=True)
        abandoned = await settled(app, "capped", below=cost + reserved) - cost
        # the same prompt answered with one token, not streamed: its usage says what the prompt costs
        raw = await c.chat.completions.with_raw_response.create(model="auto", messages=messages(0), max_tokens=1,
                                                                temperature=0)
        full = raw.parse()
        expected = await settled(app, "capped")
        assert expected - cost - abandoned == true_cost(SMOL, full.usage)
        assert float(raw.headers["x-tiergate-budget-remaining-usd"]) == pytest.approx(DAY_BUDGET - expected / 1e6)
        generated, rest = divmod(abandoned - full.usage.prompt_tokens * PRICE[SMOL][0], PRICE[SMOL][1])
        assert rest == 0 and 1 <= generated < 64, abandoned  # its prompt and the tokens sent: not $0, not the maximum

        # concurrent load, half streamed, through both replicas: 2 waves of 12 at once
        outcomes, streamed = [], []
        for wave in range(2):
            outcomes += await asyncio.gather(*(ask(c, 100 * wave + i, stream=i % 2 == 0) for i in range(12)))
            streamed += [i % 2 == 0 for i in range(12)]
        # then one at a time until refused, so that the budget is used up
        for i in range(20):
            outcomes.append(await ask(c, 1000 + i, stream=i % 2 == 0))
            streamed.append(i % 2 == 0)
            if outcomes[-1][0] == 429:
                break
        statuses = Counter(o[0] for o in outcomes)
        assert set(statuses) == {200, 429}, statuses
        served = [o for o in outcomes if o[0] == 200]
        spent = await settled(app, "capped")
        expected += sum(o[2] for o in served)
        one_max = max_request_cost(1000, stream=True, stream_options={"include_usage": True})
        n_streamed = sum(1 for o, s in zip(outcomes, streamed) if s and o[0] == 200)
        print(f"\n(a) budget ${DAY_BUDGET:.2f}, 2 ingress replicas, Redis: {statuses[200]} served under load "
              f"({n_streamed} streamed), {statuses[429]} refused; spent ${spent / 1e6:.6f} = sum of usage costs "
              f"${expected / 1e6:.6f}; one request's max cost ${one_max / 1e6:.6f}; abandoned stream charged its "
              f"prompt + {generated} tokens")
        assert spent == expected  # every answer, streamed or not, charged its true cost, nothing else
        assert spent <= DAY_BUDGET * 1e6 < DAY_BUDGET * 1e6 + one_max  # never past the budget (let alone X + one)
        assert spent > DAY_BUDGET * 1e6 - one_max  # and used up: the last refusal could not afford one more
        assert statuses[200] >= 3 and n_streamed >= 1


# ----------------------------------------------------------------------------- (b) pacing
async def test_ahead_of_pace_the_mix_moves_to_cheaper_models_within_each_requests_own_budget(budget_app):
    app = budget_app
    async with client(app, "paced") as c:
        rows = []
        after_defaults = 0
        for i in range(80):
            (budget,) = (await report(app, "paced"))["budgets"]
            lowered = budget["pace"]["floor_lowered_by"]
            phase = "before" if lowered == 0 else "after" if lowered >= 1 else "during"
            kind = "default" if i % 2 == 0 else "own floor"
            extra = {} if kind == "default" else {"extra_body": {"routing": {"min_quality": FLOOR}}}
            status, answered, cost, headers, body = await ask(c, 2000 + i, stream=False, **extra)
            assert status == 200, body
            rows.append({"phase": phase, "kind": kind, "model": answered, "reason": headers["x-tiergate-route-reason"],
                         "quality": float(headers["x-tiergate-predicted-quality"]),
                         "met": headers["x-tiergate-budget-met"], "why": body.model_extra["tiergate"]["explanation"],
                         "ahead": budget["pace"]["ahead_usd"]})
            after_defaults += phase == "after" and kind == "default"
            if after_defaults >= 6:
                break
        mix = {(ph, k): Counter(r["model"] for r in rows if (r["phase"], r["kind"]) == (ph, k))
               for ph in ("before", "during", "after") for k in ("default", "own floor")}
        print(f"\n(b) paced key: budget ${(await report(app, 'paced'))['budgets'][0]['budget_usd']} per day in "
              f"{PACED['zone']}, {PACED['elapsed']:.3f} of its day gone at start; routing mix:")
        for (ph, k), counts in mix.items():
            print(f"    {ph:6s} {k:9s} {dict(counts)}")
        before = [r for r in rows if r["phase"] == "before"]
        after = [r for r in rows if r["phase"] == "after"]
        assert len([r for r in before if r["kind"] == "default"]) >= 2 and after_defaults >= 6, mix
        for r in before:  # behind pace: the pool's floor holds, Qwen answers everything
            assert (r["model"], r["reason"]) == (QWEN, "cheapest_feasible"), r
        for r in after:
            if r["kind"] == "default":  # ahead: the default floor is dropped, the cheaper SmolLM2 answers, says why
                assert (r["model"], r["reason"], r["met"]) == (SMOL, "budget_paced", "true"), r
                assert r["why"].startswith("budget_paced: key paced has spent $") and "ahead of even pace" in r["why"]
                assert f"unpaced: {QWEN}" in r["why"]
            else:  # the request's own floor is its own: kept, Qwen still answers
                assert (r["model"], r["reason"], r["met"]) == (QWEN, "cheapest_feasible", "true"), r
                assert r["quality"] >= FLOOR
        share_before = sum(r["model"] == SMOL for r in before) / len(before)
        share_after = sum(r["model"] == SMOL for r in after) / len(after)
        assert share_after > share_before


# ----------------------------------------------------------------------------- (c) exhaustion
def next_utc_midnight() -> datetime:
    return (datetime.now(timezone.utc) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


async def test_exhaustion_is_a_429_with_its_reset_and_zero_cost_models_answer_when_configured(budget_app):
    app = budget_app
    for key in ("free-ok", "free-no"):
        async with client(app, key) as c:
            status, answered, _, _, _ = await ask(c, 3000, stream=False, model_name=SMOL)
            assert (status, answered) == (200, SMOL)
            status, _, _, headers, body = await ask(c, 3001, stream=False, model_name=SMOL)
        reset = next_utc_midnight()
        assert status == 429 and body["type"] == "insufficient_quota" and body["code"] == "insufficient_quota"
        assert body["resets_at"] == reset.isoformat()
        assert f"has used its ${SMALL_BUDGET:g} day budget" in body["message"]
        assert f"resets at {reset.isoformat()}" in body["message"]
        assert abs(int(headers["retry-after"]) - (reset - datetime.now(timezone.utc)).total_seconds()) < 30
    async with client(app, "free-ok") as ok:
        for name in (FREE, "auto"):  # exhausted, zero_cost_models: the free model still answers, charged nothing
            before = await spent_micro(app, "free-ok")
            status, answered, cost, headers, _ = await ask(ok, 3002, stream=False, model_name=name)
            assert (status, answered, cost) == (200, FREE, 0)
            assert float(headers["x-tiergate-cost-usd"]) == 0 and await settled(app, "free-ok") == before
    async with client(app, "free-no") as no:
        status, _, _, _, body = await ask(no, 3003, stream=False, model_name=FREE)
    assert status == 429 and "no model priced 0 may be used meanwhile" in body["message"]


async def test_the_budget_endpoint_answers_for_the_callers_own_key_only(budget_app):
    async with httpx.AsyncClient(timeout=30) as http:
        none = await http.get(f"{budget_app.api}/tiergate/budget")
        bad = await http.get(f"{budget_app.api}/tiergate/budget", headers={"authorization": "Bearer not-a-key-at-all"})
    assert none.status_code == 401 and bad.status_code == 401
    assert none.json()["error"]["code"] == "missing_api_key"
    other = await report(budget_app, "other")
    assert other["key"] == "other" and other["budgets"] == []  # no budget, and nothing of anyone else's
    capped = await report(budget_app, "capped")
    (row,) = capped["budgets"]
    assert (capped["key"], row["holder"], row["name"], row["budget_usd"], row["period"]) == (
        "capped", "key", "capped", DAY_BUDGET, "day")
    assert set(row["pace"]) == {"elapsed", "expected_usd", "ahead_usd", "ahead", "pacing", "floor_lowered_by"}


# ----------------------------------------------------------------------------- (d) panels
async def test_spend_and_savings_panels_return_data_from_a_real_prometheus_scrape(budget_app, tmp_path):
    from tests.deploy.queries import dashboard_queries
    from tests.deploy.test_dashboard_queries import _check_all, _scrape

    panels = ("Spend by key", "Spend by model and route class", "Running savings against always-largest",
              "Budget used this period", "Spend pace")
    queries = [q for q in dashboard_queries() if any(p in q.where for p in panels)]
    assert len(queries) == 6, [q.where for q in queries]
    prom = _scrape(tmp_path, budget_app.base_url)

    def value(expr: str) -> float:
        result = prom.query(expr)["result"]
        return float(result[0]["value"][1]) if result else 0.0

    try:
        async with client(budget_app, "paced") as c:
            for i in range(3):  # SmolLM2 answers spread over scrapes, so that increase() sees them
                assert (await ask(c, 4000 + i, stream=False, model_name=SMOL))[0] == 200
                await asyncio.sleep(1.5)
            _check_all(prom, queries, queries, deadline_s=90)
            # shadow calls re-ask the strongest model (Qwen) for a sample of SmolLM2 answers, rate-capped: the
            # operator's spend. Ask until one has run; the key's spend must not contain it.
            deadline = time.monotonic() + 120
            while value("sum(tiergate_shadow_cost_usd_total)") == 0 and time.monotonic() < deadline:
                assert (await ask(c, 4100, stream=False, model_name=SMOL))[0] == 200
                await asyncio.sleep(3)
        shadow = value("sum(tiergate_shadow_cost_usd_total)")
        assert shadow > 0, "no shadow call ran"
        spent = await settled(budget_app, "paced") / 1e6
        deadline = time.monotonic() + 30  # the metric catches up with the store within a few scrapes
        while abs(value('sum(tiergate_spend_usd_total{key="paced"})') - spent) > 1e-6 and time.monotonic() < deadline:
            await asyncio.sleep(1)
        metric = value('sum(tiergate_spend_usd_total{key="paced"})')
        print(f"\n(d) scraped: paced key spend ${spent:.6f} (store) / ${metric:.6f} (metric); operator shadow "
              f"spend ${shadow:.6f}; savings " + json.dumps({r["metric"].get("key", ""): round(float(r["value"][1]), 6)
                                                             for r in prom.query("tiergate_savings_usd")["result"]}))
        assert metric == pytest.approx(spent, abs=1e-6)  # what the key was charged, and no shadow call in it
    finally:
        prom.close()
