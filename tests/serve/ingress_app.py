"""The ingress in this process, on fake engines: ``IngressCore`` behind the same routes, served
over ASGI (no Ray, no sockets), for fault injection and pure request-path tests."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, Request

from router.quality import CascadeThreshold, PriorQuality
from serve.api.schemas import ChatCompletionRequest, CompletionRequest
from serve.auth import Authenticator
from serve.clients import EngineClient
from serve.config import parse_pool
from serve.engines.fake import FakeArgs, FakeEngine
from serve.ingress import IngressCore
from serve.telemetry.tracing import GatewayTracer


def threshold(model: str, confidence: float, escalation_rate: float = 1 / 3) -> CascadeThreshold:
    """A calibrated cascade threshold: escalate ``model``'s answers below ``confidence``, a share
    ``escalation_rate`` of them in calibration."""
    return CascadeThreshold(model=model, threshold=confidence, target_quality=0.8, kept_quality=0.8,
                            escalation_rate=escalation_rate, n=100)


def fake_pool(models: dict[str, tuple[float, float, dict]], **extra: Any):
    """name -> (price, prior quality, fake engine args)."""
    return parse_pool({"name": "t", "auth": {"enabled": False}, **extra, "models": [
        {"name": name, "engine": "fake", "quantization": "none", "context_length": 512,
         "price": {"input_per_mtok": price, "output_per_mtok": price}, "prior_quality": q,
         "latency_prior": {"ttft_ms": 5, "tpot_ms": 1}, "engine_args": args}
        for name, (price, q, args) in models.items()]})


async def ingress(models: dict[str, tuple[float, float, dict]], *, tracer: GatewayTracer | None = None,
                  telemetry: Any = None, authenticator: Authenticator | None = None,
                  cascade_thresholds: dict[str, float] | None = None, **pool_extra: Any) -> IngressCore:
    """``cascade_thresholds``: each cheap model's confidence threshold (escalating a third of its answers)."""
    pool = fake_pool(models, **pool_extra)
    clients = {}
    for m in pool.models:
        engine = FakeEngine(m, FakeArgs(**m.engine_args))
        await engine.start()
        clients[m.name] = EngineClient(engine)
    return IngressCore(pool, clients, PriorQuality({m.name: m.prior_quality for m in pool.models}), telemetry,
                       authenticator=authenticator or Authenticator(None),
                       cascade_thresholds={m: threshold(m, t) for m, t in (cascade_thresholds or {}).items()},
                       tracer=tracer or GatewayTracer(None))


def asgi(core: IngressCore) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await core.handle("chat", request, ChatCompletionRequest)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await core.handle("completions", request, CompletionRequest)

    return app


def client(core: IngressCore) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi(core)), base_url="http://tiergate/v1",
                             timeout=30)
