"""Coalescing a token stream into batches for the hop from a model replica to the ingress.

Every item that crosses Ray is a message with its own fixed cost, so the replica sends what
the engine produced while the previous message was on its way as one batch: the first item
at once, alone (time to first token is not traded for anything), then everything that is
ready. An engine faster than the hop thus sends fewer, larger messages; a slow one still
sends each token as soon as it exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def coalesce(stream: AsyncIterator[T]) -> AsyncIterator[list[T]]:
    """Batches of ``stream``'s items; its error is raised after the items that came before it."""
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in stream:
                queue.put_nowait(item)
        except Exception as err:  # noqa: BLE001 - handed to the consumer, raised there
            queue.put_nowait(_Raised(err))
        else:
            queue.put_nowait(_END)

    task = asyncio.get_running_loop().create_task(pump())
    try:
        first = True
        while True:
            items = [await queue.get()]
            if not first:
                while not queue.empty():
                    items.append(queue.get_nowait())
            first = False
            batch: list[T] = []
            for item in items:
                if item is _END or isinstance(item, _Raised):
                    if batch:
                        yield batch
                    if isinstance(item, _Raised):
                        raise item.error
                    return
                batch.append(item)  # type: ignore[arg-type]
            yield batch
    finally:
        if not task.done():
            task.cancel()  # the consumer stopped early: stop the engine's generation
        await asyncio.gather(task, return_exceptions=True)


