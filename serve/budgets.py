"""Spend budgets: a key's (and its team's) USD per day or month, kept in the shared state store.

Money is counted in integer micro-USD, one counter per holder and period
(``spend:key:<name>:day:<first day>``), in the :class:`~serve.state.StateStore` that every
ingress replica shares. A request's life:

1. **admit** (before routing): the most the request could cost is reserved on each of its
   holders' counters, atomically, and only while every counter stays within its budget. That
   maximum is the prompt (bounded from above by its UTF-8 bytes plus the chat template's
   tokens) and ``max_tokens`` at the most expensive model it may run on; with a cascade, the
   cheap model's call too (a failover costs nothing more: a model that fails before its first
   token has produced no usage). Models whose maximum the remaining budget cannot pay are taken
   out of the request's routing; when no model with a price is left, the budget is exhausted:
   429 ``insufficient_quota`` with the reset time, or, where the budget says
   ``zero_cost_models``, routing among the models priced 0.
2. **settle** (after the answer, streams included, also when the client hung up): the
   reservation is replaced by the true cost from the answer's usage (``adjust``), so the
   counter holds what answered requests cost plus what requests in flight may still cost.

As every reservation is an upper bound of the cost it stands for and is taken only while the
counter stays within the budget, the spend never passes the budget however many replicas admit
at once; the bound on the prompt is the one estimate, and a chat template longer than it
allows for could overshoot by at most that excess of one request. Shadow and probe calls
(``serve/shadow.py``) are the operator's spend: they are never charged to a key.

Pacing: the spend so far against even pace through the period (``router/pacing.py``) is handed
to the router with each request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.responses import JSONResponse, Response

from router.errors import BudgetExhaustedError, TiergateError
from router.pacing import Pace, furthest_ahead, pace
from serve.api.errors import from_exception
from serve.api.schemas import ChatCompletionRequest, CompletionRequest
from serve.auth import ApiKey, Authenticator, KeyFile, SpendBudget
from serve.config import ModelConfig, PoolConfig
from serve.state import StateStore, StoreUnavailableError

log = logging.getLogger("tiergate.budgets")

MICRO = 1_000_000
PROMPT_OVERHEAD_TOKENS = 64  # a chat template's fixed tokens (system preamble, generation prompt)
TOOLS_OVERHEAD_TOKENS = 256  # the tool-use preamble some templates add around the tool definitions
REMAINING_HEADER = "x-tiergate-budget-remaining-usd"
RESETS_HEADER = "x-tiergate-budget-resets-at"


def to_micro(usd: float) -> int:
    """USD as micro-USD, rounded up (a charge is never smaller than the cost)."""
    return math.ceil(round(usd * MICRO, 6))


def to_usd(micro: int) -> float:
    return micro / MICRO


# ----------------------------------------------------------------------------- periods
def period_bounds(now: float, budget: SpendBudget) -> tuple[datetime, datetime]:
    """The period ``now`` (a Unix time) falls in: local midnight to midnight, or the 1st to the 1st,
    in the budget's time zone. Both ends are aware datetimes; compare them by ``timestamp()``
    (days with a DST change are 23 or 25 hours long)."""
    zone = ZoneInfo(budget.timezone)
    local = datetime.fromtimestamp(now, zone)
    if budget.period == "day":
        start = datetime(local.year, local.month, local.day, tzinfo=zone)
        nxt = start.date() + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
    else:
        start = datetime(local.year, local.month, 1, tzinfo=zone)
        end = datetime(local.year + (local.month == 12), local.month % 12 + 1, 1, tzinfo=zone)
    return start, end


@dataclass(frozen=True)
class Holder:
    """One budget a request is charged to: its key's own, or its key's team's."""

    kind: str  # "key" | "team"
    name: str
    budget: SpendBudget

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    def window(self, now: float) -> tuple[str, datetime, datetime, int]:
        """The counter of the period ``now`` falls in, the period's bounds and the counter's ttl."""
        start, end = period_bounds(now, self.budget)
        counter = f"spend:{self.kind}:{self.name}:{self.budget.period}:{start.strftime('%Y-%m-%d')}"
        ttl = max(1, math.ceil(end.timestamp() - now)) + 86_400  # readable for a day after the reset
        return counter, start, end, ttl

    @property
    def limit(self) -> int:
        return int(round(self.budget.usd * MICRO))


@dataclass(frozen=True)
class Standing:
    """A holder's spend in the current period, as read from the store."""

    holder: Holder
    counter: str
    start: datetime
    end: datetime
    ttl: int
    spent: int  # micro-USD: answered requests' true cost plus what requests in flight reserved

    @property
    def remaining(self) -> int:
        return self.holder.limit - self.spent

    def pace(self, now: float) -> Pace:
        return pace(self.holder.label, self.holder.budget.period, to_usd(self.spent), self.holder.budget.usd,
                    now - self.start.timestamp(), self.end.timestamp() - self.start.timestamp(),
                    full_at=self.holder.budget.pace_full_at)


@dataclass(frozen=True)
class Ticket:
    """What admission granted one request: where its reservation lies and what it may route to."""

    allowed_models: frozenset[str] | None  # None: every model the pool has
    reserved: int = 0  # micro-USD, on each of ``counters``
    counters: tuple[tuple[str, int, int], ...] = ()  # (counter, ttl, limit)
    pace: Pace | None = None
    remaining: int | None = None  # micro-USD left after the reservation, on the tightest holder
    resets_at: datetime | None = None  # the tightest holder's reset
    zero_cost_only: bool = False  # exhausted: routed among the models priced 0
    budgeted: bool = False

    def headers(self, remaining: int | None = None) -> dict[str, str]:
        """The response headers: the remaining budget (after settling when given) and its reset."""
        if not self.budgeted:
            return {}
        left = self.remaining if remaining is None else remaining
        out = {REMAINING_HEADER: f"{max(0, left or 0) / MICRO:.6f}"}
        if self.resets_at is not None:
            out[RESETS_HEADER] = self.resets_at.isoformat()
        return out


SpendTicket = Ticket  # the name the ingress knows it by (beside the quota's own Ticket)
NO_SPEND = Ticket(allowed_models=None)  # before admission: nothing reserved, nothing narrowed


# ----------------------------------------------------------------------------- the most a request costs
def prompt_bound(body: ChatCompletionRequest | CompletionRequest) -> int:
    """More prompt tokens than the request can have on any model: its JSON's UTF-8 bytes (a
    byte-level tokenizer's token is at least one byte) plus the chat template's own tokens."""
    size = len(body.model_dump_json(exclude_unset=True, exclude_none=True).encode("utf-8")) + PROMPT_OVERHEAD_TOKENS
    if isinstance(body, ChatCompletionRequest) and body.tools:
        size += TOOLS_OVERHEAD_TOKENS
    return size


def max_cost(model: ModelConfig, prompt_tokens: int, max_tokens: int) -> int:
    """The most one call to ``model`` may cost, in micro-USD (neither side past the context)."""
    ctx = model.context_length
    usd = (min(prompt_tokens, ctx) * model.price.input_per_mtok + min(max_tokens, ctx) * model.price.output_per_mtok)
    return to_micro(usd / 1e6)


def is_free(model: ModelConfig) -> bool:
    return model.price.input_per_mtok == 0 and model.price.output_per_mtok == 0


def reservation(costs: Sequence[int], cascade: bool) -> int:
    """What to reserve for a request that may run on models of these maximum costs: the dearest,
    and with a cascade the next dearest too (the cheap call, then the escalation)."""
    top = sorted(costs, reverse=True)[:2 if cascade else 1]
    return sum(top)


def affordable(costs: dict[str, int], cascade: bool, remaining: int) -> dict[str, int]:
    """The models a remaining budget can pay for: the dearest dropped until the reservation fits."""
    kept = dict(sorted(costs.items(), key=lambda kv: (-kv[1], kv[0])))
    while kept and reservation(list(kept.values()), cascade) > remaining:
        kept.pop(next(iter(kept)))
    return kept


# ----------------------------------------------------------------------------- the keeper
@dataclass
class Budgets:
    """Every budgeted key's and team's spend, on one shared store."""

    pool: PoolConfig
    keys: KeyFile | None
    store: StateStore
    clock: Callable[[], float] = time.time
    store_errors: int = 0
    publish_interval_s: float = 5.0
    _settling: set[asyncio.Task[None]] = field(default_factory=set)

    def holders(self, key: ApiKey) -> tuple[Holder, ...]:
        out = []
        if key.budget is not None:
            out.append(Holder("key", key.name, key.budget))
        team = self.keys.team(key.team) if self.keys is not None else None
        if team is not None:
            out.append(Holder("team", team.name, team.budget))
        return tuple(out)

    def all_holders(self) -> tuple[Holder, ...]:
        if self.keys is None:
            return ()
        own = [Holder("key", k.name, k.budget) for k in self.keys.keys if k.budget is not None]
        return tuple(own + [Holder("team", t.name, t.budget) for t in self.keys.teams])

    async def standings(self, holders: Iterable[Holder], now: float) -> list[Standing]:
        windows = [(h, *h.window(now)) for h in holders]
        values = await self.store.values([w[1] for w in windows])
        return [Standing(h, counter, start, end, ttl, values.get(counter, 0))
                for h, counter, start, end, ttl in windows]

    # ------------------------------------------------------------------ admission
    async def admit(self, key: ApiKey, body: ChatCompletionRequest | CompletionRequest) -> Ticket:
        """Reserve the request's maximum cost on each of the key's budgets, or raise
        :class:`BudgetExhaustedError`. The ticket narrows the key's models to those it can pay for."""
        allowed = key.allowed_models()
        holders = self.holders(key)
        if not holders:
            return Ticket(allowed_models=allowed)
        try:
            for attempt in (1, 2):  # a second read when another replica took the room in between
                ticket = await self._try_admit(key, body, holders, allowed, last=attempt == 2)
                if ticket is not None:
                    return ticket
        except StoreUnavailableError as err:
            self.store_errors += 1
            if self.pool.state.on_unavailable == "closed":
                raise
            log.warning("spend budgets unchecked for key %r (state store unavailable, failing open): %s",
                        key.name, err)
            return Ticket(allowed_models=allowed)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _try_admit(self, key: ApiKey, body: ChatCompletionRequest | CompletionRequest,
                         holders: Sequence[Holder], allowed: frozenset[str] | None, last: bool) -> Ticket | None:
        now = self.clock()
        standings = await self.standings(holders, now)
        tightest = min(standings, key=lambda s: s.remaining)
        candidates, usable, cascade = self._candidates(body, allowed)
        if not candidates:  # an unknown or forbidden model: routing refuses it, nothing to reserve
            return Ticket(allowed_models=allowed)
        prompt, out = prompt_bound(body), body.requested_max_tokens() or self.pool.limits.default_max_tokens
        costs = {m.name: max_cost(m, prompt, out) for m in candidates}
        paid_usable = [max_cost(m, prompt, out) for m in usable if not is_free(m)]
        exhausted = bool(paid_usable) and min(paid_usable) > tightest.remaining
        zero_only = False
        if exhausted:
            chosen = {m: c for m, c in costs.items() if c == 0}
            short = [s for s in standings if min(paid_usable) > s.remaining]
            if not chosen or not all(s.holder.budget.zero_cost_models for s in short):
                raise self._exhausted(key, tightest, now)
            zero_only = True
        else:
            chosen = affordable(costs, cascade, tightest.remaining)
            if not chosen:
                raise self._unaffordable(key, tightest, costs, now)
        amount = reservation(list(chosen.values()), cascade)
        taken: list[Standing] = []
        if amount > 0:
            for s in standings:
                if await self.store.reserve(s.counter, amount, s.holder.limit, s.ttl) is None:
                    await self._give_back([(t.counter, t.ttl, t.holder.limit) for t in taken], amount)
                    if last:
                        raise self._unaffordable(key, s, costs, now)
                    return None
                taken.append(s)
        paced = furthest_ahead(s.pace(now) for s in standings if s.holder.budget.pacing)
        if body.model != "auto" or len(chosen) == len(usable):
            narrowed = allowed
        else:
            narrowed = frozenset(chosen)
        return Ticket(allowed_models=narrowed, reserved=amount,
                      counters=tuple((s.counter, s.ttl, s.holder.limit) for s in taken),
                      pace=paced, remaining=tightest.remaining - amount, resets_at=tightest.end,
                      zero_cost_only=zero_only, budgeted=True)

    def _candidates(self, body: ChatCompletionRequest | CompletionRequest, allowed: frozenset[str] | None
                    ) -> tuple[list[ModelConfig], list[ModelConfig], bool]:
        """The models this request may run on, the key's usable models, and whether it may cascade."""
        usable = [m for m in self.pool.models if allowed is None or m.name in allowed]
        if body.model != "auto":
            return [m for m in usable if m.name == body.model], usable, False
        routing = body.routing
        cascade = routing.cascade if routing is not None and routing.cascade is not None else self.pool.routing.cascade
        return usable, usable, bool(cascade)

    def _exhausted(self, key: ApiKey, s: Standing, now: float) -> BudgetExhaustedError:
        b = s.holder.budget
        whose = f"key {key.name!r}" if s.holder.kind == "key" else f"team {s.holder.name!r} of key {key.name!r}"
        return BudgetExhaustedError(
            f"{whose} has used its ${b.usd:g} {b.period} budget (${to_usd(max(0, s.spent)):.6f} spent or in flight); "
            f"it resets at {s.end.isoformat()}" + ("; models priced 0 still answer meanwhile" if b.zero_cost_models
                                                  else "; no model priced 0 may be used meanwhile"),
            retry_after_s=max(1.0, s.end.timestamp() - now), resets_at=s.end.isoformat())

    def _unaffordable(self, key: ApiKey, s: Standing, costs: dict[str, int], now: float) -> BudgetExhaustedError:
        b = s.holder.budget
        whose = f"key {key.name!r}" if s.holder.kind == "key" else f"team {s.holder.name!r} of key {key.name!r}"
        cheapest = min(costs.values()) if costs else 0
        return BudgetExhaustedError(
            f"this request may cost up to ${to_usd(cheapest):.6f} (its prompt and max_tokens), more than the "
            f"${to_usd(max(0, s.remaining)):.6f} left of {whose}'s ${b.usd:g} {b.period} budget; lower max_tokens, "
            f"or wait for the reset at {s.end.isoformat()}",
            retry_after_s=max(1.0, s.end.timestamp() - now), resets_at=s.end.isoformat())

    # ------------------------------------------------------------------ settling
    async def settle(self, ticket: Ticket, cost_usd: float) -> int | None:
        """Replace the reservation by the true cost; the tightest holder's remaining micro-USD after.

        Runs as its own task: a client that hangs up (cancelling the response) cannot stop it
        half-way. A failure is logged and the reservation stands (the key is charged its maximum).
        """
        if not ticket.budgeted:
            return None
        task = asyncio.get_running_loop().create_task(self._settle(ticket, to_micro(cost_usd)))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - the answer stands; the reservation is the charge
            self.store_errors += isinstance(err, StoreUnavailableError)
            log.error("settling a request's spend failed; its reservation of $%.6f stands: %s",
                      to_usd(ticket.reserved), err)
            return None

    async def _settle(self, ticket: Ticket, cost: int) -> int | None:
        if not ticket.counters:  # nothing reserved (models priced 0, or the store failed open)
            return ticket.remaining
        left = [limit - await self.store.adjust(counter, cost - ticket.reserved, ttl)
                for counter, ttl, limit in ticket.counters]
        return min(left)

    async def release(self, ticket: Ticket) -> None:
        """Give the whole reservation back: the request was refused before it ran."""
        if ticket.reserved:
            try:
                await self._give_back(ticket.counters, ticket.reserved)
            except StoreUnavailableError as err:
                self.store_errors += 1
                log.error("releasing a refused request's reservation failed; $%.6f stays counted: %s",
                          to_usd(ticket.reserved), err)

    async def _give_back(self, counters: Sequence[tuple[str, int, int]], amount: int) -> None:
        for counter, ttl, _ in counters:
            await self.store.adjust(counter, -amount, ttl)

    # ------------------------------------------------------------------ reporting
    async def report(self, key: ApiKey) -> dict[str, Any]:
        """A key's own budgets now: spend, budget, remaining, reset and pace (GET /v1/tiergate/budget)."""
        now = self.clock()
        rows = []
        for s in await self.standings(self.holders(key), now):
            b, p = s.holder.budget, s.pace(now)
            rows.append({
                "holder": s.holder.kind, "name": s.holder.name, "period": b.period, "timezone": b.timezone,
                "period_start": s.start.isoformat(), "resets_at": s.end.isoformat(),
                "budget_usd": b.usd, "spent_usd": to_usd(s.spent), "remaining_usd": to_usd(max(0, s.remaining)),
                "zero_cost_models": b.zero_cost_models,
                "pace": {"elapsed": round(p.elapsed, 6), "expected_usd": round(p.expected_usd, 6),
                         "ahead_usd": round(p.ahead_usd, 6), "ahead": p.ahead, "pacing": b.pacing,
                         "floor_lowered_by": round(p.strength, 6) if b.pacing else 0.0},
            })
        return {"object": "tiergate.budget", "key": key.name, "budgets": rows,
                "note": "spent_usd counts answered requests at their true cost and requests in flight at "
                        "their maximum cost until they finish"}

    async def publish(self, telemetry: Any) -> None:
        """Send every budget's standing to the telemetry deployment (the spend gauges), forever."""
        if telemetry is None or not self.all_holders():
            return
        while True:
            try:
                await telemetry.set_spend.remote(await self.snapshot())
            except Exception as err:  # noqa: BLE001 - gauges must never hurt serving
                log.warning("publishing the spend budgets' standing failed: %s", err)
            await asyncio.sleep(self.publish_interval_s)

    async def snapshot(self) -> list[dict[str, Any]]:
        """Every budget's standing, for the telemetry gauges."""
        now = self.clock()
        holders = self.all_holders()
        if not holders:
            return []
        return [{"kind": s.holder.kind, "name": s.holder.name, "period": s.holder.budget.period,
                 "budget_usd": s.holder.budget.usd, "spent_usd": to_usd(s.spent),
                 "ahead_ratio": s.pace(now).ahead_fraction}
                for s in await self.standings(holders, now)]


async def budget_response(auth: Authenticator, budgets: Budgets, headers: Mapping[str, str]) -> Response:
    """GET /v1/tiergate/budget: the calling key's own budgets (never another key's), or its error."""
    try:
        return JSONResponse(await budgets.report(auth.authenticate(headers)))
    except TiergateError as err:
        http = from_exception(err)
        return JSONResponse(http.body, status_code=http.status, headers=http.headers)
