"""The Redis store: rate windows through ``limits``' async Redis storage, leases and reservations
as two small Lua scripts (each one atomic on the server, timed by the server's own clock).

Written by hand (two scripts of a few lines): ``limits`` has no concurrency lease nor a
bounded counter, and these must be one round trip each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from serve.state.base import Charge, Refusal, StateStore, StoreUnavailableError
from serve.state.windows import Windows

T = TypeVar("T")
PREFIX = "tiergate:"

# KEYS[1]: the pool's lease set (holder -> expiry in ms). ARGV: holder, capacity, ttl ms.
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return -1
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""
# KEYS: lease sets. Returns the live count of each.
_HELD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('ZCOUNT', k, '(' .. now, '+inf') end
return out
"""
# KEYS[1]: a counter. ARGV: amount, limit (or '' for none), ttl s.
_ADD = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])
if ARGV[2] ~= '' and v > tonumber(ARGV[2]) then return false end
redis.call('SET', KEYS[1], v, 'EX', ARGV[3])
return v
"""


class RedisStore(StateStore):
    name = "redis"

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        from limits.aio.storage import RedisStorage
        from redis.asyncio import Redis

        self.url = url
        self.timeout_s = timeout_s
        opts = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        self._windows = Windows(RedisStorage(f"async+{url}", implementation="redispy",
                                             key_prefix="tiergate-limits", **opts))
        self._redis = Redis.from_url(url, **opts)
        self._lease = self._redis.register_script(_LEASE)
        self._held = self._redis.register_script(_HELD)
        self._add = self._redis.register_script(_ADD)

    async def _io(self, what: str, op: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(op, self.timeout_s)
        except StoreUnavailableError:
            raise
        except (OSError, asyncio.TimeoutError, Exception) as err:  # noqa: BLE001 - redis' and limits' errors
            raise StoreUnavailableError(f"redis store at {_safe(self.url)} failed {what}: "
                                        f"{type(err).__name__}: {err}", code="state_store_unavailable") from None

    async def hit(self, charges: Sequence[Charge]) -> Refusal | None:
        return await self._io("hit", self._windows.hit(charges))

    async def refund(self, charges: Sequence[Charge]) -> None:
        await self._io("refund", self._windows.refund(charges))

    async def lease(self, pool: str, holder: str, capacity: int, ttl_s: float) -> int | None:
        n = await self._io("lease", self._lease(keys=[PREFIX + "lease:" + pool],
                                                args=[holder, capacity, max(1, int(ttl_s * 1000))]))
        return None if int(n) < 0 else int(n)

    async def unlease(self, pool: str, holder: str) -> None:
        await self._io("unlease", self._redis.zrem(PREFIX + "lease:" + pool, holder))

    async def held(self, pools: Sequence[str]) -> dict[str, int]:
        if not pools:
            return {}
        counts = await self._io("held", self._held(keys=[PREFIX + "lease:" + p for p in pools]))
        return {p: int(n) for p, n in zip(pools, counts)}

    async def reserve(self, counter: str, amount: int, limit: int, ttl_s: int) -> int | None:
        v = await self._io("reserve", self._add(keys=[PREFIX + "n:" + counter], args=[amount, limit, ttl_s]))
        return None if v is None else int(v)

    async def adjust(self, counter: str, delta: int, ttl_s: int) -> int:
        return int(await self._io("adjust", self._add(keys=[PREFIX + "n:" + counter], args=[delta, "", ttl_s])))

    async def values(self, counters: Sequence[str]) -> dict[str, int]:
        if not counters:
            return {}
        raw = await self._io("values", self._redis.mget([PREFIX + "n:" + c for c in counters]))
        return {c: int(float(v)) if v is not None else 0 for c, v in zip(counters, raw)}

    async def ping(self) -> bool:
        return bool(await self._io("ping", self._redis.ping()))

    async def close(self) -> None:
        await self._redis.aclose()
        # limits' storage has no close of its own: close the redis-py client it made
        await self._windows.storage.bridge.get_connection().aclose()


def _safe(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
