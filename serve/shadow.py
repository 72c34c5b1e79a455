"""Brittleness checks off the request path: shadow comparisons and perturbation probes.

After a request has been answered, the ingress hands its :class:`~serve.outcome.Outcome` here. It draws the sample
itself (each check's ``rate``); for a drawn request only, the telemetry deployment is asked for a
grant (rate, cost and concurrency capped there), then the same request is re-asked of the
strongest model (shadow) or a meaning-preserving perturbation of it is re-asked of the same
model (probe), and the answers' agreement is reported back. Nothing here can delay or fail the
caller's request: it runs after the answer was sent, only on a model with a free slot, and gives
way (is cancelled, and counted ``preempted``) when a caller takes a slot on its model while it
runs; every failure is only counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import replace
from typing import Any

from serve.config import PoolConfig
from serve.engines.base import GenerationRequest, Message
from serve.gateway import Gateway
from serve.call import Outcome
from serve.telemetry.sampling import draw

log = logging.getLogger("tiergate.shadow")


class OutputChecks:
    def __init__(self, pool: PoolConfig, gateway: Gateway, telemetry: Any) -> None:
        cfg = pool.monitoring.brittleness
        self.enabled = cfg.enabled and telemetry is not None and len(pool.models) > 0
        self.shadow_model = cfg.shadow_model or max(pool.models, key=lambda m: m.prior_quality).name
        self.gateway = gateway
        self.telemetry = telemetry
        self.keep_prompts = pool.monitoring.outcomes.path is not None and pool.monitoring.outcomes.include_prompt_text
        self.shadow_sampling, self.probe_sampling = cfg.shadow, cfg.probe
        self.rng = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, outcome: Outcome) -> None:
        """Draw this answer's checks here; only a drawn one costs a call to the telemetry deployment."""
        if not self.enabled or not outcome.answered or not outcome.text:
            return
        shadow = self._shadows(outcome.model) and draw(self.rng, self.shadow_sampling)
        probe = draw(self.rng, self.probe_sampling)
        if not (shadow or probe):
            return
        task = asyncio.get_event_loop().create_task(self._run(outcome, shadow, probe))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _shadows(self, model: str) -> bool:
        return model != self.shadow_model and self.shadow_model in self.gateway.clients

    def _est_cost(self, model: str, outcome: Outcome) -> float:
        price = self.gateway.router.card(model).price
        return price.cost(outcome.prompt_tokens, outcome.generation.sampling.max_tokens)

    @asynccontextmanager
    async def _idle_slot(self, model: str, holder: str) -> AsyncIterator[bool]:
        """A free slot on ``model`` for one check, or False: a loaded model skips its checks (callers never
        queue behind them), before telemetry is asked for a grant, so a skip costs none. The slot counts
        in the model's in-flight load, so the router sees what checks cost it."""
        card = self.gateway.router.card(model)
        if not await self.gateway.slots.take_idle(model, holder, card.concurrency * card.replicas):
            yield False
            return
        try:
            yield True
        finally:
            self.gateway.slots.free(model, holder)

    async def _answer(self, model: str, gen: GenerationRequest) -> str:
        # closed at once when the check is cancelled, so the model stops generating for it
        async with aclosing(self.gateway.clients[model].stream(gen)) as stream:  # type: ignore[type-var]
            return "".join([c.text async for c in stream])

    async def _run(self, outcome: Outcome, shadow: bool = True, probe: bool = True) -> None:
        try:
            if shadow:
                await self._shadow(outcome)
            if probe:
                await self._probe(outcome)
        except Exception as err:  # noqa: BLE001 - checks must never surface
            log.warning("brittleness check failed: %s", err)

    async def _shadow(self, outcome: Outcome) -> None:
        model, shadow = outcome.model, self.shadow_model
        if not self._shadows(model):
            return
        common = {"model": model, "route_class": outcome.route_class, "shadow_model": shadow}
        async with self._idle_slot(shadow, outcome.request_id + ":shadow") as idle:
            if not idle or not await self.telemetry.plan_shadow.remote(
                    **common, est_cost_usd=self._est_cost(shadow, outcome), drawn=True):
                return
            self.gateway.slots.give_way(shadow, outcome.request_id + ":shadow")
            try:
                answer = await self._answer(shadow, _greedy(outcome.generation))
            except asyncio.CancelledError:  # a caller came (Slots' preemption), or the replica stops
                await self.telemetry.record_shadow_error.remote(**common, preempted=True)
                raise
            except Exception:  # noqa: BLE001
                await self.telemetry.record_shadow_error.remote(**common)
                return
        route = outcome.route_request
        await self.telemetry.record_shadow.remote(
            **common, predicted_quality=outcome.decision.prediction.quality, answer=outcome.text,
            shadow_answer=answer, cost_usd=self._est_cost(shadow, outcome),
            quality_class=route.quality_class if route is not None else None,
            prompt=route.prompt if route is not None and self.keep_prompts else None)

    async def _probe(self, outcome: Outcome) -> None:
        model = outcome.model
        prompt = _user_text(outcome.generation)
        greedy = outcome.generation.sampling.temperature == 0
        calls = 1 if greedy else 2  # greedy answers are reused
        async with self._idle_slot(model, outcome.request_id + ":probe") as idle:
            perturbation = None if not idle else await self.telemetry.plan_probe.remote(
                model=model, prompt=prompt, est_cost_usd=calls * self._est_cost(model, outcome), drawn=True)
            if perturbation is None:
                return
            base = _greedy(outcome.generation)
            self.gateway.slots.give_way(model, outcome.request_id + ":probe")
            try:
                # compare greedy answers, so a flip is the perturbation's doing, not sampling noise
                answer = outcome.text if greedy else await self._answer(model, base)
                probe_answer = await self._answer(model, _with_user_text(base, perturbation.text))
            except asyncio.CancelledError:  # as in _shadow
                await self.telemetry.record_probe_error.remote(model=model, perturbation=perturbation.name,
                                                               preempted=True)
                raise
            except Exception:  # noqa: BLE001
                await self.telemetry.record_probe_error.remote(model=model, perturbation=perturbation.name)
                return
        await self.telemetry.record_probe.remote(model=model, perturbation=perturbation.name, answer=answer,
                                                 probe_answer=probe_answer,
                                                 cost_usd=calls * self._est_cost(model, outcome))


def _greedy(gen: GenerationRequest) -> GenerationRequest:
    sp = replace(gen.sampling, temperature=0.0, logprobs=False, top_logprobs=0)
    return replace(gen, request_id=gen.request_id + "-check", sampling=sp)


def _user_text(gen: GenerationRequest) -> str:
    if gen.prompt is not None:
        return gen.prompt
    users = [m for m in gen.messages or () if m.role == "user"]
    return users[-1].content if users else ""


def _with_user_text(gen: GenerationRequest, text: str) -> GenerationRequest:
    if gen.prompt is not None:
        return replace(gen, prompt=text)
    msgs = list(gen.messages or ())
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].role == "user":
            msgs[i] = Message("user", text)
            break
    return replace(gen, messages=tuple(msgs))
