"""An ingress replica's background upkeep, beside (never on) the request path.

Every ``flush_interval_s`` the buffered request records go to the telemetry deployment; every
``health_interval_s`` each model's health is asked and handed to the router; the state store is
started (retried until it answers; ``/health`` says loading till then) and, when shared, the
other replicas' in-flight counts are read every ``load_interval_s``; the model replicas' own load
reports are polled, the spend budgets' gauges published and the quality profile watched.
A failure in any of them is logged and retried; none can fail a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from serve.budgets import Budgets
from serve.gateway import Gateway
from serve.profile_watch import ProfileWatcher
from serve.clients import ModelClient
from serve.replica_load import MAX_AGE_S, POLL_INTERVAL_S, POLL_TIMEOUT_S
from serve.state import StateStore
from serve.telemetry.link import TelemetryLink

log = logging.getLogger("tiergate.ingress")


class Upkeep:
    flush_interval_s = 0.25
    health_interval_s = 2.0
    load_interval_s = 0.25  # how stale another replica's in-flight counts may be in this one's predictions

    def __init__(self, gateway: Gateway, link: TelemetryLink, store: StateStore, budgets: Budgets, telemetry: Any,
                 profile: ProfileWatcher | None) -> None:
        self.gateway, self.link, self.store, self.budgets = gateway, link, store, budgets
        self.telemetry, self.profile = telemetry, profile
        self.store_ready = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_event_loop()
        self._tasks = [loop.create_task(self._flush_loop()), loop.create_task(self._health_loop()),
                       loop.create_task(self._load_loop()), loop.create_task(poll_loads(self.gateway.clients)),
                       loop.create_task(self.budgets.publish(self.telemetry))]
        if self.profile is not None:
            self._tasks.append(loop.create_task(self.profile.run()))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.link.flush()
            except Exception as err:  # noqa: BLE001 - telemetry must never hurt serving
                log.warning("telemetry flush failed: %s", err)

    async def model_health(self) -> dict[str, dict[str, Any]]:
        async def one(name: str, client: Any) -> tuple[str, dict[str, Any]]:
            try:
                h = await asyncio.wait_for(client.health(), timeout=5)
                return name, {"ready": h.ready, "detail": h.detail}
            except Exception as err:  # noqa: BLE001
                return name, {"ready": False, "detail": f"{type(err).__name__}: {err}"}

        results = await asyncio.gather(*(one(n, c) for n, c in self.gateway.clients.items()))
        return dict(results)

    async def _load_loop(self) -> None:
        """Start the store (until it answers), then poll the shared counts."""
        while not self.store_ready:
            try:
                await self.store.start()
                self.store_ready = True
            except Exception as err:  # noqa: BLE001 - retried; /health reports it
                log.warning("state store %s not ready: %s", self.store.name, err)
                await asyncio.sleep(1.0)
        while self.store.name != "memory":  # other replicas change the shared counts too
            await asyncio.sleep(self.load_interval_s)
            try:
                await self.gateway.slots.refresh()
            except Exception as err:  # noqa: BLE001 - admission itself reports a store outage
                log.warning("reading the shared in-flight counts failed: %s", err)

    async def _health_loop(self) -> None:
        while True:
            try:
                health = await self.model_health()
                for name, h in health.items():
                    self.gateway.healthy[name] = bool(h["ready"])
                if self.telemetry is not None:
                    await self.telemetry.set_ready.remote({n: bool(h["ready"]) for n, h in health.items()})
            except Exception as err:  # noqa: BLE001
                log.warning("health poll failed: %s", err)
            await asyncio.sleep(self.health_interval_s)


async def poll_loads(clients: Mapping[str, ModelClient], interval_s: float = POLL_INTERVAL_S) -> None:
    """Every ``interval_s``, every model's replicas' load into its client's view; runs until cancelled."""
    failing: set[str] = set()

    async def one(name: str, client: ModelClient) -> None:
        try:
            await asyncio.wait_for(client.load(), timeout=POLL_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - the view ages out; routing goes on with the leases
            if name not in failing:
                log.warning("polling model %s's load failed (its reports age out in %.0fs): %s",
                            name, MAX_AGE_S, err)
            failing.add(name)
        else:
            failing.discard(name)

    while True:
        await asyncio.gather(*(one(n, c) for n, c in clients.items()))
        await asyncio.sleep(interval_s)
