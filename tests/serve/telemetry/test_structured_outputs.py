"""Structured outputs as a brittleness signal and on the trace: the check on answers of every kind
(unit), then the real Qwen2.5-Coder-0.5B in this process behind the real ingress: the request records
and the request span of a valid and a cut-off answer, JSON and tool call. The Prometheus counter
through Ray Serve is in tests/serve/test_request_fields_e2e.py."""

from __future__ import annotations

import json

import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from serve.engines.base import GenerationRequest, Message, ResponseFormat, SamplingParams, ToolCall, Tools, ToolSpec
from serve.telemetry.brittleness import BrittlenessConfig, BrittlenessMonitor
from serve.telemetry.records import RequestRecord
from serve.telemetry.structured import output_checks, structured_check
from serve.telemetry.tracing import GatewayTracer, build_tracer_provider, output_attributes
from tests.conftest import CPU_POOL

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
CITY = '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}'


def gen(response_format=None, tools=None) -> GenerationRequest:
    return GenerationRequest(request_id="r", sampling=SamplingParams(), messages=(Message("user", "hi"),),
                             response_format=response_format, tools=tools)


SCHEMA = gen(ResponseFormat("json_schema", json.dumps(PERSON)))
OBJECT = gen(ResponseFormat("json_object"))
SPECS = (ToolSpec("get_weather", CITY), ToolSpec("get_time"))


def calls(*args: str) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(id=f"call_{i}", name="get_weather", arguments=a, index=i) for i, a in enumerate(args))


def test_the_check_of_each_kind_of_answer():
    assert structured_check(SCHEMA, '{"name": "Ann", "age": 3}', ()) == "valid"
    assert structured_check(SCHEMA, '{"name": "Ann", "age": "3"}', ()) == "schema_invalid"
    assert structured_check(SCHEMA, '{"name": "Ann", "ag', ()) == "unparsable"  # cut off
    assert structured_check(OBJECT, '{"a": 1}', ()) == "valid"
    assert structured_check(OBJECT, "[1, 2]", ()) == "schema_invalid"
    auto, required = gen(tools=Tools(SPECS)), gen(tools=Tools(SPECS, choice="required"))
    assert structured_check(auto, "", calls('{"city": "Oslo"}')) == "valid"
    assert structured_check(auto, "", calls('{"city": "Oslo"}', '{"town": "Oslo"}')) == "schema_invalid"
    assert structured_check(auto, "", calls('{"city": ')) == "unparsable"
    assert structured_check(auto, "It is sunny in Oslo.", ()) == ""  # auto may answer in text
    assert structured_check(auto, 'Sure. <tool_call>\n{"name": "get_weather", "arg', ()) == "unparsable"
    assert structured_check(required, "It is sunny.", ()) == "unparsable"
    assert structured_check(gen(), "anything", ()) == ""
    # a tool call is an answer, not an empty one
    assert output_checks(auto, "", calls('{"city": "Oslo"}'), answered=True)["empty_output"] is False
    assert output_checks(auto, " ", (), answered=True)["empty_output"] is True
    assert output_checks(SCHEMA, "{", (), answered=False) == {
        "empty_output": False, "refused": False, "output_format": "json", "structured_output": ""}


def test_the_counter_by_model_format_and_result():
    registry = CollectorRegistry()
    monitor = BrittlenessMonitor(registry, BrittlenessConfig(enabled=False), scorer=None)
    base = {"endpoint": "chat", "requested_model": "auto", "route_reason": "cheapest_feasible", "status": 200}
    for model, fmt, result in (("a", "json", "valid"), ("a", "json", "unparsable"), ("a", "json", "unparsable"),
                               ("b", "tool_call", "schema_invalid"), ("b", "", "")):
        monitor.observe_output(RequestRecord(**base, model=model, output_format=fmt, structured_output=result))

    def value(**labels: str) -> float | None:
        return registry.get_sample_value("tiergate_structured_outputs_total", labels)

    assert value(model="a", format="json", result="unparsable") == 2.0
    assert value(model="a", format="json", result="valid") == 1.0
    assert value(model="b", format="tool_call", result="schema_invalid") == 1.0
    assert value(model="b", format="", result="") is None  # free text: not counted


def test_output_attributes_follow_the_genai_conventions():
    named = gen(tools=Tools(SPECS, choice="function", function="get_weather"))
    attrs = output_attributes(named, calls('{"city": "Oslo"}'))
    assert attrs["gen_ai.output.type"] == "text"
    assert json.loads(attrs["gen_ai.tool.definitions"]) == [{"type": "function", "name": "get_weather"},
                                                            {"type": "function", "name": "get_time"}]
    assert attrs["tiergate.request.tool_choice"] == "function:get_weather"
    assert attrs["tiergate.response.tool_calls"] == ["get_weather"]
    assert attrs["tiergate.response.tool_call_ids"] == ["call_0"]
    assert output_attributes(SCHEMA) == {"gen_ai.output.type": "json",
                                         "tiergate.request.response_format": "json_schema"}
    assert output_attributes(gen()) == {"gen_ai.output.type": "text"}


QWEN = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
async def real_ingress():
    """The real ingress in this process over the real Qwen2.5-Coder-0.5B engine (llama.cpp), traced."""
    from router.quality import PriorQuality
    from serve.auth import Authenticator
    from serve.clients import EngineClient
    from serve.config import parse_pool
    from serve.engines import build_engine
    from serve.ingress import IngressCore

    base = yaml.safe_load(CPU_POOL.read_text())
    model = next(m for m in base["models"] if m["name"] == QWEN)
    pool = parse_pool({"name": "structured", "models": [model], "auth": {"enabled": False}, "limits": base["limits"]})
    engine = build_engine(pool.models[0])
    await engine.start()
    exporter = InMemorySpanExporter()
    tracer = GatewayTracer(build_tracer_provider({}, exporters=[exporter], batch=False))
    core = IngressCore(pool, {QWEN: EngineClient(engine)}, PriorQuality({QWEN: 0.5}), None,
                       authenticator=Authenticator(None), tracer=tracer)
    yield core, exporter
    tracer.shutdown()
    await engine.stop()


async def test_real_answers_are_checked_recorded_and_traced(real_ingress):
    from tests.serve.conftest import ASK, WEATHER, schema_format
    from tests.serve.ingress_app import client

    core, exporter = real_ingress
    forced = {"type": "function", "function": {"name": "get_weather"}}
    asks = [  # (body, expected result): greedy, so each answer is the same every run
        ({"messages": [{"role": "user", "content": "Invent a person."}], "response_format": schema_format()}, "valid"),
        ({"messages": [{"role": "user", "content": "Invent a person."}], "response_format": schema_format(),
          "max_tokens": 3}, "unparsable"),  # cut off by max_tokens
        ({"messages": ASK, "tools": [WEATHER]}, "valid"),
        ({"messages": ASK, "tools": [WEATHER], "tool_choice": forced, "max_tokens": 4}, "unparsable"),
    ]
    async with client(core) as c:
        for body, _ in asks:
            r = await c.post("/chat/completions", json={"model": QWEN, "temperature": 0, "max_tokens": 64, **body})
            assert r.status_code == 200, r.text
    records = core.link.buffer[-len(asks):]
    assert [(r.output_format, r.structured_output) for r in records] == [
        ("json", "valid"), ("json", "unparsable"), ("tool_call", "valid"), ("tool_call", "unparsable")]
    assert records[1].finish_reason == records[3].finish_reason == "length"
    assert not records[2].empty_output  # the tool call is the answer
    spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER][-len(asks):]
    assert [s.attributes["gen_ai.output.type"] for s in spans] == ["json", "json", "text", "text"]
    assert spans[0].attributes["tiergate.request.response_format"] == "json_schema"
    call = spans[2].attributes
    assert json.loads(call["gen_ai.tool.definitions"]) == [{"type": "function", "name": "get_weather"}]
    assert call["tiergate.request.tool_choice"] == "auto" and call["tiergate.response.tool_calls"] == ("get_weather",)
    assert call["tiergate.response.tool_call_ids"][0].startswith("call_")
    assert call["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert spans[3].attributes["tiergate.request.tool_choice"] == "function:get_weather"
    assert "tiergate.response.tool_calls" not in spans[3].attributes


async def test_a_tool_call_teaches_the_latency_model_its_first_token_not_its_last(real_ingress):
    """The call's text is held back until it is complete; the latency model still learns when the first
    token came (had it learned the end, every later prediction would carry the whole call as prefill)."""
    from tests.serve.conftest import ASK, WEATHER
    from tests.serve.ingress_app import client

    core, _ = real_ingress
    seen = []
    learn = core.gateway.latency.observe
    core.gateway.latency.observe = lambda model, obs: (seen.append(obs), learn(model, obs))
    try:
        async with client(core) as c:
            r = await c.post("/chat/completions", json={"model": QWEN, "messages": ASK, "tools": [WEATHER],
                                                        "temperature": 0, "max_tokens": 48})
    finally:
        core.gateway.latency.observe = learn
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
    (obs,) = seen
    assert obs.output_tokens > 5
    decode_ms = (obs.e2e_ms - obs.ttft_ms) / (obs.output_tokens - 1)
    assert decode_ms > 5, obs  # ~37 ms a token on this CPU; ~0 if the first token were taken at the end
