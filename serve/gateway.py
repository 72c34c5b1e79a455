"""The request path between HTTP and the models, free of Ray and of HTTP.

``Gateway.route`` turns a validated OpenAI request plus its headers into a :class:`Call`: the
budget, the router's decision and the generation request. ``Gateway.run`` streams the chosen
model's chunks, keeps the live load and latency model up to date and, when the run ends, freezes
the call into its :class:`~serve.call.Outcome` (``call.outcome``), whose record it hands to the
telemetry sink. Policy lives in ``router/``; this module only gathers its inputs and carries out
its decision.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import replace

from router import (
    Budget,
    Decision,
    LatencyModel,
    ModelLoad,
    Observation,
    RouteRequest,
    Router,
    merge_budget,
)
from router.admission import Capacity, Priority, WaitBound, admission_order, redirected, wait_bound, within_wait
from router.breaker import BreakerPolicy, CircuitBreakers
from router.cascade import escalated, should_escalate, with_cascade
from router.errors import (
    DeadlineExceededError,
    EngineError,
    InvalidRequestError,
    LatencyBudgetExceededError,
    OverloadedError,
    TiergateError,
)
from router.failover import may_retry, next_model
from router.pacing import Pace, decide_paced
from router.quality import CascadeThreshold, QualityPredictor
from serve.api.generation import generation_request
from serve.api.requests import budget_from, estimate_prompt_tokens, quality_class, route_class, routing_text
from serve.api.schemas import ChatCompletionRequest, CompletionRequest
from serve.call import Call
from serve.clients import ModelClient
from serve.config import PoolConfig
from serve.deadline import Deadline
from serve.engines.base import Chunk
from serve.outcome import conclude, request_record
from serve.quality_batcher import QualityBatcher
from serve.slots import Slots
from serve.state import MemoryStore, StateStore
from serve.telemetry.records import RequestRecord

RecordSink = Callable[[RequestRecord], None]

__all__ = ["Call", "Gateway", "RecordSink"]


class Gateway:
    def __init__(self, pool: PoolConfig, clients: Mapping[str, ModelClient], quality: QualityPredictor,
                 sink: RecordSink, *, clock: Callable[[], float] = time.perf_counter, store: StateStore | None = None,
                 cascade_thresholds: Mapping[str, CascadeThreshold] | None = None) -> None:
        if missing := sorted(set(m.name for m in pool.models) - set(clients)):
            raise ValueError(f"no client for model(s) {', '.join(missing)}")
        self.pool = pool
        self.clients = dict(clients)
        self.quality = quality
        self.sink = sink
        self.clock = clock
        self.latency = LatencyModel(pool.cards(), quantile=pool.routing.latency_quantile,
                                    hard_quantile=pool.limits.budget_overrun_quantile)
        self.router = Router(pool.cards(), self.latency)
        self.defaults = pool.routing.budget()
        self.healthy: dict[str, bool] = {m.name: True for m in pool.models}
        fo = pool.failover
        self.breakers = CircuitBreakers(self.healthy, BreakerPolicy(fo.breaker_failures, fo.breaker_reset_s), clock)
        self.capacity = {m.name: Capacity(slots=m.replicas * m.max_ongoing_requests,
                                          queue=m.replicas * max(0, m.max_queued_requests)) for m in pool.models}
        self.slots = Slots(store if store is not None else MemoryStore(), self.capacity,
                           ttl_s=pool.limits.request_timeout_s + 30, fail_open=pool.state.on_unavailable == "open",
                           replicas=pool.ingress_replicas)
        self.cascade_thresholds = dict(cascade_thresholds or {})
        self._quality_batcher = QualityBatcher(quality)
        m = pool.monitoring  # send prompt text to telemetry only when embedding drift or the recorder needs it
        self._send_text = (m.drift.enabled and m.drift.reference is not None) or bool(
            m.recorder.path and (m.recorder.include_embedding or m.recorder.include_prompt_text))
        self._priciest = max((c.price for c in pool.cards()), key=lambda p: p.output_per_mtok + p.input_per_mtok)

    def use_quality(self, quality: QualityPredictor, cascade_thresholds: Mapping[str, CascadeThreshold]) -> None:
        """Route the next requests on a new quality predictor (a reloaded profile)."""
        self.quality, self._quality_batcher = quality, QualityBatcher(quality)
        self.cascade_thresholds = dict(cascade_thresholds)

    @property
    def in_flight(self) -> dict[str, int]:
        """Each model's requests in flight across every ingress replica (this replica's latest view)."""
        return self.slots.in_flight

    # ------------------------------------------------------------------ routing
    def loads(self) -> dict[str, ModelLoad]:  # the shared in-flight counts beside the replicas' own reports
        return {n: self.clients[n].view.model_load(self.in_flight[n], self.healthy[n] and self.breakers.allows(n),
                                                   self.slots.arriving(n)) for n in self.in_flight}

    async def predict_quality(self, text: str) -> dict[str, float]:
        return await self._quality_batcher.predict(text)

    async def route(self, endpoint: str, req: ChatCompletionRequest | CompletionRequest,
                    headers: Mapping[str, str], *, allowed_models: frozenset[str] | None = None,
                    priority: Priority = Priority.NORMAL, key_name: str = "", pace: Pace | None = None,
                    text: str | None = None, prompt: str | None = None) -> Call:
        """``text`` and ``prompt``: the request's routing text (``routing_text(req)``) and prompt text
        (``prompt_text(req)``), when the caller has them already."""
        t0 = self.clock()
        limits = self.pool.limits
        max_tokens = req.requested_max_tokens()
        if max_tokens is not None and max_tokens > limits.max_tokens_limit:
            raise InvalidRequestError(f"max_tokens must be at most {limits.max_tokens_limit}, got {max_tokens}",
                                      param="max_tokens", code="invalid_value")
        max_tokens = max_tokens or limits.default_max_tokens
        if isinstance(req, CompletionRequest) and req.echo:
            raise InvalidRequestError("echo is not supported: the completion does not repeat the prompt",
                                      param="echo", code="unsupported_parameter")
        asked = budget_from(req.routing, headers)
        budget = merge_budget(asked, self.defaults)
        pinned = None if req.model == "auto" else req.model
        if pinned is not None:
            self.router.card(pinned)  # UnknownModelError (404) before any work
        text = routing_text(req) if text is None else text
        qclass = quality_class(req)  # a tool or schema request: its class's measured accuracy, when known
        measured = self.quality.class_quality(qclass) if qclass else None
        if measured is None:
            qclass = None
            quality = await self.predict_quality(text) if pinned is None or budget.min_quality else {}
        else:
            quality = measured
        route_req = RouteRequest(prompt=text, prompt_tokens=estimate_prompt_tokens(req, prompt), max_tokens=max_tokens,
                                 budget=budget, pinned_model=pinned, allowed_models=allowed_models,
                                 requires=req.requirements(), quality_class=qclass)
        generation = generation_request(req, max_tokens)
        request_id = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        decided, route_req = decide_paced(self.router, route_req, asked, self.defaults, pace, self.loads(), quality)
        cascade = req.routing.cascade if req.routing and req.routing.cascade is not None else self.pool.routing.cascade
        # only a latency budget the request asked for is a hard limit (the pool's default routes, no more)
        hard = asked is not None and asked.max_latency_ms is not None
        decision = await self._admit(decided, priority, request_id, route_req.budget,  # pace: a key ahead of its pace
                                     whole=cascade or not req.stream, hard=hard)
        if cascade:  # from the admitted model, with its own threshold
            decision = with_cascade(decision, self.cascade_thresholds)
        now = self.clock()
        bound = self._bound(route_req.budget, not req.stream, hard)
        answer_by = None if bound is None or bound.hard_ms is None else t0 + bound.hard_ms / 1000
        return Call(
            request_id=request_id, endpoint=endpoint, requested_model=req.model, decision=decision, generation=generation,
            budget=route_req.budget, stream=req.stream, include_usage=req.include_usage(), created=int(time.time()),
            started=t0, deadline=t0 + limits.request_timeout_s, answer_by=answer_by, decision_s=now - t0, route_request=route_req,
            quality=quality, priority=priority, key_name=key_name, reserved=True,
            cascade=decision.escalate_to is not None, route_class=route_class(pinned is not None, asked),
        )

    def _bound(self, budget: Budget, whole: bool, hard: bool) -> WaitBound | None:
        """The request's wait bound; ``hard``: its budget plus the pool's overrun is a hard limit."""
        limits = self.pool.limits
        return wait_bound(budget, limits.max_queue_wait_ms, limits.budget_overrun_ms if hard else None, whole)

    async def _admit(self, decision: Decision, priority: Priority, holder: str, budget: Budget, *,
                     whole: bool, hard: bool) -> Decision:
        """Admission control (``router.admission``): the router's choice if it has room, else the next;
        none whose predicted wait exceeds the budget or the pool's maximum queue wait (503 at once). The
        slot is leased in one atomic step of the shared store: concurrent requests cannot all pass."""
        order = within_wait(decision, admission_order(decision), self._bound(budget, whole, hard))
        chosen = await self.slots.admit(order, priority, holder, {m: self.latency.mean_service_ms(m) for m in order},
                                        {p.model: p.service_ms for p in (decision.prediction, *decision.candidates)})
        return redirected(decision, chosen)

    # ------------------------------------------------------------------ running
    async def run(self, call: Call) -> AsyncIterator[Chunk]:
        """Stream the chosen model's chunks, failing over before the first token; always records."""
        try:
            if call.cascade:
                kept = await self._cheap_answer(call)
                if kept is not None:
                    for chunk in kept:
                        yield chunk
                    return
            while True:
                model = call.model
                try:
                    async with aclosing(self._attempt(call, model)) as attempt:  # a client that leaves frees the slot now
                        async for chunk in attempt:
                            yield chunk
                    return
                except _Failover as fo:
                    nxt = self._next_model(call, model)
                    if nxt is None:
                        raise fo.error from None
                    call.failovers.append(model)
                    call.decision = nxt
        except TiergateError as err:
            call.status, call.error_type = _status_of(err), type(err).__name__
            call.finish_reason = call.finish_reason or "error"
            raise
        except (asyncio.CancelledError, GeneratorExit):
            call.status, call.error_type, call.finish_reason = 499, "ClientDisconnected", "cancelled"
            raise
        except Exception as err:  # a bug, not a model outage: recorded as such, raised as it is
            call.status, call.error_type, call.finish_reason = 500, type(err).__name__, "error"
            raise
        finally:
            call.e2e_s = self.clock() - call.started
            call.outcome = conclude(call, self.router.card(call.model).price, self._priciest)
            self.sink(request_record(call.outcome, with_prompt_text=self._send_text))

    async def _cheap_answer(self, call: Call) -> list[Chunk] | None:
        """The cascade's first step: the cheap model's answer if confident enough, else None.

        The cheap answer is buffered (the caller must not see an answer that may be replaced).
        On None, ``call`` has been turned to the escalation target (both calls are charged),
        which then runs, and fails over, like any routed model.
        """
        cheap, target = call.model, call.decision.escalate_to
        threshold = call.decision.escalate_below_confidence
        assert target is not None and threshold is not None
        if call.decision.escalate_first:  # trying the cheap model would cost more than it saves
            if call.reserved:
                call.reserved = False
                self.slots.free(cheap, call.request_id)
            call.cascade_from, call.decision = cheap, escalated(call.decision, None)
            return None
        wanted = call.generation
        call.generation = replace(wanted, sampling=replace(wanted.sampling, logprobs=True))
        try:
            chunks = [c async for c in self._attempt(call, cheap, whole=True)]
        except _Failover as fo:
            chunks, call.cascade_confidence = [], None
            call.failovers.append(cheap)
            if not may_retry(len(call.failovers), self.pool.failover.max_retries):
                raise fo.error from None
        finally:
            call.generation = wanted
        if chunks:
            call.cascade_confidence = call.mean_logprob
            if not should_escalate(call.cascade_confidence, threshold):
                return [chunk if wanted.sampling.logprobs else replace(chunk, logprobs=()) for chunk in chunks]
            call.cascade_from = cheap
            call.cascade_cost_usd = self.router.card(cheap).price.cost(call.prompt_tokens, call.completion_tokens)
        call.decision = escalated(call.decision, call.cascade_confidence, failed=not chunks)
        call.ttft_s, call.prompt_tokens, call.completion_tokens = None, 0, 0
        call.text_parts, call.tool_calls, call.logprob_sum, call.logprob_n, call.finish_reason = [], [], 0.0, 0, ""
        return None

    def _next_model(self, call: Call, failed: str) -> Decision | None:
        """``router.failover``'s next model; an escalated cascade does not go back to the model it refused."""
        if call.route_request is None:
            return None
        return next_model(self.router, call.route_request, self.loads(), call.quality,
                          [*call.failovers, failed, *([call.cascade_from] if call.cascade_from else [])],
                          failures=len(call.failovers) + 1, max_retries=self.pool.failover.max_retries,
                          bound=self._bound(call.budget, not call.stream, call.answer_by is not None),
                          waited_ms=(self.clock() - call.started) * 1000)

    async def _attempt(self, call: Call, model: str, *, whole: bool = False) -> AsyncIterator[Chunk]:
        """One model's try. Failures before its first chunk raise _Failover; later ones propagate.
        ``whole``: the caller sees nothing before the answer ends (a cascade's buffered cheap answer)."""
        if call.reserved:
            call.reserved = False
            ahead = self.in_flight[model] - 1
        else:
            ahead = await self.slots.take(model, call.request_id)
        self.breakers.on_attempt(model)
        began = self.clock()
        first_timeout = self.pool.failover.first_token_timeout_s
        loop_now = asyncio.get_running_loop().time()
        answer_by = call.answer_by - began if call.answer_by is not None else float("inf")
        deadline = Deadline(loop_now + min(call.deadline - began, first_timeout, answer_by))
        stream = self.clients[model].stream(call.generation)
        started, first_at, judged = False, None, False
        try:
            while True:
                try:
                    chunk = await deadline.wait(stream.__anext__())
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    raise self._timed_out(call, model, started, first_timeout) from None
                if not started:
                    started = True
                    whole_answer = whole or not call.stream  # the client has seen nothing yet
                    deadline.reschedule(loop_now + min(call.deadline - began, answer_by if whole_answer else
                                                       float("inf")))
                if first_at is None and (chunk.text or chunk.finish_reason or chunk.completion_tokens):
                    first_at = self.clock()  # a tool call's text is held back: its first token still counts
                self._account(call, chunk)
                yield chunk
        except LatencyBudgetExceededError:
            raise  # the model is slow, not broken: no failover, no breaker failure
        except (EngineError, OverloadedError) as err:
            self.breakers.on_failure(model)
            judged = True
            if started:
                raise
            raise _Failover(err) from None
        else:
            self.breakers.on_success(model)
            judged = True
            self._learn(call, model, ahead, began, first_at)
        finally:
            if not judged:
                self.breakers.on_abandoned(model)
            deadline.close()
            await stream.aclose()
            self.slots.free(model, call.request_id)

    def _timed_out(self, call: Call, model: str, started: bool, first_timeout: float) -> TiergateError:
        """Which limit ran out: the request's deadline, its latency budget's overrun, or the model's
        first-token timeout."""
        now = self.clock()
        if call.deadline - now <= 0:
            return DeadlineExceededError(f"request exceeded its {self.pool.limits.request_timeout_s:g}s deadline and "
                                         "was cancelled", code="deadline_exceeded")
        if call.answer_by is not None and now >= call.answer_by - 0.01:
            if not started:
                self._learn_queue(call, model, now)  # a lower bound: it had not come yet
            return LatencyBudgetExceededError(
                f"no {'answer' if started else 'first token'} from {model} within the latency budget "
                f"({call.budget.max_latency_ms:g} ms) plus the pool's overrun "
                f"({self.pool.limits.budget_overrun_ms:g} ms): cancelled",
                retry_after_s=max(1.0, self.latency.mean_service_ms(model) / 1000))
        return EngineError(f"model {model} sent no token within {first_timeout:g}s", code="first_token_timeout")

    def _account(self, call: Call, chunk: Chunk) -> None:
        if call.ttft_s is None and (chunk.text or chunk.finish_reason):
            call.ttft_s = self.clock() - call.started
        call.prompt_tokens = max(call.prompt_tokens, chunk.prompt_tokens)
        call.completion_tokens = max(call.completion_tokens, chunk.completion_tokens)
        if chunk.text:
            call.text_parts.append(chunk.text)
        call.tool_calls.extend(chunk.tool_calls)
        for lp in chunk.logprobs:
            call.logprob_sum += lp.logprob
            call.logprob_n += 1
        if chunk.finish_reason:
            call.finish_reason = chunk.finish_reason

    def _learn(self, call: Call, model: str, ahead: int, began: float, first_at: float | None) -> None:
        """Teach the latency model this attempt's own timings (not a failed or refused attempt's)."""
        if first_at is None:
            return
        self._learn_queue(call, model, first_at)
        self.latency.observe(model, Observation(
            prompt_tokens=call.prompt_tokens, output_tokens=call.completion_tokens,
            ttft_ms=(first_at - began) * 1000, e2e_ms=(self.clock() - began) * 1000, ahead_at_start=ahead))

    def _learn_queue(self, call: Call, model: str, first_at: float) -> None:
        """A queued request's first token (or, cut off, its wait so far) against admission's prediction."""
        pred = call.decision.prediction
        if pred.model == model and pred.wait_ms > 0 and not call.cascade_from:
            self.latency.observe_first_token(model, pred.first_token_ms, (first_at - call.started) * 1000)


class _Failover(Exception):
    """A model failed before its first token: try the next one."""

    def __init__(self, error: TiergateError) -> None:
        super().__init__(str(error))
        self.error = error


def _status_of(err: TiergateError) -> int:
    from serve.api.errors import from_exception

    return from_exception(err).status
