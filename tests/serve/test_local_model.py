"""A model in the ingress replica (``LocalModel``): loading, health, streams, cancellation and load reports."""

from __future__ import annotations

import asyncio

import pytest

from router.errors import EngineError, EngineNotReadyError
from serve.config import ModelConfig
from serve.engines import GenerationRequest, Message, SamplingParams
from serve.engines.fake import FakeArgs, FakeEngine
from serve.local_model import LocalModel

CONFIG = ModelConfig.model_validate({
    "name": "tiny", "engine": "fake", "quantization": "none", "context_length": 4096, "placement": "ingress",
    "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}, "prior_quality": 0.3,
    "latency_prior": {"ttft_ms": 5, "tpot_ms": 1}})


def request(max_tokens: int = 16) -> GenerationRequest:
    return GenerationRequest(request_id="r", messages=(Message("user", "hi there"),),
                             sampling=SamplingParams(max_tokens=max_tokens))


class GatedFake(FakeEngine):
    """A fake engine whose start waits for ``gate``."""

    def __init__(self, args: FakeArgs) -> None:
        super().__init__(None, args)
        self.gate = asyncio.Event()

    async def start(self) -> None:
        await self.gate.wait()
        await super().start()


async def loaded(args: FakeArgs | None = None) -> LocalModel:
    model = LocalModel(CONFIG, FakeEngine(CONFIG, args or FakeArgs(ttft_ms=0, tpot_ms=0)))
    await model._loading
    return model


async def test_streams_the_engine_s_chunks_and_reports_its_load():
    model = await loaded(FakeArgs(reply="one two three", ttft_ms=0, tpot_ms=0))
    chunks = [c async for c in model.stream(request())]
    assert "".join(c.text for c in chunks) == "one two three"
    assert chunks[-1].finish_reason == "stop" and chunks[-1].completion_tokens == 3
    load = model.view.model_load(in_flight=0, healthy=True)
    assert load.age_s is not None  # the first chunk's report reached the view directly
    (report,) = await model.load()
    assert report.replica == model.meter.replica and report.running == 0
    assert report.ttft_ms is not None and report.tpot_ms is not None  # measured on the stream above


async def test_while_loading_health_says_so_and_streams_are_refused():
    engine = GatedFake(FakeArgs(ttft_ms=0, tpot_ms=0))
    model = LocalModel(CONFIG, engine)
    health = await model.health()
    assert not health.ready and health.detail == "loading"
    with pytest.raises(EngineNotReadyError, match="still loading"):
        [c async for c in model.stream(request())]
    engine.gate.set()
    await model._loading
    assert (await model.health()).ready


async def test_a_failed_load_is_reported_by_health_and_on_streams():
    model = LocalModel(CONFIG, FakeEngine(CONFIG, FakeArgs(fail_on_start=True)))
    await model._loading
    health = await model.health()
    assert not health.ready and "told to fail on start" in health.detail
    with pytest.raises(EngineError, match="failed to load"):
        [c async for c in model.stream(request())]


async def test_closing_the_stream_early_stops_the_engine():
    engine = FakeEngine(CONFIG, FakeArgs(reply=" ".join(["w"] * 50), ttft_ms=0, tpot_ms=1))
    model = LocalModel(CONFIG, engine)
    await model._loading
    stream = model.stream(request(max_tokens=50))
    first = await stream.__anext__()
    assert first.text == "w" and engine.load().running == 1
    await stream.aclose()
    assert engine.load().running == 0  # the engine's generator was closed, not left to the garbage collector
    assert model.meter.report().running == 0


async def test_an_engine_error_mid_stream_reaches_the_caller():
    model = await loaded(FakeArgs(reply="a b c d", ttft_ms=0, tpot_ms=0, fail_after_tokens=2))
    got = []
    with pytest.raises(EngineError, match="mid-stream"):
        async for c in model.stream(request()):
            got.append(c.text)
    assert got == ["a", " b"]


async def test_the_engine_makes_its_next_token_while_the_caller_handles_this_one():
    """An engine that generates only when asked (the fake engine's async generator) runs ahead of a
    slow caller (the ingress writing each token out): its time per token is its own, not plus the caller's."""
    model = await loaded(FakeArgs(ttft_ms=0, tpot_ms=60, reply="a b c d e f"))
    began = asyncio.get_running_loop().time()
    tokens = 0
    async for chunk in model.stream(request()):
        if chunk.text:
            tokens += 1
            await asyncio.sleep(0.05)  # the caller's work on each token, shorter than the engine's tpot
    elapsed = asyncio.get_running_loop().time() - began
    assert tokens == 6
    # engine-paced: ~6 x 60 ms (+ the last token's 50 ms) = 410 ms; caller-paced: ~6 x 110 ms = 660 ms
    assert elapsed < 0.55, elapsed
