"""How the ingress reaches a model: one small abstract class, two implementations.

``HandleClient`` calls a model deployment through its Ray Serve handle; ``EngineClient`` calls
an engine in the same process (benchmarks' in-process baseline, and unit tests with the fake
engine). The ingress never knows which one it has.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Any

from router.errors import EngineError, OverloadedError, TiergateError
from serve.engines.base import Chunk, Engine, EngineHealth, EngineLoad, GenerationRequest


class ModelClient(abc.ABC):
    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Generate; closing the iterator cancels the request on the model."""

    @abc.abstractmethod
    async def health(self) -> EngineHealth: ...

    @abc.abstractmethod
    async def load(self) -> EngineLoad: ...


class EngineClient(ModelClient):
    """An engine in this process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        return self.engine.stream(request)

    async def health(self) -> EngineHealth:
        return await self.engine.health()

    async def load(self) -> EngineLoad:
        return self.engine.load()


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
    one by one.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._stream = handle.options(stream=True)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        gen = self._stream.generate.remote(request)
        finished = False
        try:
            async for batch in gen:
                for chunk in batch:
                    yield chunk
            finished = True
        except Exception as err:  # noqa: BLE001 - Ray's errors translated into tiergate's exception tree
            translated = _translate(err)
            if translated is None:
                raise
            finished = True  # the replica ended the stream itself
            raise translated from None
        finally:
            if not finished:  # the caller stopped early (client went away, deadline): cancel on the replica
                gen.cancel()

    async def health(self) -> EngineHealth:
        return await self._handle.health.remote()

    async def load(self) -> EngineLoad:
        return await self._handle.load.remote()
