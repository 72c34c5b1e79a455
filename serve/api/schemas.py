"""OpenAI wire-format request models, validated strictly at the edge.

Every request field is either honoured or rejected: a field tiergate does not know, or knows
and does not serve (``audio``, ``functions``, ...), is a 400 that names it, never silently
dropped. Known fields are type- and range-checked, and every failure becomes a 400 that names
the offending parameter. ``user`` and ``metadata`` are accepted and not used for generation.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from router.errors import InvalidRequestError

MAX_STOP = 4
MAX_TOOLS = 128
MAX_LOGIT_BIAS = 1024
_FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"

# Known OpenAI fields tiergate does not serve, with the reason the 400 gives.
UNSUPPORTED: dict[str, str] = {
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "functions": "the deprecated functions API is not supported; use tools",
    "function_call": "the deprecated functions API is not supported; use tool_choice",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "reasoning controls are not supported by the pool's models",
    "verbosity": "verbosity is not supported by the pool's models",
    "service_tier": "service tiers are not supported; use routing budgets",
    "store": "stored completions are not supported",
    "best_of": "best_of is not supported; send separate requests",
    "suffix": "suffix (insertion) is not supported",
}


def reject_unknown(model: type[BaseModel], data: Any) -> None:
    """A 400 naming the first request field ``model`` does not serve."""
    if not isinstance(data, dict):
        return
    for name in data:
        if name in model.model_fields:
            continue
        if name in UNSUPPORTED:
            raise InvalidRequestError(f"{name} is not supported: {UNSUPPORTED[name]}", param=name,
                                      code="unsupported_parameter")
        raise InvalidRequestError(f"unrecognized request argument supplied: {name}", param=str(name)[:64],
                                  code="unknown_parameter")


class RoutingOptions(BaseModel):
    """tiergate's budget extension: ``{"routing": {...}}`` in the request body."""

    model_config = ConfigDict(extra="forbid")

    max_latency_ms: float | None = Field(default=None, gt=0, le=3_600_000)
    min_quality: float | None = Field(default=None, ge=0, le=1)
    max_cost_usd: float | None = Field(default=None, gt=0, le=1_000)
    strict: StrictBool | None = None
    # what an acceptable answer is worth (USD): route to the model of highest expected value
    answer_value_usd: float | None = Field(default=None, gt=0, le=1_000)
    cascade: StrictBool | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_FUNCTION_NAME)
    arguments: str = Field(max_length=65536)
    # the openai clients' helpers (stream, parse, runTools) add it to the calls they return, and send
    # the message back as it is: the client's own parse of ``arguments``, ignored here
    parsed_arguments: Any = None


class ToolCallIn(BaseModel):
    """A call in an earlier assistant turn, sent back in a follow-up."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(default=None, max_length=64)
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=128)
    refusal: None = None
    parsed: Any = None  # the clients' own parse of an earlier answer (see FunctionCallIn), ignored

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_call_id and self.role != "tool":
            raise ValueError("only tool messages carry a tool_call_id")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_FUNCTION_NAME)
    description: str | None = Field(default=None, max_length=8192)
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None  # calls always follow the schema when forced; see the README


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=_FUNCTION_NAME)
    description: str | None = Field(default=None, max_length=8192)
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: StrictBool | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_object"]


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: JsonSchemaSpec) -> JsonSchemaSpec:
        check_schema(value.schema_)
        return value


ResponseFormatIn = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


def check_schema(schema: dict[str, Any]) -> None:
    """Reject a JSON Schema that is not one (jsonschema's meta-schema check)."""
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as err:
        raise ValueError(f"not a valid JSON Schema: {err.message}") from None


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: StrictInt = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    seed: StrictInt | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    # extensions (vLLM's names): top_k (0 or -1: off), min_p, repetition_penalty (1: off)
    top_k: StrictInt | None = Field(default=None, ge=-1, le=100_000)
    min_p: float = Field(default=0.0, ge=0, le=1)
    repetition_penalty: float = Field(default=1.0, gt=0, le=10)
    # accepted, not used for generation
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    routing: RoutingOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        reject_unknown(cls, data)
        return data

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported; send separate requests for more choices")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} entries are allowed")
        for token, bias in value.items():
            if not re.fullmatch(r"\d{1,9}", token):
                raise ValueError(f"keys must be token ids (non-negative integers), got {token[:32]!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"biases must be in [-100, 100], got {bias} for token {token}")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for k, v in (value or {}).items():
            if len(k) > 64 or len(v) > 512:
                raise ValueError("metadata keys are at most 64 characters and values at most 512")
        return value

    @model_validator(mode="after")
    def _bias_needs_a_model(self) -> _Common:
        if self.logit_bias and self.model == "auto":
            raise InvalidRequestError(
                "logit_bias needs a named model: token ids belong to one model's vocabulary, and 'auto' "
                "may route to any pool model", param="logit_bias", code="logit_bias_needs_model")
        return self

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def requirements(self) -> frozenset[str]:
        """Capabilities a model needs to serve this request (see ``capabilities`` in the pool)."""
        return frozenset()


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormatIn | None = None
    tools: list[ToolDef] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None

    @model_validator(mode="after")
    def _tools_consistent(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise InvalidRequestError("tool function names must be unique", param="tools", code="invalid_value")
        choice = self.tool_choice
        if choice is not None and choice != "none" and not names:
            raise InvalidRequestError("tool_choice needs tools", param="tool_choice", code="invalid_value")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise InvalidRequestError(f"tool_choice names {choice.function.name!r}, which is not in tools",
                                      param="tool_choice", code="invalid_value")
        for t in self.tools or ():
            if t.function.parameters is not None:
                try:
                    check_schema(t.function.parameters)
                except ValueError as err:
                    raise InvalidRequestError(f"tools: function {t.function.name}: {err}",
                                              param="tools", code="invalid_schema") from None
        if self.uses_tools() and self.response_format is not None and self.response_format.type != "text":
            raise InvalidRequestError("response_format json_object/json_schema together with tools is not "
                                      "supported; use tool_choice 'none' or drop response_format",
                                      param="response_format", code="unsupported_combination")
        return self

    def uses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def requirements(self) -> frozenset[str]:
        needs = set()
        if self.uses_tools() or any(m.role == "tool" or m.tool_calls for m in self.messages):
            needs.add("tools")
        if self.response_format is not None and self.response_format.type != "text":
            needs.add("json_schema")
        return frozenset(needs)


class CompletionRequest(_Common):
    prompt: str | list[str] = Field(min_length=1)
    logprobs: StrictInt | None = Field(default=None, ge=0, le=5)
    echo: StrictBool = False  # true is refused by the gateway (the prompt is not repeated)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        text = value if isinstance(value, str) else value[0]
        if not text:
            raise ValueError("prompt must not be empty")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None,
               **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    err.update(extra)
    return {"error": err}
