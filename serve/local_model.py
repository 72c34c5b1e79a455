"""A model whose engine runs inside the ingress replica (``placement: ingress``): no Ray hop.

A small CPU engine generates a token in a few milliseconds; sending each batch of tokens from
a model replica to the ingress costs a Ray message, and the ingress's CPU, on every request.
Placed in the ingress, the engine is called in-process through the same :class:`ModelClient`
interface as a deployment. As in ``ModelServer``, the engine loads in the background (health
says "loading", streams are refused until then), its stream is pumped by a task of its own
(:func:`coalesce`), so an engine that generates only when asked (an async generator such as the
fake engine's) goes on to its next token while the ingress writes this one instead of after it
(~0.1 ms of HTTP work per token added to its time per token otherwise), and a
:class:`ReplicaMeter` measures its streams; its reports go straight into ``view`` instead of
riding on Ray messages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator

from router.errors import EngineError, EngineNotReadyError
from serve.clients import ModelClient
from serve.coalesce import coalesce
from serve.config import ModelConfig
from serve.engines import Chunk, Engine, EngineHealth, GenerationRequest, build_engine
from serve.replica_load import LoadView, ReplicaLoad, ReplicaMeter, replica_id

log = logging.getLogger("tiergate.local_model")


class LocalModel(ModelClient):
    """One pool model's engine in this process. Construct inside a running event loop: loading starts at once."""

    def __init__(self, config: ModelConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine if engine is not None else build_engine(config)
        self.view = LoadView()
        self.meter = ReplicaMeter(self.engine, replica_id(), prior=config.card().latency_prior,
                                  concurrency=config.concurrency)
        self._holders = itertools.count()
        self._failed: str | None = None
        self._loading = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        try:
            await self.engine.start()
            log.info("model %s loaded in the ingress replica", self.config.name)
        except Exception as err:  # noqa: BLE001 - reported by health and on every stream
            self._failed = f"{type(err).__name__}: {err}"
            log.error("model %s failed to load in the ingress replica: %s", self.config.name, err)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        if self._failed is not None:
            raise EngineError(f"model {self.config.name} failed to load: {self._failed}")
        if not self._loading.done():
            raise EngineNotReadyError(f"model {self.config.name} is still loading")
        holder, reported = next(self._holders), False
        chunks = self.engine.stream(request)
        batches = coalesce(chunks)  # the engine runs ahead while the ingress writes (see the module's doc)
        metered = self.meter.metered(batches, request)
        try:
            async for batch in metered:
                for item in batch:
                    if isinstance(item, ReplicaLoad):
                        self.view.report(item, holder)
                        reported = True
                    else:
                        yield item
        finally:
            # closing the caller's iterator stops generation: close every layer, the engine's last
            for layer in (metered, batches, chunks):
                close = getattr(layer, "aclose", None)  # None: an engine stream that is no generator
                if close is not None:
                    await close()
            if reported:
                self.view.ended(self.meter.replica, holder)

    async def health(self) -> EngineHealth:
        if self._failed is not None:
            return EngineHealth(ready=False, detail=self._failed)
        if not self._loading.done():
            return EngineHealth(ready=False, detail="loading")
        return await self.engine.health()

    async def load(self) -> tuple[ReplicaLoad, ...]:
        loads = (self.meter.report(),)
        self.view.polled(loads)
        return loads
