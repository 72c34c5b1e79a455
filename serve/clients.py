"""How the ingress reaches a model: one small abstract class, two implementations.

``HandleClient`` calls a model deployment through its Ray Serve handle; ``EngineClient`` calls
an engine in the same process (benchmarks' in-process baseline, and unit tests with the fake
engine). The ingress never knows which one it has. Each keeps a :class:`LoadView` of the
model's replicas (``serve/replica_load.py``): fed by the reports on its streams and by ``load``.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import AsyncIterator
from typing import Any

from router.errors import EngineError, OverloadedError, TiergateError
from serve.engines.base import Chunk, Engine, EngineHealth, GenerationRequest
from serve.replica_load import POLL_TIMEOUT_S, LoadView, ReplicaLoad, ReplicaMeter, replica_id


class ModelClient(abc.ABC):
    view: LoadView  # the model's replicas' latest load reports

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Generate; closing the iterator cancels the request on the model."""

    @abc.abstractmethod
    async def health(self) -> EngineHealth: ...

    @abc.abstractmethod
    async def load(self) -> tuple[ReplicaLoad, ...]:
        """Every replica's load now, also taken into ``view``."""


class EngineClient(ModelClient):
    """An engine in this process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.view = LoadView()
        self._meter = ReplicaMeter(engine, replica_id())  # load only: streams here are not metered

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        return self.engine.stream(request)

    async def health(self) -> EngineHealth:
        return await self.engine.health()

    async def load(self) -> tuple[ReplicaLoad, ...]:
        loads = (self._meter.report(),)
        self.view.polled(loads)
        return loads


def _translate(err: Exception) -> Exception | None:
    """Ray's errors as tiergate's: the replica's own TiergateError, overload, or an engine failure.

    None for anything else: an error that is not Ray's is a bug here, not a model outage, and
    is raised as it is.
    """
    from ray.exceptions import RayError, RayTaskError
    from ray.serve.exceptions import BackPressureError

    if isinstance(err, TiergateError):
        return err
    if isinstance(err, RayTaskError):
        cause = getattr(err, "cause", None)
        if isinstance(cause, TiergateError):
            return cause
        return EngineError(f"model replica failed: {type(cause).__name__ if cause else 'error'}: {cause}")
    if isinstance(err, BackPressureError):
        return OverloadedError("the model's queue is full", retry_after_s=1.0)
    if isinstance(err, RayError):  # the replica died or cannot be reached
        return EngineError(f"model replica unavailable: {type(err).__name__}: {err}")
    return None


class HandleClient(ModelClient):
    """A model deployment behind a Ray Serve ``DeploymentHandle``.

    The replica sends its chunks in batches (see ``ModelServer.generate``); they are handed on
    one by one, and the load reports some batches carry go into ``view``.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._stream = handle.options(stream=True)
        self.view = LoadView()
        self._holders = itertools.count()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        gen = self._stream.generate.remote(request)
        finished = False
        holder, replica = next(self._holders), None
        try:
            async for batch in gen:
                for item in batch:
                    if isinstance(item, ReplicaLoad):
                        replica = item.replica
                        self.view.report(item, holder)
                    else:
                        yield item
            finished = True
        except Exception as err:  # noqa: BLE001 - Ray's errors translated into tiergate's exception tree
            translated = _translate(err)
            if translated is None:
                raise
            finished = True  # the replica ended the stream itself
            raise translated from None
        finally:
            if replica is not None:
                self.view.ended(replica, holder)
            if not finished:  # the caller stopped early (client went away, deadline): cancel on the replica
                gen.cancel()

    async def health(self) -> EngineHealth:
        return await self._handle.health.remote()

    async def load(self) -> tuple[ReplicaLoad, ...]:
        """Every replica's report: one call to each (a handle call would reach one replica)."""
        answers = await self._handle.broadcast("load").results_async(timeout_s=POLL_TIMEOUT_S,
                                                                      return_exceptions=True)
        loads = tuple(a for a in answers if isinstance(a, ReplicaLoad))
        self.view.polled(loads)
        return loads
