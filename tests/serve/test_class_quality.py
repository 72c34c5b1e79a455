"""Tool and schema requests as their own quality class: the profile's measured class accuracies,
loaded with the real shipped encoder, become the predicted quality of every request of the class,
and the router picks the cheapest capable model that meets the floor on it. The gateway runs on
the in-repo fake engine here; test_class_routing_e2e.py asks the real ladder through Ray Serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.errors import ProfileError
from serve.api.requests import quality_class
from serve.api.schemas import ChatCompletionRequest, CompletionRequest
from serve.clients import EngineClient
from serve.config import parse_pool
from serve.data import SHIPPED_ENCODER
from serve.engines.fake import FakeArgs, FakeEngine
from serve.gateway import Gateway
from serve.quality_profile import load_quality, read_profile, write_profile
from tests.conftest import ROOT

SHIPPED = ROOT / "deploy" / "profiles" / "cpu-default.json"
SMALL, MID, BIG = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"
CLASSES = {"tools": {"accuracy": {MID: 0.5, BIG: 0.8}, "n": 24, "source": "test"},
           "json_schema": {"accuracy": {SMALL: 0.2, MID: 0.6, BIG: 0.7}, "n": 24, "source": "test"}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}


def profile_copy(tmp_path: Path, name: str = "profile.json", **changes) -> Path:
    """The shipped profile without class accuracies, its encoder referred to absolutely, with
    ``changes`` to its JSON."""
    data = json.loads(SHIPPED.read_text())
    data.pop("classes", None)
    data["encoder"]["ref"] = str(SHIPPED_ENCODER)
    data.update(changes)
    out = tmp_path / name
    out.write_text(json.dumps(data))
    return out


def chat(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "auto", "messages": [{"role": "user", "content": "What is the weather in Oslo?"}], **kw})


def test_class_accuracies_load_into_the_predictor_and_survive_a_rewrite(tmp_path):
    path = profile_copy(tmp_path, classes=CLASSES)
    models = json.loads(SHIPPED.read_text())["models"]
    loaded = load_quality(path, models)
    assert loaded.predictor.class_quality("tools") == {MID: 0.5, BIG: 0.8}
    assert loaded.predictor.class_quality("json_schema") == CLASSES["json_schema"]["accuracy"]
    assert loaded.predictor.class_quality("essay") is None
    # prompts are still scored by the learned heads, as without classes
    plain = load_quality(profile_copy(tmp_path, "plain.json"), models).predictor
    assert plain.class_quality("tools") is None
    assert loaded.predictor.predict(["What is 7 + 8?"]) == plain.predict(["What is 7 + 8?"])
    again = tmp_path / "again.json"
    write_profile(read_profile(path), again)
    assert json.loads(again.read_text())["classes"] == CLASSES


@pytest.mark.parametrize(("classes", "message"), [
    ({"tools": {"accuracy": {MID: 1.5}, "n": 3}}, "must be in \\[0, 1\\]"),
    ({"tools": {"accuracy": {"gpt-9": 0.5}, "n": 3}}, "unknown model\\(s\\) gpt-9"),
    ({"tools": {"accuracy": {MID: 0.5}}}, "missing field 'n'"),
    ({"tools": [0.5]}, "is not an object"),
    ([1], "'classes' has the wrong type"),
])
def test_bad_class_accuracies_are_profile_errors(tmp_path, classes, message):
    with pytest.raises(ProfileError, match=message):
        read_profile(profile_copy(tmp_path, classes=classes))


def test_the_quality_class_of_a_request():
    assert quality_class(chat(tools=[TOOL])) == "tools"
    assert quality_class(chat(tools=[TOOL], tool_choice="required")) == "tools"
    assert quality_class(chat(tools=[TOOL], tool_choice="none")) is None  # answered in text
    assert quality_class(chat(response_format=SCHEMA)) == "json_schema"
    assert quality_class(chat(response_format={"type": "json_object"})) == "json_schema"
    assert quality_class(chat(response_format={"type": "text"})) is None
    assert quality_class(chat()) is None
    assert quality_class(CompletionRequest.model_validate({"model": "auto", "prompt": "hi"})) is None


@pytest.fixture
async def gateway(tmp_path):
    """The ladder's three names and capabilities on fake engines, with the shipped profile plus classes."""
    models = []
    for name, price, caps in ((SMALL, 0.19, ["json_schema"]), (MID, 0.51, ["tools", "json_schema"]),
                              (BIG, 0.81, ["tools", "json_schema"])):
        models.append({"name": name, "engine": "fake", "quantization": "none", "context_length": 4096,
                       "price": {"input_per_mtok": price, "output_per_mtok": price}, "prior_quality": 0.5,
                       "latency_prior": {"ttft_ms": 5, "tpot_ms": 1}, "capabilities": caps})
    pool = parse_pool({"name": "t", "models": models})
    clients = {}
    for m in pool.models:
        engine = FakeEngine(m, FakeArgs())
        await engine.start()
        clients[m.name] = EngineClient(engine)
    quality = load_quality(profile_copy(tmp_path, classes=CLASSES), [m.name for m in pool.models]).predictor
    return Gateway(pool, clients, quality, lambda rec: None)


@pytest.mark.parametrize(("floor", "model"), [(0.4, MID), (0.5, MID), (0.51, BIG), (0.8, BIG)])
async def test_a_tool_request_goes_to_the_cheapest_model_meeting_the_floor_on_its_class(gateway, floor, model):
    call = await gateway.route("chat", chat(tools=[TOOL], routing={"min_quality": floor}), {})
    d = call.decision
    assert d.model == model and d.reason.value == "cheapest_feasible"
    assert d.prediction.quality == CLASSES["tools"]["accuracy"][model]
    assert {c.model: c.quality for c in d.candidates} == CLASSES["tools"]["accuracy"]
    assert call.route_request.quality_class == "tools"
    assert "measured accuracy on tools requests" in d.explanation


async def test_schema_requests_use_their_class_and_plain_ones_the_prompt(gateway):
    call = await gateway.route("chat", chat(response_format=SCHEMA, routing={"min_quality": 0.65}), {})
    assert call.model == BIG and call.decision.prediction.quality == 0.7
    call = await gateway.route("chat", chat(response_format=SCHEMA, routing={"min_quality": 0.1}), {})
    assert call.model == SMALL and call.route_request.quality_class == "json_schema"
    # above every model's class accuracy: the best of them, flagged, the class named
    call = await gateway.route("chat", chat(tools=[TOOL], routing={"min_quality": 0.9}), {})
    assert call.model == BIG and call.decision.reason.value == "best_effort"
    assert "measured accuracy on tools requests" in call.decision.explanation
    # a plain request's quality is the learned prediction for its prompt
    call = await gateway.route("chat", chat(), {})
    assert call.route_request.quality_class is None
    assert call.quality == gateway.quality.predict(["What is the weather in Oslo?"])[0]
