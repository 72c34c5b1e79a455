"""Replicas' load through Ray Serve: a model deployment of two real SmolLM2 replicas, read the way
the ingress reads it (``HandleClient``). A poll reaches every replica (a handle call reaches one);
a stream carries its replica's report, and the ingress stops counting its own request the moment
it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from serve.clients import HandleClient
from serve.config import ModelConfig, load_pool
from serve.engines import Chunk, GenerationRequest, SamplingParams
from tests.conftest import CPU_POOL, ServeCluster

pytestmark = pytest.mark.e2e

SMALL: ModelConfig = load_pool(CPU_POOL).model("smollm2-135m-instruct")
APP = "replicas"


def never_ending(model: ModelConfig) -> tuple[tuple[int, float], ...]:
    """A logit bias that bans the model's end-of-generation tokens: it generates until max_tokens."""
    import llama_cpp

    from serve.weights import resolve_weights

    assert model.weights is not None
    llm = llama_cpp.Llama(model_path=str(resolve_weights(model.weights, progress=False)), vocab_only=True,
                          verbose=False)
    vocab = llm._model.vocab
    banned = tuple((t, -100.0) for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t))
    llm.close()
    return banned


def long_request(request_id: str, bias: tuple[tuple[int, float], ...], max_tokens: int = 400) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, prompt="Write a long story about a lighthouse.",
                             sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, logit_bias=bias))


@pytest.fixture(scope="module")
def handle(serve_cluster: ServeCluster) -> Iterator[object]:
    from ray import serve

    from serve.app import model_options
    from serve.model_server import ModelServer

    options = {**model_options(SMALL), "num_replicas": 2}
    serve.run(ModelServer.options(**options).bind(SMALL.model_dump(mode="json")), name=APP, route_prefix=None,
              blocking=False)
    h = serve.get_deployment_handle(options["name"], app_name=APP)
    deadline = time.monotonic() + 300
    while True:
        try:
            ready = h.broadcast("health").results(timeout_s=10, return_exceptions=True)
        except Exception as err:  # noqa: BLE001 - the deployment is still coming up
            ready = [err]
        if len(ready) == 2 and all(getattr(x, "ready", False) for x in ready):
            break
        assert time.monotonic() < deadline, f"two replicas not ready: {ready}"
        time.sleep(0.5)
    yield h
    serve.delete(APP)


@pytest.fixture(scope="module")
def banned() -> tuple[tuple[int, float], ...]:
    return never_ending(SMALL)


async def _until(check, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.2)


async def test_a_poll_reaches_every_replica(handle):
    client = HandleClient(handle)
    loads = await client.load()
    assert len(loads) == 2 and len({x.replica for x in loads}) == 2  # a handle call would reach one of them
    view = client.view.model_load(0, True)
    assert view.running + view.queued == 0 and view.age_s is not None and view.age_s < 5


async def test_reports_ride_on_the_stream_and_leave_with_it(handle, banned):
    client = HandleClient(handle)
    stream: AsyncIterator = client.stream(long_request("occupy", banned))
    first = await stream.__anext__()
    assert isinstance(first, Chunk)  # the report was taken out of the batch
    # no poll yet: what the client knows came on the stream's first batch
    assert client.view.model_load(1, True).running == 1
    loads = await client.load()  # the poll sees the same: one replica busy, the other idle
    assert sorted(x.running for x in loads) == [0, 1]
    await stream.aclose()  # our request ended: it leaves the count at once, before any report says so
    assert client.view.model_load(0, True).ahead == 0

    async def replicas_idle() -> bool:
        return sum(x.running + x.waiting for x in await client.load()) == 0

    await _until(replicas_idle)  # the engine itself stopped generating


async def test_two_streams_show_as_two_ahead_wherever_they_landed(handle, banned):
    client = HandleClient(handle)

    async def consume(request: GenerationRequest) -> None:
        async for _ in client.stream(request):
            pass

    tasks = [asyncio.create_task(consume(long_request(f"s{i}", banned))) for i in range(2)]

    async def both_seen() -> bool:  # one on each replica, or one running and one waiting on the same one
        await client.load()
        load = client.view.model_load(0, True)
        return load.running + load.queued == 2

    try:
        await _until(both_seen)
        assert client.view.model_load(0, True).ahead == 2
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def replicas_idle() -> bool:
        return sum(x.running + x.waiting for x in await client.load()) == 0

    await _until(replicas_idle)  # both were cancelled on their replicas, the waiting one too
