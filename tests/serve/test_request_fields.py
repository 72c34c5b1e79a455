"""Every request field is honoured or refused by name: schema validation and the mapping to the
engine's request (pure unit tests; the real-model behaviour is in test_request_fields_e2e.py)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from router.errors import InvalidRequestError
from serve.api.errors import from_exception
from serve.api.generation import generation_request
from serve.api.schemas import UNSUPPORTED, ChatCompletionRequest, CompletionRequest

MSG = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string"}}, "required": ["city"]}}}


def chat(**kw):
    return ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, **kw})


def error_of(fn, *args, **kw):
    with pytest.raises((InvalidRequestError, ValidationError)) as err:
        fn(*args, **kw)
    http = from_exception(err.value)
    assert http.status == 400
    return http.body["error"]


@pytest.mark.parametrize("field", ["top_x", "guided_json", "functions", "audio", "service_tier"])
def test_unknown_and_unsupported_fields_are_400_naming_them(field):
    e = error_of(chat, **{field: 1})
    assert e["param"] == field and field in e["message"]
    assert e["code"] == ("unsupported_parameter" if field in UNSUPPORTED else "unknown_parameter")
    e = error_of(CompletionRequest.model_validate, {"model": "m", "prompt": "p", field: 1})
    assert e["param"] == field


def test_unknown_fields_inside_messages_and_formats_are_400():
    e = error_of(chat, messages=[{"role": "user", "content": "hi", "colour": "red"}])
    assert e["param"] == "messages.0.colour"
    e = error_of(chat, response_format={"type": "json_object", "schema": {}})
    assert "response_format" in e["param"]


def test_n_above_one_is_refused_clearly():
    e = error_of(chat, n=2)
    assert e["param"] == "n" and "only n=1 is supported" in e["message"]
    assert chat(n=1).n == 1


def test_ranges_of_sampling_controls():
    for field, bad in (("presence_penalty", 2.5), ("frequency_penalty", -3), ("min_p", 1.5),
                       ("repetition_penalty", 0), ("top_k", -2)):
        assert error_of(chat, **{field: bad})["param"] == field
    e = error_of(chat, logit_bias={"abc": 1})
    assert e["param"] == "logit_bias" and "token ids" in e["message"]
    assert "[-100, 100]" in error_of(chat, logit_bias={"5": 101})["message"]


def test_logit_bias_needs_a_named_model():
    e = error_of(ChatCompletionRequest.model_validate, {"model": "auto", "messages": MSG, "logit_bias": {"5": 1}})
    assert e["param"] == "logit_bias" and "vocabulary" in e["message"]


def test_user_and_metadata_are_accepted():
    req = chat(user="u-1", metadata={"team": "a"})
    assert req.user == "u-1" and req.metadata == {"team": "a"}
    assert error_of(chat, metadata={"k": "v" * 600})["param"] == "metadata"


def test_every_sampling_field_reaches_the_engine_request():
    req = chat(presence_penalty=0.5, frequency_penalty=-0.5, logit_bias={"42": -100, "7": 3.5}, top_k=5, min_p=0.1,
               repetition_penalty=1.2, temperature=0.3, top_p=0.9, seed=4, stop=["x"], max_tokens=9)
    sp = generation_request(req, 9).sampling
    assert (sp.presence_penalty, sp.frequency_penalty, sp.top_k, sp.min_p, sp.repetition_penalty) == (
        0.5, -0.5, 5, 0.1, 1.2)
    assert sp.logit_bias == ((7, 3.5), (42, -100.0))
    assert (sp.temperature, sp.top_p, sp.seed, sp.stop, sp.max_tokens) == (0.3, 0.9, 4, ("x",), 9)
    assert generation_request(chat(top_k=-1), 9).sampling.top_k == 0  # -1 and 0 both switch top-k off
    comp = CompletionRequest.model_validate({"model": "m", "prompt": "p", "presence_penalty": 1.0, "min_p": 0.2})
    assert generation_request(comp, 3).sampling.presence_penalty == 1.0


def test_response_formats_reach_the_engine_request_and_bad_schemas_are_400():
    assert generation_request(chat(response_format={"type": "text"}), 5).response_format is None
    assert generation_request(chat(response_format={"type": "json_object"}), 5).response_format.type == "json_object"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    rf = generation_request(chat(response_format={"type": "json_schema", "json_schema": {
        "name": "thing", "schema": schema, "strict": True}}), 5).response_format
    assert rf.type == "json_schema" and json.loads(rf.schema) == schema and rf.name == "thing"
    e = error_of(chat, response_format={"type": "json_schema", "json_schema": {"name": "t",
                                                                                "schema": {"type": "nope"}}})
    assert "not a valid JSON Schema" in e["message"]
    assert error_of(chat, response_format={"type": "yaml"})["param"].startswith("response_format")


def test_tools_reach_the_engine_request():
    g = generation_request(chat(tools=[WEATHER]), 5)
    assert g.tools.choice == "auto" and g.tools.parallel and g.tools.specs[0].name == "get_weather"
    assert json.loads(g.tools.specs[0].parameters)["required"] == ["city"]
    g = generation_request(chat(tools=[WEATHER], tool_choice={"type": "function", "function": {
        "name": "get_weather"}}, parallel_tool_calls=False), 5)
    assert (g.tools.choice, g.tools.function, g.tools.parallel) == ("function", "get_weather", False)
    assert generation_request(chat(tools=[WEATHER], tool_choice="required"), 5).tools.choice == "required"
    assert generation_request(chat(tools=[WEATHER], tool_choice="none"), 5).tools is None


def test_tool_requests_are_checked():
    assert error_of(chat, tool_choice="required")["param"] == "tool_choice"
    e = error_of(chat, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "other"}})
    assert e["param"] == "tool_choice" and "other" in e["message"]
    assert error_of(chat, tools=[WEATHER, WEATHER])["param"] == "tools"
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}
    assert error_of(chat, tools=[bad])["param"] == "tools"
    e = error_of(chat, tools=[WEATHER], response_format={"type": "json_object"})
    assert e["param"] == "response_format"


def test_follow_up_turns_carry_tool_calls_and_results():
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    ]
    req = chat(messages=messages, tools=[WEATHER])
    assert req.requirements() == frozenset({"tools"})
    msgs = generation_request(req, 5).messages
    assert msgs[1].tool_calls[0].name == "get_weather" and msgs[1].tool_calls[0].arguments == '{"city":"Paris"}'
    assert msgs[2].role == "tool" and msgs[2].tool_call_id == "call_1" and msgs[2].content == "18 C, sunny"
    assert "tool_call_id" in error_of(chat, messages=[{"role": "tool", "content": "x"}])["message"]
    e = error_of(chat, messages=[{"role": "user", "content": "x", "tool_calls": messages[1]["tool_calls"]}])
    assert "assistant" in e["message"]


def test_an_assistant_message_sent_back_as_the_client_helpers_return_it_is_accepted():
    # openai-node's stream()/parse()/runTools() add parsed (and parsed_arguments to each call) to the message
    # they return, and runTools sends it back as it is; the fields are the client's own parse, not instructions
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}', "parsed_arguments": None}}
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "refusal": None, "parsed": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}]
    msgs = generation_request(chat(messages=messages, tools=[WEATHER]), 5).messages
    assert msgs[1].tool_calls[0].arguments == '{"city":"Paris"}'
    assert error_of(chat, messages=[{**messages[1], "parsd": None}])["param"] == "messages.0.parsd"


def test_requirements_name_the_capabilities_a_model_needs():
    assert chat().requirements() == frozenset()
    assert chat(response_format={"type": "json_object"}).requirements() == frozenset({"json_schema"})
    assert chat(tools=[WEATHER]).requirements() == frozenset({"tools"})
    assert chat(tools=[WEATHER], tool_choice="none").requirements() == frozenset()
