"""Per-key request and token quotas (per minute and per day), on the ``limits`` library.

Checked before routing: the request counters are charged at admission, the token counters are
tested against the request's estimated size at admission and charged with the actual tokens
when it finishes. Counters live in this ingress replica's memory (moving windows).
"""

from __future__ import annotations

import time

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from router.errors import RateLimitError
from serve.auth import ApiKey


class Quotas:
    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items: dict[tuple[str, str, int], RateLimitItem] = {}

    def _item(self, kind: str, period: str, amount: int) -> RateLimitItem:
        key = (kind, period, amount)
        if key not in self._items:
            cls = RateLimitItemPerMinute if period == "minute" else RateLimitItemPerDay
            self._items[key] = cls(amount, namespace=f"tiergate-{kind}")
        return self._items[key]

    def _limits(self, key: ApiKey, kind: str) -> list[tuple[str, RateLimitItem]]:
        out = []
        for period in ("minute", "day"):
            amount = getattr(key.limits, f"{kind}_per_{period}")
            if amount is not None:
                out.append((f"{kind} per {period}", self._item(kind, period, amount)))
        return out

    async def _retry_after(self, item: RateLimitItem, name: str) -> float:
        stats = await self._limiter.get_window_stats(item, name)
        return max(1.0, stats.reset_time - time.time())

    async def admit(self, key: ApiKey, estimated_tokens: int) -> None:
        """Raise RateLimitError (429 with Retry-After) when the key is over a quota."""
        for label, item in self._limits(key, "tokens"):
            if estimated_tokens > item.amount:
                raise RateLimitError(f"this request (~{estimated_tokens} tokens) exceeds key {key.name!r}'s quota "
                                     f"of {item.amount} {label}", retry_after_s=60.0, code="quota_exceeded")
            if not await self._limiter.test(item, key.name, cost=estimated_tokens):
                raise RateLimitError(f"key {key.name!r} is over its quota of {item.amount} {label}",
                                     retry_after_s=await self._retry_after(item, key.name), code="quota_exceeded")
        requests = self._limits(key, "requests")
        for label, item in requests:
            if not await self._limiter.test(item, key.name):
                raise RateLimitError(f"key {key.name!r} is over its quota of {item.amount} {label}",
                                     retry_after_s=await self._retry_after(item, key.name), code="quota_exceeded")
        for _, item in requests:
            await self._limiter.hit(item, key.name)

    async def charge_tokens(self, key: ApiKey, tokens: int) -> None:
        if tokens <= 0:
            return
        for _, item in self._limits(key, "tokens"):
            await self._limiter.hit(item, key.name, cost=min(tokens, item.amount))
