"""The embedded three-model ladder through Ray Serve with the official openai client: budgets pick the
tier the profile and the live latency model say they should, and the headers carry the profile's numbers."""

from __future__ import annotations

import re

import openai
import pytest

from serve.config import load_pool
from serve.evaluation.scorer import score
from serve.quality_profile import load_quality
from tests.conftest import CPU_POOL

pytestmark = pytest.mark.e2e
SMALL, MID, LARGE = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"
SUM = "What is 45 + 27? Answer with just the number."
CAPITAL = "What is the capital of Spain? Answer with the city name only."


@pytest.fixture(scope="module")
def predicted():
    pool = load_pool(CPU_POOL)
    predictor = load_quality(pool.quality_profile, [m.name for m in pool.models]).predictor
    return lambda text: predictor.predict_one(text)


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=gateway.api, api_key="unused", max_retries=0, timeout=120)


def _ask(client, text, routing, max_tokens=8):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0,
        extra_body={"routing": routing})
    return raw.headers, raw.parse()


def test_the_pool_is_the_ladder(client):
    assert sorted(m.id for m in client.models.list().data) == sorted([SMALL, MID, LARGE, "auto"])


def _predicted_latency(client, model, text):
    """The model's predicted latency right now, read without running it: a pinned, strict request with
    an impossible latency budget is refused (422) with the best achievable value."""
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], max_tokens=8,
                                       extra_body={"routing": {"max_latency_ms": 0.001, "strict": True}})
    m = re.search(r"max_latency_ms=0\.001 \(best achievable: ([\d.e+]+) by " + re.escape(model), str(err.value))
    assert m, str(err.value)
    return float(m.group(1))


def test_a_tight_latency_budget_goes_to_smollm2(client, predicted):
    lat = {m: _predicted_latency(client, m, SUM) for m in (SMALL, MID, LARGE)}
    assert lat[SMALL] < lat[MID] < lat[LARGE], lat
    budget = (lat[SMALL] + lat[MID]) / 2  # only smollm2 is predicted to fit
    headers, body = _ask(client, SUM, {"max_latency_ms": budget, "strict": True})
    assert headers["x-tiergate-model"] == SMALL and body.model == SMALL
    assert headers["x-tiergate-route-reason"] == "cheapest_feasible"
    assert float(headers["x-tiergate-predicted-latency-ms"]) <= budget
    # with a floor only the slower models meet, the tight budget is not silently broken: strict is a 422
    # naming the latency budget and what the models that meet the floor can do; best effort says so
    p = predicted(SUM)
    assert p[SMALL] < p[MID], p
    floor = (p[SMALL] + p[MID]) / 2
    with pytest.raises(openai.UnprocessableEntityError) as err:
        _ask(client, SUM, {"max_latency_ms": budget, "min_quality": floor, "strict": True})
    assert f"max_latency_ms={budget:g} (best achievable: " in str(err.value)  # the latency budget is named
    # best effort: the decision says, before the answer (a stream's headers), that no model meets both;
    # after a plain answer the header judges what happened, and a fast answer may have met them after all
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": SUM}], max_tokens=8, temperature=0, stream=True,
        extra_body={"routing": {"max_latency_ms": budget, "min_quality": floor}})
    assert raw.headers["x-tiergate-route-reason"] == "best_effort" and raw.headers["x-tiergate-budget-met"] == "false"
    for _ in raw.parse():
        pass


def test_a_high_quality_floor_goes_to_the_1_5b_and_headers_match_the_profile(client, predicted):
    p = predicted(SUM)
    assert p[LARGE] > max(p[SMALL], p[MID]), p  # the profile rates the 1.5B best at arithmetic
    floor = (p[LARGE] + max(p[SMALL], p[MID])) / 2
    headers, body = _ask(client, SUM, {"min_quality": floor, "strict": True})
    assert headers["x-tiergate-model"] == LARGE and body.model == LARGE
    assert headers["x-tiergate-predicted-quality"] == f"{p[LARGE]:.4f}"
    cands = {c["model"]: c["predicted_quality"] for c in body.model_extra["tiergate"]["candidates"]}
    assert cands == {m: round(p[m], 4) for m in (SMALL, MID, LARGE)}
    assert score("number", ["72"], body.choices[0].message.content) == 1.0  # and it answers right


def test_a_floor_the_cheapest_meets_stays_on_the_cheapest(client, predicted):
    p = predicted(CAPITAL)
    floor = p[SMALL] - 0.05  # the profile rates smollm2 ~0.31 here (0.44 on the closed-form set, 0.24 on MMLU)
    assert floor > 0.2, p
    headers, body = _ask(client, CAPITAL, {"min_quality": floor})
    assert headers["x-tiergate-model"] == SMALL and headers["x-tiergate-predicted-quality"] == f"{p[SMALL]:.4f}"
    assert score("word", ["Madrid"], body.choices[0].message.content) == 1.0


def test_a_floor_no_model_meets_is_a_422_when_strict(client, predicted):
    p = predicted(SUM)
    with pytest.raises(openai.UnprocessableEntityError) as err:
        _ask(client, SUM, {"min_quality": min(0.999, max(p.values()) + 0.01), "strict": True})
    assert "min_quality" in str(err.value)


def test_the_value_of_an_answer_trades_quality_for_cost_on_the_ladder(client, predicted):
    p = predicted(SUM)
    assert p[LARGE] > max(p[SMALL], p[MID]), p
    # worth next to nothing: the cheapest model, every model meeting the (default) budgets
    headers, body = _ask(client, SUM, {"answer_value_usd": 1e-9})
    assert headers["x-tiergate-model"] == SMALL and headers["x-tiergate-route-reason"] == "best_value"
    info = body.model_extra["tiergate"]
    assert "an acceptable answer is worth $1e-09: smollm2-135m-instruct" in info["explanation"]
    cost = {c["model"]: c["predicted_cost_usd"] for c in info["candidates"]}
    assert cost[SMALL] < cost[MID] < cost[LARGE], cost
    # the value above which the 1.5B's better chance of a right answer pays for its higher price
    breakeven = max((cost[LARGE] - cost[m]) / (p[LARGE] - p[m]) for m in (SMALL, MID))
    headers, body = _ask(client, SUM, {"answer_value_usd": breakeven * 1.5})
    assert headers["x-tiergate-model"] == LARGE and headers["x-tiergate-route-reason"] == "best_value"
    assert headers["x-tiergate-predicted-quality"] == f"{p[LARGE]:.4f}"
    assert score("number", ["72"], body.choices[0].message.content) == 1.0
    # the same value as a header; the body's routing object would win over it
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": SUM}], max_tokens=8, temperature=0,
        extra_headers={"x-tiergate-answer-value-usd": str(breakeven * 1.5)})
    assert raw.headers["x-tiergate-model"] == LARGE
    # a value is not a limit: a quality floor still rules out the models below it
    floor = (p[LARGE] + max(p[SMALL], p[MID])) / 2
    headers, _ = _ask(client, SUM, {"answer_value_usd": 1e-9, "min_quality": floor})
    assert headers["x-tiergate-model"] == LARGE


def test_a_value_that_is_not_positive_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, SUM, {"answer_value_usd": 0})
    assert err.value.body["param"] == "routing.answer_value_usd"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": SUM}], max_tokens=4,
                                       extra_headers={"x-tiergate-answer-value-usd": "lots"})
    assert "x-tiergate-answer-value-usd must be a number" in str(err.value)


def test_the_predicted_cost_counts_the_system_prompt_the_model_reads(client):
    """The router sizes the whole prompt, not the user's turn alone: the predicted cost grows with a
    system prompt by about what the model's own tokenizer then reports reading."""
    system = "You are the support desk of an online shop; answer briefly and politely. " * 40
    bare = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": SUM}], max_tokens=4, temperature=0)
    long = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "system", "content": system}, {"role": "user", "content": SUM}],
        max_tokens=4, temperature=0)
    b, lg = bare.parse(), long.parse()
    assert b.model == lg.model  # the same model read both prompts
    read = lg.usage.prompt_tokens - b.usage.prompt_tokens  # what the engine's tokenizer counted
    assert read > 400
    price = next(m.price for m in load_pool(CPU_POOL).models if m.name == LARGE).input_per_mtok / 1e6
    cost = [{c["model"]: c["predicted_cost_usd"] for c in r.model_extra["tiergate"]["candidates"]} for r in (b, lg)]
    predicted = (cost[1][LARGE] - cost[0][LARGE]) / price  # extra prompt tokens the router expected
    assert 0.5 * read < predicted < 2 * read, (predicted, read)
