"""The llama.cpp engine on the real SmolLM2 GGUF: a cancelled clean-up is not swallowed, and
the engine is free again once its worker thread stops."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from serve.config import load_pool
from serve.engines import GenerationRequest, SamplingParams, build_engine
from tests.conftest import CPU_POOL

pytestmark = pytest.mark.e2e


async def test_a_cancelled_close_is_not_swallowed_and_frees_the_engine():
    engine = build_engine(load_pool(CPU_POOL).model("smollm2-135m-instruct"))
    await engine.start()
    try:
        req = GenerationRequest(request_id="long", prompt="Write a long story about a lighthouse.",
                                sampling=SamplingParams(max_tokens=400, temperature=0.0))
        gen = engine.stream(req)
        await gen.__anext__()
        closer = asyncio.ensure_future(gen.aclose())
        await asyncio.sleep(0)  # the close now waits for the worker thread to stop
        closer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closer
        short = replace(req, request_id="short", sampling=replace(req.sampling, max_tokens=2))
        chunks = await asyncio.wait_for(_collect(engine.stream(short)), timeout=120)
        await asyncio.sleep(0)  # the engine frees itself on the loop once its worker has stopped
        assert chunks[-1].finish_reason and engine.load().running == 0
    finally:
        await engine.stop()


async def _collect(stream):
    return [c async for c in stream]
