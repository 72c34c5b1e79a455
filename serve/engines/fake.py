"""A deterministic in-repo engine for unit tests and fault injection, never for serving.

It echoes a fixed reply token by token with configurable delays, and can be told to fail
before the first token, mid-stream, or on start, so failover and error paths can be tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic import Field

from router.errors import ContextLengthError, EngineError
from serve.config import ModelConfig
from serve.engines.base import Chunk, Engine, EngineArgs, EngineHealth, EngineLoad, GenerationRequest, TokenLogprob


class FakeArgs(EngineArgs):
    reply: str = "fake reply from a fake engine"
    ttft_ms: float = Field(default=5.0, ge=0)
    tpot_ms: float = Field(default=1.0, ge=0)
    logprob: float = Field(default=-0.1, le=0)
    fail_on_start: bool = False
    fail_before_first_token: bool = False
    fail_after_tokens: int | None = Field(default=None, ge=0)
    context_length: int = Field(default=4096, gt=0)


class FakeEngine(Engine):
    Args = FakeArgs

    def __init__(self, model: ModelConfig | None = None, args: FakeArgs | None = None) -> None:
        self.model = model
        self.args = args or FakeArgs()
        self._started = False
        self._running = 0

    async def start(self) -> None:
        if self.args.fail_on_start:
            raise EngineError("fake engine told to fail on start")
        self._started = True

    async def health(self) -> EngineHealth:
        return EngineHealth(ready=self._started, detail="fake")

    def load(self) -> EngineLoad:
        return EngineLoad(running=self._running)

    async def count_tokens(self, request: GenerationRequest) -> int:
        text = request.prompt if request.prompt is not None else " ".join(m.content for m in request.messages or ())
        return max(1, len(text.split()))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        if not self._started:
            raise EngineError("fake engine not started")
        prompt_tokens = await self.count_tokens(request)
        if prompt_tokens + 1 > self.args.context_length:
            raise ContextLengthError("prompt longer than the fake context", param="messages",
                                     code="context_length_exceeded")
        self._running += 1
        try:
            await asyncio.sleep(self.args.ttft_ms / 1000)
            if self.args.fail_before_first_token:
                raise EngineError("fake engine told to fail before the first token")
            words = self.args.reply.split()
            limit = request.sampling.max_tokens
            sent = 0
            for i, word in enumerate(words[:limit]):
                if self.args.fail_after_tokens is not None and sent >= self.args.fail_after_tokens:
                    raise EngineError("fake engine told to fail mid-stream")
                text = word if i == 0 else " " + word
                lp = (TokenLogprob(text, self.args.logprob),) if request.sampling.logprobs else ()
                sent += 1
                yield Chunk(text=text, logprobs=lp, prompt_tokens=prompt_tokens, completion_tokens=sent)
                await asyncio.sleep(self.args.tpot_ms / 1000)
            finish = "length" if len(words) > limit else "stop"
            yield Chunk(finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=sent)
        finally:
            self._running -= 1
