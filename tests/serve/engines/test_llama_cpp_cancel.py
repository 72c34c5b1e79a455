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
        # no end-of-generation token may be sampled, so the worker is still generating when the close is
        # cancelled (a model that ended its story early made the close finish first, and the test flaky)
        import llama_cpp

        vocab = engine._llm._model.vocab
        never = tuple((t, -100.0) for t in range(engine._llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t))
        req = GenerationRequest(request_id="long", prompt="Write a long story about a lighthouse.",
                                sampling=SamplingParams(max_tokens=400, temperature=0.0, logit_bias=never))
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
