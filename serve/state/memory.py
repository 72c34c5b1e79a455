"""The in-memory store: one process's counters (one ingress replica, or inside the Ray actor).

Each operation runs without an ``await`` between its check and its change, so on one event
loop it is atomic; the Ray actor store runs this same code in its actor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from limits.aio.storage import MemoryStorage

from serve.state.base import Charge, Refusal, StateStore
from serve.state.windows import Windows


class MemoryStore(StateStore):
    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._windows = Windows(MemoryStorage())
        self._leases: dict[str, dict[str, float]] = {}
        self._counters: dict[str, tuple[int, float]] = {}

    async def hit(self, charges: Sequence[Charge]) -> Refusal | None:
        return await self._windows.hit(charges)

    async def refund(self, charges: Sequence[Charge]) -> None:
        await self._windows.refund(charges)

    def _live(self, pool: str) -> dict[str, float]:
        now = self.clock()
        held = self._leases.setdefault(pool, {})
        for holder in [h for h, until in held.items() if until <= now]:
            del held[holder]
        return held

    async def lease(self, pool: str, holder: str, capacity: int, ttl_s: float) -> int | None:
        held = self._live(pool)
        if holder not in held and len(held) >= capacity:
            return None
        held[holder] = self.clock() + ttl_s
        return len(held)

    async def unlease(self, pool: str, holder: str) -> None:
        self._leases.get(pool, {}).pop(holder, None)

    async def held(self, pools: Sequence[str]) -> dict[str, int]:
        return {p: len(self._live(p)) for p in pools}

    def _value(self, counter: str) -> int:
        value, until = self._counters.get(counter, (0, 0.0))
        return value if until > self.clock() else 0

    async def reserve(self, counter: str, amount: int, limit: int, ttl_s: int) -> int | None:
        value = self._value(counter) + amount
        if value > limit:
            return None
        self._counters[counter] = (value, self.clock() + ttl_s)
        return value

    async def adjust(self, counter: str, delta: int, ttl_s: int) -> int:
        value = self._value(counter) + delta
        self._counters[counter] = (value, self.clock() + ttl_s)
        return value

    async def values(self, counters: Sequence[str]) -> dict[str, int]:
        return {c: self._value(c) for c in counters}
