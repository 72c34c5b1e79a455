"""Reading what a request asks for from its headers (serve/api/requests.py)."""

from __future__ import annotations

import pytest

from router.admission import Priority
from router.errors import InvalidRequestError
from serve.api.requests import priority_from


def test_the_priority_header_lowers_the_key_s_priority_only():
    assert priority_from(Priority.NORMAL, {}) is Priority.NORMAL
    assert priority_from(Priority.NORMAL, {"x-tiergate-priority": " Low "}) is Priority.LOW
    assert priority_from(Priority.NORMAL, {"x-tiergate-priority": "high"}) is Priority.NORMAL


def test_an_unknown_priority_is_a_clear_400_naming_the_header():
    with pytest.raises(InvalidRequestError, match="must be one of high, normal, low") as err:
        priority_from(Priority.HIGH, {"x-tiergate-priority": "urgent"})
    assert err.value.param == "x-tiergate-priority"


def _chat(**kw):
    from serve.api.schemas import ChatCompletionRequest

    return ChatCompletionRequest.model_validate({"model": "auto", **kw})


def test_the_prompt_size_counts_everything_the_model_reads_and_quality_sees_the_user_only():
    from serve.api.requests import estimate_prompt_tokens, routing_text

    system = "You answer in formal English. " * 100  # 3,000 bytes the model reads on every turn
    tool = {"type": "function", "function": {"name": "lookup", "description": "Find an order. " * 20,
                                             "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}
    bare = _chat(messages=[{"role": "user", "content": "hi"}])
    full = _chat(messages=[{"role": "system", "content": system}, {"role": "user", "content": "earlier question"},
                           {"role": "assistant", "content": None, "tool_calls": [
                               {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": "7"}'}}]},
                           {"role": "tool", "tool_call_id": "c1", "content": "order 7: shipped " * 50},
                           {"role": "user", "content": "hi"}], tools=[tool])
    assert routing_text(full) == "earlier question\nhi"
    assert estimate_prompt_tokens(bare) < 10
    # system prompt 750 + tool result ~213 + tool definition ~100 + 5 messages' template tokens
    assert estimate_prompt_tokens(full) > 750 + 200 + 80 + 5 * 4


def test_an_answer_schema_counts_towards_the_prompt():
    from serve.api.requests import estimate_prompt_tokens

    schema = {"type": "json_schema", "json_schema": {"name": "order", "schema": {
        "type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(40)}}}}
    plain = _chat(messages=[{"role": "user", "content": "hi"}])
    shaped = _chat(messages=[{"role": "user", "content": "hi"}], response_format=schema)
    assert estimate_prompt_tokens(shaped) > estimate_prompt_tokens(plain) + 150
