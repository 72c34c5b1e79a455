"""The HTTP ingress: OpenAI routes on FastAPI, one Ray Serve deployment.

It maps each pool model to its deployment handle, asks the :class:`Gateway` to route and run
each request, and shapes the answer. Errors become OpenAI error objects here and only here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.errors import ConfigError, TiergateError
from router.quality import CascadeThreshold, PriorQuality, QualityPredictor
from serve.api import responses as R
from serve.api.body import read_json
from serve.api.errors import HttpError, from_exception
from serve.api.schemas import ChatCompletionRequest, CompletionRequest, error_body
from serve.api.streaming import SSEResponse, sse_events
from serve.auth import ANONYMOUS, ApiKey, Authenticator, load_keys
from serve.budgets import NO_SPEND, Budgets, SpendTicket, budget_response
from serve.clients import ModelClient
from serve.config import PoolConfig
from serve.engines.base import Chunk
from serve.api.requests import priority_from, prompt_text, routing_text
from serve.gateway import Call, Gateway
from serve.quotas import NO_TICKET, Quotas, Ticket
from serve.replica_load import reported
from serve.placement import model_clients
from serve.profile_watch import ProfileWatcher
from serve.shadow import OutputChecks
from serve.state import StateStore, build_store
from serve.telemetry.link import TelemetryLink
from serve.telemetry.tracing import GatewayTracer, build_tracer_provider, set_decision
from serve.telemetry.records import RequestRecord
from serve.upkeep import Upkeep

log = logging.getLogger("tiergate.ingress")

app = FastAPI(title="tiergate", version="0.1.0",
              description="OpenAI-compatible gateway with tiered, budget-aware routing")
_SCHEMAS: dict[str, Any] = {}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for a model (bodies are parsed by hand, so FastAPI cannot infer them)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _SCHEMAS.update(schema.pop("$defs", {}))
    _SCHEMAS[model.__name__] = schema
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _openapi() -> dict[str, Any]:
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        spec.setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS)
        app.openapi_schema = spec
    return app.openapi_schema


app.openapi = _openapi  # type: ignore[method-assign]


def _error_response(err: HttpError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(err.body, status_code=err.status, headers={**err.headers, **(headers or {})})


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(error_body(str(exc.detail), kind, None, str(exc.status_code)), status_code=exc.status_code)


class IngressCore:
    """Everything the ingress does, without the Ray decorator (so it can run in-process)."""

    def __init__(self, pool: PoolConfig, clients: Mapping[str, ModelClient], quality: QualityPredictor,
                 telemetry: Any = None, authenticator: Authenticator | None = None,
                 cascade_thresholds: Mapping[str, CascadeThreshold] | None = None, tracer: GatewayTracer | None = None,
                 store: StateStore | None = None) -> None:
        self.pool = pool
        self.telemetry = telemetry
        self.link = TelemetryLink(telemetry, self._gauges)
        self.store = store if store is not None else build_store(pool)
        self.gateway = Gateway(pool, clients, quality, self.link.append, cascade_thresholds=cascade_thresholds,
                               store=self.store)
        self.tracer = tracer if tracer is not None else GatewayTracer(build_tracer_provider())
        self.checks = OutputChecks(pool, self.gateway, telemetry)
        self.auth = authenticator if authenticator is not None else Authenticator(load_keys(pool.auth))
        self.quotas = Quotas(self.store, fail_open=pool.state.on_unavailable == "open")
        self.budgets = Budgets(pool, self.auth.keys, self.store)  # spend budgets: serve/budgets.py
        self._charges: set[asyncio.Task[None]] = set()
        profile = ProfileWatcher(pool.quality_profile, [m.name for m in pool.models],
                                 lambda new: self.gateway.use_quality(new.predictor, new.cascade_thresholds),
                                 interval_s=pool.quality_profile_reload_s) \
            if pool.quality_profile and pool.quality_profile_reload_s > 0 else None
        self.upkeep = Upkeep(self.gateway, self.link, self.store, self.budgets, telemetry, profile)

    def start_background(self) -> None:
        self.upkeep.start()

    # ------------------------------------------------------------------ telemetry plumbing
    def _gauges(self) -> dict[str, Any]:
        return {"in_flight": dict(self.gateway.in_flight),
                "circuit_open": {m: st.value != "closed" for m, st in self.gateway.breakers.states().items()},
                "store_errors": self.gateway.slots.errors + self.quotas.errors + self.budgets.store_errors,
                "shared": self.store.name != "memory"}

    # ------------------------------------------------------------------ requests
    async def handle(self, endpoint: str, request: Request, model: type[BaseModel]) -> Response:
        try:
            return await self._handle(endpoint, request, model)
        except Exception as err:  # noqa: BLE001 - a bug must still answer in the OpenAI error format
            log.exception("unhandled error on %s", endpoint)
            return _error_response(HttpError(500, error_body(f"internal error ({type(err).__name__})",
                                                             "server_error", None, "internal_error")))

    async def _handle(self, endpoint: str, request: Request, model: type[BaseModel]) -> Response:
        key: ApiKey = ANONYMOUS
        ticket, spend = NO_TICKET, NO_SPEND
        span = self.tracer.start_request(endpoint=endpoint, requested_model="", headers=request.headers)
        try:
            key = self.auth.authenticate(request.headers)
            data = await read_json(request, self.pool.limits.max_body_bytes)
            body: Any = model.model_validate(data)
            self.tracer.name_request(span, endpoint=endpoint, requested_model=body.model, stream=body.stream)
            text, prompt = routing_text(body), prompt_text(body)
            ticket = await self.quotas.admit(key, prompt, len(getattr(body, "messages", ())),
                                             body.requested_max_tokens() or self.pool.limits.default_max_tokens)
            spend = await self.budgets.admit(key, body)  # the request's maximum cost, reserved
            with self.tracer.routing_span(span) as route_span:
                call = await self.gateway.route(endpoint, body, request.headers, allowed_models=spend.allowed_models,
                                                priority=priority_from(key.priority, request.headers),
                                                key_name=key.name, pace=spend.pace, text=text, prompt=prompt)
                set_decision(route_span, call.decision)
        except (TiergateError, ValidationError) as err:
            self.tracer.finish_request(span, response_model=None, error=err)
            await self._settle(ticket, 0, spend)
            return self._reject(endpoint, err, key)
        except Exception as err:
            self.tracer.finish_request(span, response_model=None, error=err)
            await self._settle(ticket, 0, spend)
            raise
        stream = self.gateway.run(call)
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            first = Chunk(finish_reason="stop")
        except TiergateError as err:
            await self._done(call, ticket, span, err, spend)
            return _error_response(from_exception(err), R.decision_headers(call, final=False))
        except Exception as err:
            await self._done(call, ticket, span, err, spend)
            raise
        if call.stream:
            events = sse_events(call, first, stream, lambda error: self._done(call, ticket, span, error, spend))
            return SSEResponse(events, media_type="text/event-stream",
                               headers={**R.decision_headers(call, final=False), **spend.headers(),
                                        "cache-control": "no-cache"})
        chunks = [first]
        error: BaseException | None = None
        try:
            async for chunk in stream:
                chunks.append(chunk)
        except TiergateError as err:
            error = err
            return _error_response(from_exception(err), R.decision_headers(call, final=False))
        except BaseException as err:
            error = err
            raise
        finally:
            left = await self._done(call, ticket, span, error, spend)
        return JSONResponse(R.full_body(call, chunks),
                            headers={**R.decision_headers(call, final=True), **spend.headers(left)})

    async def _done(self, call: Call, ticket: Ticket, span: Any, error: BaseException | None,
                    spend: SpendTicket = NO_SPEND) -> int | None:
        """After the answer, its observers, each reading the one frozen outcome: the trace, the
        brittleness checks, the key's tokens and spend (the telemetry record went when the run ended).
        Every path here has ended the run: a finished or failed stream, or ``sse_events`` closing it
        for a client that left."""
        out = call.outcome
        assert out is not None
        self.tracer.finish_request(span, response_model=out.model, input_tokens=out.prompt_tokens,
                                   output_tokens=out.completion_tokens, finish_reasons=[out.finish_reason],
                                   response_id=out.request_id, error=error, generation=out.generation,
                                   tool_calls=list(out.tool_calls))
        if error is None:
            self.checks.schedule(out)
        return await self._settle(ticket, out.prompt_tokens + out.completion_tokens, spend, out.cost_usd)

    async def _settle(self, ticket: Ticket, tokens: int, spend: SpendTicket = NO_SPEND,
                      cost_usd: float = 0.0) -> int | None:
        """Settle the key's tokens and spend (the true cost; serve/budgets.py) before the response
        ends, so the key's next request sees them; the budget left after, when the key has one.

        The charge runs as its own task: a client that hangs up (which cancels the response)
        cannot stop it half-way, and its failure is logged, never lost.
        """
        left = await self.budgets.settle(spend, cost_usd)
        if not ticket.tokens:
            return left
        task = asyncio.get_running_loop().create_task(self.quotas.settle(ticket, tokens))
        self._charges.add(task)
        task.add_done_callback(self._charged)
        await asyncio.wait([task])  # a failure is logged by _charged; the answer stands
        return left

    def _charged(self, task: asyncio.Task[None]) -> None:
        self._charges.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("charging tokens to a key failed; its token quota is undercounted",
                      exc_info=task.exception())

    def _reject(self, endpoint: str, err: Exception, key: ApiKey = ANONYMOUS) -> JSONResponse:
        http = from_exception(err)
        self.link.append(RequestRecord(endpoint=endpoint, requested_model="", model="", route_reason="none",
                                          status=http.status, error_type=type(err).__name__,
                                          key_name="" if key is ANONYMOUS else key.name))
        return _error_response(http)

    def models(self) -> dict[str, Any]:
        data = [{"id": "auto", "object": "model", "created": 0, "owned_by": "tiergate",
                 "description": "routed: the cheapest model that meets the request's budgets"}]
        for m in self.pool.models:
            data.append({"id": m.name, "object": "model", "created": 0, "owned_by": "tiergate",
                         "engine": m.engine, "quantization": m.quantization, "context_length": m.context_length,
                         "price": m.price.model_dump(), "prior_quality": m.prior_quality,
                         "capabilities": list(m.capabilities)})
        return {"object": "list", "data": data}

    def load(self) -> dict[str, Any]:
        """This replica's view of each model's load (shared counts when the store is shared)."""
        loads = self.gateway.loads()
        return {"replica": self.link.replica, "store": self.store.name, "models": {
            m: {"in_flight": loads[m].in_flight, "capacity": self.gateway.capacity[m].total,
                "healthy": loads[m].healthy, **reported(loads[m])} for m in loads}}

    async def health(self) -> JSONResponse:
        models = await self.upkeep.model_health()
        for name, h in models.items():  # the router sees what /health just said
            self.gateway.healthy[name] = bool(h["ready"])
        ready = all(h["ready"] for h in models.values()) and self.upkeep.store_ready
        return JSONResponse({"status": "ready" if ready else "loading", "models": models,
                             "state_store": {"name": self.store.name, "ready": self.upkeep.store_ready},
                             "quality_profile": self.upkeep.profile.info() if self.upkeep.profile else None},
                            status_code=200 if ready else 503)

    async def metrics(self) -> Response:
        if self.telemetry is None:
            return Response(b"", media_type="text/plain; version=0.0.4")
        await self.link.flush()
        text = await self.telemetry.render.remote()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def load_quality(pool: PoolConfig) -> tuple[QualityPredictor, dict[str, CascadeThreshold]]:
    """The pool's quality predictor and cascade thresholds: its calibrated profile, or the priors."""
    if pool.quality_profile:
        from serve.quality_profile import load_quality as load_profile

        loaded = load_profile(pool.quality_profile, [m.name for m in pool.models])
        return loaded.predictor, loaded.cascade_thresholds
    if pool.routing.cascade:
        raise ConfigError("routing.cascade needs a quality_profile with calibrated cascade thresholds")
    return PriorQuality({m.name: m.prior_quality for m in pool.models}), {}


@serve.deployment
@serve.ingress(app)
class Ingress:
    def __init__(self, pool: dict, models: dict, telemetry: Any) -> None:
        config = PoolConfig.model_validate(pool)
        clients = model_clients(config, models)
        quality, thresholds = load_quality(config)
        self.core = IngressCore(config, clients, quality, telemetry, cascade_thresholds=thresholds)
        self.core.start_background()

    @app.post("/v1/chat/completions", openapi_extra=_body(ChatCompletionRequest))
    async def chat_completions(self, request: Request) -> Response:
        return await self.core.handle("chat", request, ChatCompletionRequest)

    @app.post("/v1/completions", openapi_extra=_body(CompletionRequest))
    async def completions(self, request: Request) -> Response:
        return await self.core.handle("completions", request, CompletionRequest)

    def _keyed(self, request: Request, answer: Callable[[], Any]) -> Response:
        """A read-only endpoint for any valid key."""
        try:
            self.core.auth.authenticate(request.headers)
        except TiergateError as err:
            return _error_response(from_exception(err))
        return JSONResponse(answer())

    @app.get("/v1/models")
    async def list_models(self, request: Request) -> Response:
        return self._keyed(request, self.core.models)

    @app.get("/v1/tiergate/load")
    async def load(self, request: Request) -> Response:
        return self._keyed(request, self.core.load)

    @app.get("/v1/tiergate/budget")
    async def budget(self, request: Request) -> Response:
        return await budget_response(self.core.auth, self.core.budgets, request.headers)

    @app.get("/health")
    async def health(self) -> JSONResponse:
        return await self.core.health()

    @app.get("/metrics")
    async def metrics(self) -> Response:
        return await self.core.metrics()
