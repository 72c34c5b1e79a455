"""A validated OpenAI request as the engines' :class:`GenerationRequest`: every honoured field
travels to the engine; nothing the caller sent is lost on the way."""

from __future__ import annotations

import json
import uuid

from serve.api.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    _Common,
)
from serve.engines.base import (
    GenerationRequest,
    Message,
    ResponseFormat,
    SamplingParams,
    ToolCall,
    Tools,
    ToolSpec,
)

EMPTY_PARAMETERS = '{"type": "object", "properties": {}}'


def _sampling(req: _Common, max_tokens: int, logprobs: bool, top_logprobs: int) -> SamplingParams:
    bias = tuple(sorted((int(k), float(v)) for k, v in (req.logit_bias or {}).items()))
    return SamplingParams(
        max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, stop=tuple(req.stop or ()),
        seed=req.seed, logprobs=logprobs, top_logprobs=top_logprobs,
        presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty, top_k=None if req.top_k is None else max(0, req.top_k),
        min_p=req.min_p, logit_bias=bias)


def _response_format(req: ChatCompletionRequest) -> ResponseFormat | None:
    rf = req.response_format
    if isinstance(rf, JsonObjectFormat):
        return ResponseFormat(type="json_object")
    if isinstance(rf, JsonSchemaFormat):
        return ResponseFormat(type="json_schema", schema=json.dumps(rf.json_schema.schema_),
                              name=rf.json_schema.name)
    return None


def _tools(req: ChatCompletionRequest) -> Tools | None:
    if not req.uses_tools():
        return None
    specs = tuple(ToolSpec(name=t.function.name, description=t.function.description,
                           parameters=json.dumps(t.function.parameters) if t.function.parameters is not None
                           else EMPTY_PARAMETERS) for t in req.tools or ())
    choice = req.tool_choice
    if isinstance(choice, NamedToolChoice):
        return Tools(specs, choice="function", function=choice.function.name,
                     parallel=req.parallel_tool_calls is not False)
    return Tools(specs, choice=choice or "auto", parallel=req.parallel_tool_calls is not False)


def _messages(req: ChatCompletionRequest) -> tuple[Message, ...]:
    return tuple(
        Message(m.role, m.text(), name=m.name, tool_call_id=m.tool_call_id,
                tool_calls=tuple(ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments, index=i)
                                 for i, c in enumerate(m.tool_calls or ())))
        for m in req.messages)


def generation_request(req: ChatCompletionRequest | CompletionRequest, max_tokens: int) -> GenerationRequest:
    """The engine's request for a validated API request, ``max_tokens`` already resolved."""
    rid = uuid.uuid4().hex
    if isinstance(req, ChatCompletionRequest):
        return GenerationRequest(
            request_id=rid, sampling=_sampling(req, max_tokens, req.logprobs, req.top_logprobs or 0),
            messages=_messages(req), response_format=_response_format(req), tools=_tools(req))
    return GenerationRequest(request_id=rid, prompt=req.prompt_text(),
                             sampling=_sampling(req, max_tokens, req.logprobs is not None, req.logprobs or 0))
