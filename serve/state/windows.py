"""Rate windows on the ``limits`` library's sliding-window counters, for any of its async storages.

A sliding-window counter keeps two counts per window (this period's and the last one's,
weighted by how much of it still overlaps), so a hit costs the same whatever the traffic:
unlike a moving window, which stores one entry per unit and made a token quota O(tokens).
Several windows are charged all or none: each is hit in turn and, when one refuses, the ones
already hit are refunded (a negative hit), so a refused request never keeps a charge.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from serve.state.base import Charge, Refusal, Window


class Windows:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._items: dict[tuple[int, int], RateLimitItem] = {}

    def _item(self, w: Window) -> RateLimitItem:
        key = (w.limit, w.period_s)
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = RateLimitItemPerSecond(w.limit, w.period_s, namespace="tiergate")
        return item

    async def hit(self, charges: Sequence[Charge]) -> Refusal | None:
        done: list[Charge] = []
        for c in charges:
            if c.amount <= 0:
                continue
            if not await self._limiter.hit(self._item(c.window), c.window.name, cost=c.amount):
                await self.refund(done)
                return Refusal(c.window, await self._retry_after(c))
            done.append(c)
        return None

    async def refund(self, charges: Sequence[Charge]) -> None:
        for c in charges:
            if c.amount > 0:
                await self._limiter.hit(self._item(c.window), c.window.name, cost=-c.amount)

    async def _retry_after(self, c: Charge) -> float:
        """When the window will have room for this amount, as ``limits`` estimates it (at least 1 s)."""
        stats = await self._limiter.get_window_stats(self._item(c.window), c.window.name)
        return max(1.0, min(float(c.window.period_s), stats.reset_time - time.time()))
