"""The Ray actor store: one named actor holds the counters that every ingress replica shares.

The actor runs :class:`MemoryStore`; Ray runs an async actor's calls on one event loop, and
each of the store's operations has no ``await`` between its check and its change, so every
call is atomic across replicas. The actor is named per pool and detached, so ingress replicas
find the same one (``get_if_exists``), and it outlives an ingress redeploy; when it dies Ray
restarts it empty (quota windows and in-flight leases start afresh; a budget period's spend is
lost, which is why spend budgets should use Redis). One actor serves thousands of calls a
second (measured in ``loadtests/bench_state_store.py``); shard by key before that limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from serve.state.base import Charge, Refusal, StateStore, StoreUnavailableError
from serve.state.memory import MemoryStore

NAMESPACE = "tiergate"


class StateActor:
    """The actor's body (wrapped by ``ray.remote`` when the store starts it)."""

    def __init__(self) -> None:
        self.store = MemoryStore()

    async def call(self, method: str, *args: Any) -> Any:
        return await getattr(self.store, method)(*args)


class RayActorStore(StateStore):
    name = "ray"

    def __init__(self, actor_name: str, timeout_s: float = 2.0) -> None:
        self.actor_name = actor_name
        self.timeout_s = timeout_s
        self._actor: Any = None

    def _handle(self) -> Any:
        if self._actor is None:
            import ray

            cls = ray.remote(StateActor)
            self._actor = cls.options(name=self.actor_name, namespace=NAMESPACE, get_if_exists=True,
                                      lifetime="detached", num_cpus=0, max_restarts=-1,
                                      max_task_retries=0).remote()
        return self._actor

    async def start(self, timeout_s: float = 120.0) -> None:
        """Find or start the actor and wait until it answers (a new worker process takes seconds)."""
        from ray.exceptions import RayError

        try:
            await asyncio.wait_for(self._handle().call.remote("held", ()), timeout_s)
        except (RayError, asyncio.TimeoutError) as err:
            raise StoreUnavailableError(f"state actor {self.actor_name!r} did not start: {type(err).__name__}: "
                                        f"{err}", code="state_store_unavailable") from None

    async def _call(self, method: str, *args: Any) -> Any:
        from ray.exceptions import RayError

        try:
            ref = self._handle().call.remote(method, *args)
            return await asyncio.wait_for(ref, self.timeout_s)
        except (RayError, asyncio.TimeoutError) as err:
            raise StoreUnavailableError(f"state actor {self.actor_name!r} did not answer {method}: "
                                        f"{type(err).__name__}: {err}", code="state_store_unavailable") from None

    async def hit(self, charges: Sequence[Charge]) -> Refusal | None:
        return await self._call("hit", tuple(charges))

    async def refund(self, charges: Sequence[Charge]) -> None:
        await self._call("refund", tuple(charges))

    async def lease(self, pool: str, holder: str, capacity: int, ttl_s: float) -> int | None:
        return await self._call("lease", pool, holder, capacity, ttl_s)

    async def unlease(self, pool: str, holder: str) -> None:
        await self._call("unlease", pool, holder)

    async def held(self, pools: Sequence[str]) -> dict[str, int]:
        return await self._call("held", tuple(pools))

    async def reserve(self, counter: str, amount: int, limit: int, ttl_s: int) -> int | None:
        return await self._call("reserve", counter, amount, limit, ttl_s)

    async def adjust(self, counter: str, delta: int, ttl_s: int) -> int:
        return await self._call("adjust", counter, delta, ttl_s)

    async def values(self, counters: Sequence[str]) -> dict[str, int]:
        return await self._call("values", tuple(counters))

    async def ping(self) -> bool:
        await self._call("held", ())
        return True
