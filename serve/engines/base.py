"""The engine interface: one small abstract class, and the small objects it exchanges.

An engine owns one loaded model inside one replica. ``start`` loads it, ``stream`` generates
for one request as an async iterator of :class:`Chunk`, ``health`` says whether it can serve,
and ``load`` reports the live signals the router needs. Requests and chunks are frozen,
picklable dataclasses so that they cross Ray deployment boundaries cheaply.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class ToolCall:
    """One function call the model made; ``arguments`` is JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str
    index: int = 0


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn: the call it answers


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    top_k: int | None = None  # None: the engine's configured default; 0 disables
    min_p: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) in the answering model's vocabulary


@dataclass(frozen=True)
class ResponseFormat:
    """Constrained output: ``json_object`` (any JSON object) or ``json_schema`` (``schema`` is JSON text)."""

    type: str
    schema: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call; ``parameters`` is its JSON Schema as JSON text."""

    name: str
    parameters: str = '{"type": "object", "properties": {}}'
    description: str | None = None


@dataclass(frozen=True)
class Tools:
    """The tools of one request and how the model may use them.

    ``choice``: ``auto`` (the model decides), ``required`` (at least one call), ``function``
    (a call to ``function``), ``none`` is never sent to an engine (the request carries no tools).
    """

    specs: tuple[ToolSpec, ...]
    choice: str = "auto"
    function: str | None = None
    parallel: bool = True


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: either chat ``messages`` or a raw completion ``prompt``."""

    request_id: str
    sampling: SamplingParams
    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    response_format: ResponseFormat | None = None
    tools: Tools | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a generation request has exactly one of messages or prompt")


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A piece of output. The last chunk carries ``finish_reason`` and the final usage."""

    text: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "tool_calls"
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class EngineHealth:
    ready: bool
    detail: str = ""


@dataclass(frozen=True)
class EngineLoad:
    running: int = 0
    waiting: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class EngineArgs(BaseModel):
    """Base of each engine's own argument model (the pool's ``engine_args``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Engine(abc.ABC):
    """A model engine inside one replica."""

    Args: ClassVar[type[EngineArgs]] = EngineArgs

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model. Idempotent; raises EngineError when loading fails."""

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Generate for one request. Closing the iterator cancels generation."""

    @abc.abstractmethod
    async def health(self) -> EngineHealth:
        """Whether the engine can serve now."""

    def load(self) -> EngineLoad:
        """Requests running and waiting on this engine, for the latency model."""
        return EngineLoad()

    async def count_tokens(self, request: GenerationRequest) -> int:
        """Prompt tokens of ``request`` after formatting; engines override with their tokenizer."""
        text = request.prompt if request.prompt is not None else " ".join(m.content for m in request.messages or ())
        return max(1, len(text) // 4)

    async def stop(self) -> None:
        """Release the model."""


def parse_engine_args(engine_cls: type[Engine], raw: dict[str, Any]) -> EngineArgs:
    return engine_cls.Args.model_validate(raw)
