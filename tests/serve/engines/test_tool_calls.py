"""Reading Hermes/Qwen ``<tool_call>`` blocks out of streamed text, and the grammars that force
JSON or a call (pure unit tests; the real models are in tests/serve/test_request_fields_e2e.py)."""

from __future__ import annotations

import json

import pytest

from router.errors import InvalidRequestError
from serve.engines.base import Chunk, GenerationRequest, Message, ResponseFormat, SamplingParams, Tools, ToolSpec
from serve.engines.structured import request_grammar
from serve.engines.tools import ToolCallParser, ToolChunks, call_schema, template_messages, template_tools

WEATHER = ToolSpec("get_weather", json.dumps({"type": "object", "properties": {"city": {"type": "string"}},
                                              "required": ["city"]}))
TIME = ToolSpec("get_time", json.dumps({"type": "object", "properties": {}}))
TOOLS = Tools((WEATHER, TIME))
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def feed_all(parser, text, step):
    content, calls = "", []
    for i in range(0, len(text), step):
        c, k = parser.feed(text[i:i + step])
        content += c
        calls += k
    c, k = parser.finish()
    return content + c, calls + list(k)


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_calls_are_found_whatever_the_chunking(step):
    text = "Let me check." + CALL + "\n" + CALL.replace("Paris", "Oslo")
    content, calls = feed_all(ToolCallParser(TOOLS), text, step)
    assert content.strip() == "Let me check."
    assert [json.loads(c.arguments)["city"] for c in calls] == ["Paris", "Oslo"]
    assert [c.index for c in calls] == [0, 1] and all(c.id.startswith("call_") for c in calls)
    assert calls[0].id != calls[1].id


def test_text_that_only_looks_like_a_tag_is_content():
    content, calls = feed_all(ToolCallParser(TOOLS), "a < b and <tool> is not a call", 2)
    assert content == "a < b and <tool> is not a call" and calls == []


def test_unknown_functions_and_bad_json_stay_content():
    bad = '<tool_call>\n{"name": "launch", "arguments": {}}\n</tool_call><tool_call>{oops</tool_call>'
    content, calls = feed_all(ToolCallParser(TOOLS), bad, 5)
    assert calls == [] and content == bad


def test_unclosed_block_with_complete_json_is_a_call():
    content, calls = feed_all(ToolCallParser(TOOLS), CALL[: -len("</tool_call>")], 4)
    assert content == "" and calls[0].name == "get_weather"


def test_one_call_only_when_parallel_calls_are_off():
    parser = ToolCallParser(Tools((WEATHER,), parallel=False))
    content, calls = feed_all(parser, CALL + CALL, 9)
    assert len(calls) == 1 and content == CALL


def test_chunk_stream_finishes_with_tool_calls():
    tc = ToolChunks(TOOLS)
    out = [tc.chunk(Chunk(text=CALL[:10])), tc.chunk(Chunk(text=CALL[10:])), tc.chunk(Chunk(finish_reason="stop"))]
    assert [len(c.tool_calls) for c in out] == [0, 1, 0] and out[-1].finish_reason == "tool_calls"
    assert "".join(c.text for c in out) == ""
    plain = ToolChunks(TOOLS)
    out = [plain.chunk(Chunk(text="hello")), plain.chunk(Chunk(finish_reason="stop"))]
    assert out[-1].finish_reason == "stop" and "".join(c.text for c in out) == "hello"


def test_template_inputs_follow_the_hugging_face_convention():
    from serve.engines.base import ToolCall

    msgs = template_messages((Message("assistant", "", tool_calls=(ToolCall("c1", "get_weather", '{"city": "Oslo"}'),)),
                              Message("tool", "5 C", tool_call_id="c1")))
    assert msgs[0]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert msgs[1] == {"role": "tool", "content": "5 C", "tool_call_id": "c1"}
    named = Tools((WEATHER, TIME), choice="function", function="get_time")
    assert [t["function"]["name"] for t in template_tools(named)] == ["get_time"]
    assert call_schema(named)["properties"]["name"] == {"const": "get_time"}
    assert len(call_schema(TOOLS)["anyOf"]) == 2


def request(**kw):
    return GenerationRequest("r", SamplingParams(), messages=(Message("user", "x"),), **kw)


def test_grammars_for_json_and_forced_calls():
    assert request_grammar(request()) is None
    assert request_grammar(request(tools=TOOLS)) is None  # auto: the model decides
    assert "root ::= value-root" in request_grammar(request(response_format=ResponseFormat("json_object")))
    forced = request_grammar(request(tools=Tools((WEATHER,), choice="required")))
    assert forced.startswith('root ::= "<tool_call>\\n" value-root "\\n</tool_call>"')
    assert '"\\"get_weather\\""' in forced
    schema = json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    assert "integer" in request_grammar(request(response_format=ResponseFormat("json_schema", schema)))


def test_a_schema_the_converter_cannot_express_is_a_400():
    with pytest.raises(InvalidRequestError) as err:
        request_grammar(request(response_format=ResponseFormat("json_schema", json.dumps({"$ref": "#/nowhere"}))))
    assert err.value.param == "response_format"


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_a_bare_json_call_is_read_as_a_call(step):
    bare = '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n{"name": "get_time", "arguments": {}}'
    content, calls = feed_all(ToolCallParser(TOOLS), bare, step)
    assert content == "" and [c.name for c in calls] == ["get_weather", "get_time"] and calls[1].index == 1


def test_json_that_is_not_a_call_stays_content():
    for text in ('{"answer": 42}', '{"name": "get_weather", "arguments": {}} and more text', '{"name": "nope"}'):
        content, calls = feed_all(ToolCallParser(TOOLS), text, 3)
        assert content == text and calls == []
    one = ToolCallParser(Tools((WEATHER,), parallel=False))
    two = '{"name": "get_weather", "arguments": {}}{"name": "get_weather", "arguments": {}}'
    assert feed_all(one, two, 5) == (two, [])


def test_a_fenced_json_call_is_read_as_a_call_and_other_code_stays_content():
    fenced = '```json\n{\n  "name": "get_weather",\n  "arguments": {"city": "Oslo"}\n}\n```'
    content, calls = feed_all(ToolCallParser(TOOLS), fenced, 3)
    assert content == "" and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Oslo"}
    code = "```python\nprint(1)\n```"
    assert feed_all(ToolCallParser(TOOLS), code, 3) == (code, [])


def test_json_strings_in_grammars_exclude_raw_control_characters():
    grammar = request_grammar(request(response_format=ResponseFormat("json_object")))
    (char,) = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert char.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F]')
