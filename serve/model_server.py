"""The model deployment: a thin Ray Serve wrapper around one engine per replica.

It reports its engine's load (``serve/replica_load.py``): to ``load`` (which the ingress
polls on every replica) and on its streams' batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from router.errors import EngineError, EngineNotReadyError
from serve.coalesce import coalesce
from serve.config import ModelConfig
from serve.engines import EngineHealth, GenerationRequest, build_engine
from serve.replica_load import ReplicaLoad, ReplicaMeter, replica_id

log = logging.getLogger("tiergate.model")


@serve.deployment
class ModelServer:
    """Loads its engine in the background so the app deploys at once; ``health`` says when ready."""

    def __init__(self, model: dict) -> None:
        self.config = ModelConfig.model_validate(model)
        self.engine = build_engine(self.config)
        self.meter = ReplicaMeter(self.engine, replica_id(), prior=self.config.card().latency_prior,
                                  concurrency=self.config.concurrency)
        self._loading = asyncio.get_event_loop().create_task(self._start())
        self._failed: str | None = None

    async def _start(self) -> None:
        try:
            await self.engine.start()
            log.info("model %s loaded", self.config.name)
        except Exception as err:  # noqa: BLE001 - reported by check_health, which restarts us
            self._failed = str(err)
            log.error("model %s failed to load: %s", self.config.name, err)

    async def check_health(self) -> None:
        if self._failed:
            raise EngineError(f"model {self.config.name} failed to load: {self._failed}")

    async def health(self) -> EngineHealth:
        if self._failed:
            return EngineHealth(ready=False, detail=self._failed)
        return await self.engine.health()

    async def load(self) -> ReplicaLoad:
        return self.meter.report()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[list[Any]]:
        """The engine's chunks in batches: the first at once, then whatever is ready (see coalesce);
        the first batch, and one every ``REPORT_EVERY_S``, starts with this replica's load report."""
        if not self._loading.done():
            raise EngineNotReadyError(f"model {self.config.name} is still loading")
        async for batch in self.meter.metered(coalesce(self.engine.stream(request)), request):
            yield batch
