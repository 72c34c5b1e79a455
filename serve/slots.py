"""Each model's requests in flight, counted across every ingress replica.

A request holds a lease on its model in the shared store (``serve/state``) from admission to
its last token; admission takes one only while the model holds fewer than its priority's share
of its capacity (``router.admission``), in one atomic step, so N ingress replicas together
never put more than the capacity in flight. A lease expires after the request timeout plus a
margin, so a replica that dies holding leases frees them by then.

``in_flight`` is this replica's latest view of the shared counts: set by each lease it takes,
lowered by each it frees and refreshed from the store by :meth:`refresh` (the ingress polls it),
so every replica's latency predictions see the same load, stale by at most the poll interval.
When the store cannot be reached the replica fails closed (503) or, by configuration, open:
it then counts its own leases only, against its share of the capacity (capacity / replicas).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from router.admission import Capacity, Priority, saturated, slot_limit
from serve.state import MemoryStore, StateStore, StoreUnavailableError

log = logging.getLogger("tiergate.slots")

UNBOUNDED = 1 << 30  # failover, escalation and checks are counted but not refused


class Slots:
    def __init__(self, store: StateStore, capacity: Mapping[str, Capacity], *, ttl_s: float,
                 fail_open: bool = False, replicas: int = 1) -> None:
        self.store = store
        self.capacity = dict(capacity)
        self.ttl_s = ttl_s
        self.fail_open = fail_open
        self.in_flight: dict[str, int] = {m: 0 for m in capacity}
        self.errors = 0  # store calls that failed (exported as tiergate_state_store_errors_total)
        self._local = MemoryStore()  # fail-open: this replica's own leases
        self._replicas = max(1, replicas)
        self._pending: set[asyncio.Task[None]] = set()
        # this replica's own leases per model, in admission order, with each one's expected service
        self._own: dict[str, dict[str, float | None]] = {m: {} for m in capacity}
        # background work (brittleness checks) holding an idle slot, by holder: cancelled when a caller comes
        self._background: dict[str, dict[str, asyncio.Task[object]]] = {m: {} for m in capacity}

    @staticmethod
    def _pool(model: str) -> str:
        return "inflight:" + model

    async def _lease(self, model: str, holder: str, limit: int) -> int | None:
        try:
            return await self.store.lease(self._pool(model), holder, limit, self.ttl_s)
        except StoreUnavailableError as err:
            self.errors += 1
            if not self.fail_open:
                raise
            log.warning("state store unavailable, admitting on this replica's own count: %s", err)
            share = limit if limit >= UNBOUNDED else max(1, limit // self._replicas)
            return await self._local.lease(self._pool(model), holder, share, self.ttl_s)

    async def admit(self, order: Sequence[str], priority: Priority, holder: str,
                    service_ms: Mapping[str, float], own_ms: Mapping[str, float] | None = None) -> str:
        """Lease a slot on the first model of ``order`` with room for ``priority``; else 503.
        ``service_ms``: each model's mean service (the retry hint); ``own_ms``: this request's own."""
        for model in order:
            held = await self._lease(model, holder, slot_limit(self.capacity[model], priority))
            if held is not None:
                self.in_flight[model] = held
                self._own[model][holder] = (own_ms or {}).get(model)
                self._preempt(model)
                return model
            self.in_flight[model] = max(self.in_flight[model], slot_limit(self.capacity[model], priority))
        raise saturated(order, self.capacity, priority, service_ms)

    async def take(self, model: str, holder: str) -> int:
        """Lease without a limit (a failover, an escalation): the requests ahead of it."""
        held = await self._lease(model, holder, UNBOUNDED)
        assert held is not None
        self.in_flight[model] = held
        self._own[model][holder] = None  # its own service is not known here: priced at the mean
        self._preempt(model)
        return held - 1

    async def take_idle(self, model: str, holder: str, generating: int) -> bool:
        """Lease only while fewer than ``generating`` (what the model's replicas generate at once) are
        in flight, so nothing would queue: background work (the brittleness checks) uses idle capacity
        only and never adds to a queue that callers wait in (see also :meth:`give_way`)."""
        held = await self._lease(model, holder, max(1, generating))
        if held is None:
            return False
        self.in_flight[model] = held
        self._own[model][holder] = None
        return True

    def give_way(self, model: str, holder: str) -> None:
        """From now until ``holder`` frees its slot, a caller who takes a slot on ``model`` cancels the
        current task (see :meth:`_preempt`), so callers never wait behind background work either."""
        task = asyncio.current_task()
        if task is not None:
            self._background[model][holder] = task

    def _preempt(self, model: str) -> None:
        """A caller took a slot on ``model``: cancel this replica's background work there, which would
        otherwise hold the engine for a whole generation ahead of the caller (idle when it started, the
        model is not any more). A caller on another ingress replica does not reach it: there the check
        ends on its own."""
        preempted, self._background[model] = self._background[model], {}  # once: its clean-up runs on
        for task in preempted.values():
            task.cancel()

    def arriving(self, model: str) -> tuple[float | None, ...]:
        """This replica's own leases on ``model``, newest first: each one's expected service, if known
        (the newest are those still on their way to a replica; see ``ModelLoad.arriving_ms``)."""
        return tuple(reversed(self._own[model].values()))

    def free(self, model: str, holder: str) -> None:
        """Give the lease back, in the background: a cancelled request still frees its slot."""
        self.in_flight[model] = max(0, self.in_flight[model] - 1)
        self._own[model].pop(holder, None)
        self._background[model].pop(holder, None)
        task = asyncio.get_running_loop().create_task(self._free(model, holder))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _free(self, model: str, holder: str) -> None:
        pool = self._pool(model)
        try:
            await self.store.unlease(pool, holder)
        except StoreUnavailableError as err:
            self.errors += 1
            log.warning("could not free a lease (it expires in %.0fs): %s", self.ttl_s, err)
        await self._local.unlease(pool, holder)

    async def drain(self) -> None:
        """Wait for the leases being freed (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def refresh(self) -> None:
        """Read every model's shared count from the store."""
        try:
            counts = await self.store.held([self._pool(m) for m in self.in_flight])
        except StoreUnavailableError:
            self.errors += 1
            raise
        for m in self.in_flight:
            self.in_flight[m] = counts[self._pool(m)]
