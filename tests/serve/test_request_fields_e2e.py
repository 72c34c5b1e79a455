"""Sampling controls, structured outputs, tools and capability routing end to end: the real GGUF
models through Ray Serve, asked with the official openai client.

Each sampling test compares against the same request without the field, so it fails if the
field were dropped on the way to the engine. The app serves SmolLM2-135M (declared able to do
constrained JSON) and Qwen2.5-Coder-0.5B (tools and JSON), both from the CPU pool.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.serve.conftest import (
    ASK,
    BASE,
    MODELS,
    PERSON,
    QWEN,
    SMALL,
    WEATHER,
    WEATHER_PARAMS,
    schema_format,
)

pytestmark = pytest.mark.e2e

if QWEN not in MODELS:
    pytest.skip(f"the CPU pool has no {QWEN}", allow_module_level=True)

REPEAT = [{"role": "user", "content": "Write cat cat cat cat cat cat."}]
COLOURS = [{"role": "user", "content": "List five colours."}]


@pytest.fixture(scope="module")
def client(fields_app):
    with openai.OpenAI(base_url=fields_app.api, api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def say(client, messages=REPEAT, model=SMALL, max_tokens=32, **kw) -> str:
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, **kw)
    return r.choices[0].message.content


# --------------------------------------------------------------------------- refused fields
def test_unknown_and_unsupported_fields_are_400_naming_them(client):
    with pytest.raises(openai.BadRequestError) as err:
        say(client, extra_body={"top_x": 3})
    assert err.value.body["param"] == "top_x" and "top_x" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        say(client, functions=[{"name": "f", "parameters": {"type": "object"}}])
    assert err.value.body["param"] == "functions" and err.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as err:
        say(client, n=2)
    assert err.value.body["param"] == "n" and "n=1" in err.value.body["message"]


def test_the_priority_header_is_read_through_ray_serve(client):
    with pytest.raises(openai.BadRequestError) as err:
        say(client, extra_headers={"x-tiergate-priority": "urgent"})
    assert err.value.body["param"] == "x-tiergate-priority"
    assert "must be one of high, normal, low" in err.value.body["message"]
    assert say(client, max_tokens=4, extra_headers={"x-tiergate-priority": "low"})  # a lower class is allowed


# --------------------------------------------------------------------------- sampling controls
def test_each_penalty_changes_the_output(client):
    base = say(client, temperature=0).lower().count("cat")
    assert base >= 10  # greedy SmolLM2 repeats the word for the whole answer
    presence = say(client, temperature=0, presence_penalty=2.0).lower().count("cat")
    frequency = say(client, temperature=0, frequency_penalty=1.0).lower().count("cat")
    repetition = say(client, temperature=0, extra_body={"repetition_penalty": 1.5}).lower().count("cat")
    assert presence < base and frequency < base and repetition < base, (base, presence, frequency, repetition)


@pytest.fixture(scope="module")
def vocab():
    from llama_cpp import Llama

    from serve.config import ModelConfig
    from serve.weights import resolve_weights

    path = resolve_weights(ModelConfig.model_validate(MODELS[SMALL]).weights)
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)

    def token(text: str) -> int:
        (tid,) = llm.tokenize(text.encode(), add_bos=False, special=False)
        return tid

    yield token
    llm.close()


def test_logit_bias_bans_and_forces_tokens(client, vocab):
    plain = say(client, COLOURS, temperature=0)
    assert "Red" in plain
    banned = say(client, COLOURS, temperature=0, logit_bias={str(vocab(" Red")): -100})
    assert "Red" not in banned and banned
    r = client.chat.completions.create(model=SMALL, messages=COLOURS, temperature=0, max_tokens=6,
                                       logit_bias={str(vocab(" cat")): 100})
    assert r.choices[0].message.content.split() == ["cat"] * r.usage.completion_tokens


def test_top_k_and_min_p_narrow_sampling_to_the_greedy_token(client):
    greedy = say(client, COLOURS, temperature=0, max_tokens=16)
    sampled = [say(client, COLOURS, temperature=1.5, seed=s, max_tokens=16) for s in (1, 2)]
    assert any(s != greedy for s in sampled)  # plain sampling at this temperature leaves the greedy path
    assert say(client, COLOURS, temperature=1.5, seed=1, max_tokens=16, extra_body={"top_k": 1}) == greedy
    assert say(client, COLOURS, temperature=1.5, seed=2, max_tokens=16, extra_body={"min_p": 1.0}) == greedy


# --------------------------------------------------------------------------- structured outputs
def test_json_schema_answer_validates_streamed_and_not(client):
    ask = [{"role": "user", "content": "Invent a person."}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ask, temperature=0, max_tokens=64,
                                                           response_format=schema_format())
    r = raw.parse()
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
    assert "supporting json_schema" in r.model_extra["tiergate"]["explanation"]
    # sampled: a small model's strings wander, but the grammar keeps them JSON and within maxLength
    stream = client.chat.completions.create(model=SMALL, messages=ask, temperature=0.7, seed=3, max_tokens=128,
                                            response_format=schema_format(), stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), PERSON)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_json_object_answer_parses(client):
    text = say(client, COLOURS, temperature=0, max_tokens=64, response_format={"type": "json_object"})
    assert isinstance(json.loads(text), dict)


# --------------------------------------------------------------------------- tools and capabilities
def test_tools_route_only_to_a_model_that_has_them(client):
    with pytest.raises(openai.BadRequestError) as err:
        say(client, ASK, tools=[WEATHER])
    assert err.value.body["param"] == "tools" and f"model {SMALL} does not support tools" in err.value.body["message"]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK, tools=[WEATHER], temperature=0,
                                                           max_tokens=48)
    assert raw.headers["x-tiergate-model"] == QWEN
    assert "supporting tools" in raw.parse().model_extra["tiergate"]["explanation"]
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMS)


def test_forced_tool_call_streams_as_deltas_and_the_follow_up_completes(client):
    stream = client.chat.completions.create(
        model="auto", messages=ASK, tools=[WEATHER], temperature=0, max_tokens=48, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    chunks = [c for c in stream if c.choices]
    deltas = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
    assert chunks[-1].choices[0].finish_reason == "tool_calls" and deltas
    assert {d.index for d in deltas} == {0} and deltas[0].id and deltas[0].function.name == "get_weather"
    args = json.loads("".join(d.function.arguments or "" for d in deltas))
    jsonschema.validate(args, WEATHER_PARAMS)
    follow = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": deltas[0].id, "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps(args)}}]},
        {"role": "tool", "tool_call_id": deltas[0].id, "content": json.dumps({"temperature_c": 18, "sky": "sunny"})},
    ]
    r = client.chat.completions.create(model="auto", messages=follow, tools=[WEATHER], tool_choice="none",
                                       temperature=0, max_tokens=48)
    assert r.model == QWEN and r.choices[0].finish_reason in ("stop", "length")
    assert r.choices[0].message.content and not r.choices[0].message.tool_calls
    first = client.chat.completions.create(model=QWEN, messages=ASK, temperature=0, max_tokens=1)
    assert r.usage.prompt_tokens > first.usage.prompt_tokens + 20  # the call and its result were in the prompt


def test_a_capability_no_model_has_is_a_400(serve_cluster):
    cfg = {"name": "plain", "models": [{**MODELS[SMALL], "capabilities": []}], "auth": {"enabled": False},
           "limits": BASE["limits"]}
    plain = serve_cluster.deploy("plain", {"pool_config": cfg}, "/plain")
    r = httpx.post(f"{plain.api}/chat/completions", timeout=60, json={
        "model": "auto", "messages": COLOURS, "max_tokens": 4, "response_format": schema_format()})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "response_format" and err["code"] == "unsupported_capability"
    assert "json_schema" in err["message"] and "no model in the pool does" in err["message"]
    r = httpx.post(f"{plain.api}/chat/completions", timeout=120, json={
        "model": "auto", "messages": COLOURS, "max_tokens": 4})
    assert r.status_code == 200  # the same app serves plain requests


def test_unparsable_structured_outputs_are_counted_by_model(client, fields_app):
    from tests.serve.test_gateway_e2e import _counter

    def counts() -> dict[tuple[str, str, str], float]:
        text = httpx.get(f"{fields_app.base_url}/metrics", timeout=30).text
        return {(m, f, r): _counter(text, "tiergate_structured_outputs_total", model=m, format=f, result=r)
                for m, f, r in ((SMALL, "json", "valid"), (SMALL, "json", "unparsable"),
                                (QWEN, "tool_call", "valid"), (QWEN, "tool_call", "unparsable"))}

    before = counts()
    ask = [{"role": "user", "content": "Invent a person."}]
    cut = client.chat.completions.create(model=SMALL, messages=ask, temperature=0, max_tokens=3,
                                         response_format=schema_format())
    assert cut.choices[0].finish_reason == "length"  # the JSON is cut off: unparsable
    whole = say(client, ask, temperature=0, max_tokens=64, response_format=schema_format())
    jsonschema.validate(json.loads(whole), PERSON)
    forced = client.chat.completions.create(model=QWEN, messages=ASK, tools=[WEATHER], temperature=0, max_tokens=4,
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert forced.choices[0].finish_reason == "length" and not forced.choices[0].message.tool_calls
    call = client.chat.completions.create(model=QWEN, messages=ASK, tools=[WEATHER], temperature=0, max_tokens=48)
    assert call.choices[0].finish_reason == "tool_calls"
    assert {k: v - before[k] for k, v in counts().items()} == {
        (SMALL, "json", "valid"): 1, (SMALL, "json", "unparsable"): 1,
        (QWEN, "tool_call", "valid"): 1, (QWEN, "tool_call", "unparsable"): 1}


def test_models_list_their_capabilities(client):
    caps = {m.id: m.model_extra.get("capabilities") for m in client.models.list().data if m.id != "auto"}
    assert caps == {SMALL: ["json_schema"], QWEN: ["tools", "json_schema"]}
