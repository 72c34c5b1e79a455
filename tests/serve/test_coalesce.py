"""Coalescing a replica's token stream: the first item alone and at once, then what is ready."""

from __future__ import annotations

import asyncio

import pytest

from router.errors import EngineError
from serve.coalesce import coalesce


async def _tokens(n, fail=False, started=None, stopped=None):
    try:
        for i in range(n):
            if started is not None:
                started.set()
            yield i
            await asyncio.sleep(0)
        if fail:
            raise EngineError("engine failed mid-stream")
    finally:
        if stopped is not None:
            stopped.set()


async def test_first_item_alone_then_what_is_ready():
    batches = []
    async for batch in coalesce(_tokens(50)):
        batches.append(batch)
        await asyncio.sleep(0.01)  # a slow hop: the engine runs ahead meanwhile
    assert batches[0] == [0] and [i for b in batches for i in b] == list(range(50))
    assert len(batches) < 10  # fewer messages than tokens


async def test_a_fast_consumer_gets_every_item_as_it_comes():
    batches = [b async for b in coalesce(_tokens(5))]
    assert [i for b in batches for i in b] == list(range(5))


async def test_an_error_comes_after_the_items_before_it():
    got = []
    with pytest.raises(EngineError, match="mid-stream"):
        async for batch in coalesce(_tokens(3, fail=True)):
            got += batch
    assert got == [0, 1, 2]


async def test_stopping_early_stops_the_engine():
    stopped = asyncio.Event()
    stream = coalesce(_tokens(1000, stopped=stopped))
    assert await stream.__anext__() == [0]
    await stream.aclose()
    assert stopped.is_set()
