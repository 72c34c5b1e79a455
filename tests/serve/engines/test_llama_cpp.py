"""The llama.cpp engine on the real SmolLM2 GGUF: requests queue on the worker thread, so the
next one starts without the event loop; a queued request that is dropped is skipped; a cancelled
clean-up is not swallowed, and the engine is free again once its worker thread stops."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from serve.config import load_pool
from serve.engines import GenerationRequest, SamplingParams, build_engine
from tests.conftest import CPU_POOL

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def smollm2():
    engine = build_engine(load_pool(CPU_POOL).model("smollm2-135m-instruct"))
    await engine.start()
    yield engine
    await engine.stop()


def _never_ending(engine, request_id: str, max_tokens: int) -> GenerationRequest:
    """A greedy request that may not sample an end-of-generation token: it runs its whole ``max_tokens``."""
    import llama_cpp

    vocab = engine._llm._model.vocab
    never = tuple((t, -100.0) for t in range(engine._llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t))
    return GenerationRequest(request_id=request_id, prompt="Write a long story about a lighthouse.",
                             sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, logit_bias=never))


async def test_the_next_request_starts_while_the_event_loop_is_busy(smollm2):
    first = smollm2.stream(_never_ending(smollm2, "first", 3))
    second = smollm2.stream(_never_ending(smollm2, "second", 3))
    heads = [asyncio.ensure_future(first.__anext__())]
    await asyncio.sleep(0)  # the first is queued on the worker before the second
    heads.append(asyncio.ensure_future(second.__anext__()))
    await asyncio.sleep(0)
    assert smollm2.load().waiting + smollm2.load().running == 2
    # the event loop does nothing for 3 s (an ingress busy writing other answers): both generations
    # (3 tokens each, ~0.1 s) run meanwhile, the second handed the engine by the worker, not the loop
    time.sleep(3)
    assert (smollm2.load().running, smollm2.load().waiting) == (0, 0)
    texts = await asyncio.gather(_collect_from(first, heads[0]), _collect_from(second, heads[1]))
    assert [c.completion_tokens for c in texts[0]][-1] == 3 == [c.completion_tokens for c in texts[1]][-1]


async def test_a_queued_request_that_is_dropped_is_skipped_and_no_longer_waits(smollm2):
    running = smollm2.stream(_never_ending(smollm2, "long", 400))
    await running.__anext__()
    queued = smollm2.stream(_never_ending(smollm2, "queued", 400))
    head = asyncio.ensure_future(queued.__anext__())
    await asyncio.sleep(0.05)
    assert (smollm2.load().running, smollm2.load().waiting) == (1, 1)
    head.cancel()  # the caller hangs up while it waits
    with pytest.raises(asyncio.CancelledError):
        await head
    assert (smollm2.load().running, smollm2.load().waiting) == (1, 0)
    await running.aclose()  # the long one stops within a token; the dropped one never generates
    short = await asyncio.wait_for(_collect(smollm2.stream(_never_ending(smollm2, "short", 2))), timeout=60)
    assert short[-1].completion_tokens == 2 and short[-1].finish_reason == "length"
    assert (smollm2.load().running, smollm2.load().waiting) == (0, 0)


async def test_a_cancelled_close_is_not_swallowed_and_frees_the_engine(smollm2):
    # no end-of-generation token may be sampled, so the worker is still generating when the close is
    # cancelled (a model that ended its story early made the close finish first, and the test flaky)
    req = _never_ending(smollm2, "long", 400)
    gen = smollm2.stream(req)
    await gen.__anext__()
    closer = asyncio.ensure_future(gen.aclose())
    await asyncio.sleep(0)  # the close now waits for the worker thread to stop
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    short = replace(req, request_id="short", sampling=replace(req.sampling, max_tokens=2))
    chunks = await asyncio.wait_for(_collect(smollm2.stream(short)), timeout=120)
    await asyncio.sleep(0)  # the engine frees itself on the loop once its worker has stopped
    assert chunks[-1].finish_reason and smollm2.load().running == 0


async def _collect(stream):
    return [c async for c in stream]


async def _collect_from(stream, head):
    return [await head] + [c async for c in stream]
