"""HandleClient against a stand-in for a Ray Serve handle: batches unpacked, Ray's errors
translated, the replica's generator cancelled only when the caller stops early."""

from __future__ import annotations

import pytest
from ray.exceptions import RayActorError

from router.errors import EngineError
from serve.clients import HandleClient
from serve.engines.base import Chunk, GenerationRequest, SamplingParams

REQUEST = GenerationRequest(request_id="r", sampling=SamplingParams(max_tokens=4), prompt="hi")


class _Response:
    """What ``handle.options(stream=True).generate.remote(...)`` returns: an async iterator of batches."""

    def __init__(self, batches, error=None):
        self.batches, self.error, self.cancelled = list(batches), error, False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.batches:
            return self.batches.pop(0)
        if self.error is not None:
            raise self.error
        raise StopAsyncIteration

    def cancel(self):
        self.cancelled = True


class _Handle:
    def __init__(self, response):
        self.response = response
        self.generate = self

    def options(self, **_):
        return self

    def remote(self, request):
        return self.response


def _client(batches, error=None):
    response = _Response(batches, error)
    return HandleClient(_Handle(response)), response


async def test_batches_are_unpacked_and_a_finished_stream_is_not_cancelled():
    client, response = _client([[Chunk(text="a")], [Chunk(text="b"), Chunk(text="c"), Chunk(finish_reason="stop")]])
    assert [c.text for c in [c async for c in client.stream(REQUEST)]] == ["a", "b", "c", ""]
    assert not response.cancelled


async def test_stopping_early_cancels_on_the_replica():
    client, response = _client([[Chunk(text="a")], [Chunk(text="b")]])
    stream = client.stream(REQUEST)
    assert (await stream.__anext__()).text == "a"
    await stream.aclose()
    assert response.cancelled


async def test_ray_errors_become_engine_errors_and_bugs_stay_bugs():
    client, response = _client([[Chunk(text="a")]], RayActorError())
    with pytest.raises(EngineError, match="replica unavailable"):
        [c async for c in client.stream(REQUEST)]
    assert not response.cancelled  # the replica ended the stream itself
    client, response = _client([], TypeError("a bug on this side"))
    with pytest.raises(TypeError, match="a bug"):
        [c async for c in client.stream(REQUEST)]
    assert response.cancelled
