"""Spend budgets (serve/budgets.py) on real stores: the in-memory one and a real redis-server
(the session's ``redis_url``).

Two ``Budgets`` on one store stand for two ingress replicas. The models are priced configs only
(no engine runs here); the request path with real models is in test_budgets_e2e.py.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone

import pytest
import pytest_asyncio

from router.errors import BudgetExhaustedError
from serve.api.errors import from_exception
from serve.api.schemas import ChatCompletionRequest
from serve.auth import KeyFile, SpendBudget, _parse
from serve.budgets import (
    MICRO,
    REMAINING_HEADER,
    RESETS_HEADER,
    Budgets,
    max_cost,
    period_bounds,
    prompt_bound,
    to_micro,
)
from serve.state import MemoryStore, StoreUnavailableError
from serve.state.redis_store import RedisStore
from tests.serve.ingress_app import fake_pool

# USD per 1M tokens: a request of ~150 prompt-bound tokens and 100 output tokens costs ~$0.35 on
# 'big', ~$0.035 on 'small'; 'free' costs nothing.
MODELS = {"small": (100.0, 0.3, {}), "big": (1000.0, 0.9, {}), "free": (0.0, 0.2, {})}
ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")  # the store fixture's loop
NOON = datetime(2026, 6, 10, 12, 0, tzinfo=timezone.utc).timestamp()  # half of a UTC day gone


def pool(**extra):
    return fake_pool(MODELS, **extra)


def keyfile(text: str) -> KeyFile:
    return _parse(text, "test")


def chat(model="auto", max_tokens=100, text="Name one primary colour.", **extra) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": model, "max_tokens": max_tokens,
                                                 "messages": [{"role": "user", "content": text}], **extra})


KEYS = keyfile("""
keys:
  - {name: alice, key: alice-0123456789abcdef, budget: {usd: 1.0}}
  - {name: bob, key: bob-0123456789abcdefgh, budget: {usd: 1.0, zero_cost_models: true}}
  - {name: carol, key: carol-0123456789abcdef, team: research}
  - {name: dave, key: dave-0123456789abcdefg, team: research, budget: {usd: 100}}
  - {name: erin, key: erin-0123456789abcdefg}
teams:
  - {name: research, budget: {usd: 2.0, period: month, timezone: Europe/Paris}}
""")
ALICE, BOB, CAROL, DAVE, ERIN = KEYS.keys


@pytest_asyncio.fixture(params=["memory", "redis"], loop_scope="module")
async def store(request, redis_url):
    """A fresh store (the Redis one emptied first)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    s = RedisStore(redis_url, timeout_s=2.0)
    await s._redis.flushdb()
    yield s
    await s.close()


def cost_of(model: str, body: ChatCompletionRequest) -> int:
    p = pool()
    return max_cost(p.model(model), prompt_bound(body), body.requested_max_tokens())


# ----------------------------------------------------------------------------- periods and money
def test_periods_follow_the_budgets_time_zone_and_dst():
    utc_day = SpendBudget(usd=1)
    start, end = period_bounds(NOON, utc_day)
    assert (start.isoformat(), end.isoformat()) == ("2026-06-10T00:00:00+00:00", "2026-06-11T00:00:00+00:00")
    # 2026-03-29 is 23 hours long in Paris (clocks go forward), 2026-10-25 is 25 hours long
    paris = SpendBudget(usd=1, timezone="Europe/Paris")
    for day, hours in (("2026-03-29T12:00:00+02:00", 23), ("2026-10-25T12:00:00+01:00", 25)):
        start, end = period_bounds(datetime.fromisoformat(day).timestamp(), paris)
        assert (end.timestamp() - start.timestamp()) / 3600 == hours
        assert start.hour == 0 and end.hour == 0
    # 23:30 UTC on Dec 31 is already Jan 1 in Tokyo: a new month there
    month = SpendBudget(usd=1, period="month", timezone="Asia/Tokyo")
    start, end = period_bounds(datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc).timestamp(), month)
    assert (start.isoformat(), end.isoformat()) == ("2027-01-01T00:00:00+09:00", "2027-02-01T00:00:00+09:00")
    december = datetime(2026, 12, 10, tzinfo=timezone.utc).timestamp()
    start, end = period_bounds(december, SpendBudget(usd=1, period="month"))
    assert (start.month, end.year, end.month) == (12, 2027, 1)
    # midnight itself opens the new period
    assert period_bounds(datetime(2026, 6, 11, tzinfo=timezone.utc).timestamp(), utc_day)[0].day == 11


def test_money_is_micro_usd_rounded_up():
    assert to_micro(0.0) == 0 and to_micro(1e-6) == 1 and to_micro(1.5e-6) == 2 and to_micro(0.35) == 350_000
    assert to_micro(3 * 0.1) == 300_000  # float noise (0.30000000000000004) is not a micro-USD more
    body = chat(max_tokens=100)
    assert prompt_bound(body) > len("Name one primary colour.")
    assert cost_of("big", body) == to_micro((prompt_bound(body) * 1000 + 100 * 1000) / 1e6)
    assert cost_of("free", body) == 0


def test_unknown_time_zone_and_unknown_team_are_config_errors():
    from router.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        keyfile("keys: [{name: a, key: a-0123456789abcdef, budget: {usd: 1, timezone: Mars/Olympus}}]")
    with pytest.raises(ConfigError, match="unknown team"):
        keyfile("keys: [{name: a, key: a-0123456789abcdef, team: nope}]")
    with pytest.raises(ConfigError, match="unique names"):
        keyfile("keys: [{name: a, key: a-0123456789abcdef, budget: {usd: 1}}, {name: a, key: b-0123456789abcdef}]")
    with pytest.raises(ConfigError, match="greater than 0"):
        keyfile("keys: [{name: a, key: a-0123456789abcdef, budget: {usd: 0}}]")


# ----------------------------------------------------------------------------- admission and settling
@ON_MODULE_LOOP
async def test_reserve_the_maximum_then_settle_the_true_cost(store):
    b = Budgets(pool(), KEYS, store, clock=lambda: NOON)
    body = chat()
    ticket = await b.admit(ALICE, body)
    assert ticket.reserved == cost_of("big", body)  # the dearest model it may run on
    assert ticket.allowed_models is None and ticket.remaining == MICRO - ticket.reserved
    report = await b.report(ALICE)
    (row,) = report["budgets"]
    assert row["spent_usd"] == ticket.reserved / MICRO  # in flight: counted at its maximum
    true_cost = 0.0123456  # what usage said
    left = await b.settle(ticket, true_cost)
    assert left == MICRO - to_micro(true_cost)
    (row,) = (await b.report(ALICE))["budgets"]
    assert row["spent_usd"] == to_micro(true_cost) / MICRO and row["remaining_usd"] == left / MICRO
    assert row["resets_at"] == "2026-06-11T00:00:00+00:00" and row["period"] == "day"
    headers = ticket.headers(left)
    assert float(headers[REMAINING_HEADER]) == pytest.approx(left / MICRO)
    assert headers[RESETS_HEADER] == row["resets_at"]


@ON_MODULE_LOOP
async def test_a_refused_request_gives_its_reservation_back(store):
    b = Budgets(pool(), KEYS, store, clock=lambda: NOON)
    ticket = await b.admit(ALICE, chat())
    await b.release(ticket)
    assert (await b.report(ALICE))["budgets"][0]["spent_usd"] == 0


@ON_MODULE_LOOP
async def test_keys_without_budget_are_not_counted(store):
    b = Budgets(pool(), KEYS, store, clock=lambda: NOON)
    ticket = await b.admit(ERIN, chat())
    assert not ticket.budgeted and ticket.reserved == 0 and ticket.headers() == {}
    assert await b.settle(ticket, 1.0) is None and (await b.report(ERIN))["budgets"] == []


@ON_MODULE_LOOP
async def test_near_the_end_only_what_the_rest_can_pay_for_is_routed(store):
    b = Budgets(pool(), KEYS, store, clock=lambda: NOON)
    body = chat()
    big, small = cost_of("big", body), cost_of("small", body)
    spent = MICRO - big + 1  # the rest pays for 'small' but not for 'big'
    first = await b.admit(ALICE, body)
    await b.settle(first, spent / MICRO)
    ticket = await b.admit(ALICE, body)
    assert ticket.allowed_models == frozenset({"small", "free"}) and ticket.reserved == small
    # pinned to 'big': refused, and the 429 says what the request may cost and what is left
    with pytest.raises(BudgetExhaustedError) as exc:
        await b.admit(ALICE, chat(model="big"))
    assert "may cost up to" in exc.value.message and "lower max_tokens" in exc.value.message
    # a smaller max_tokens fits on 'big' again
    assert (await b.admit(ALICE, chat(model="big", max_tokens=1))).reserved == cost_of("big", chat("big", 1))


@ON_MODULE_LOOP
async def test_exhausted_budget_is_a_429_with_its_reset(store):
    b = Budgets(pool(), KEYS, store, clock=lambda: NOON)
    body = chat()
    await b.settle(await b.admit(ALICE, body), (MICRO - cost_of("small", body) + 1) / MICRO)
    for model in ("auto", "small", "free"):  # zero_cost_models is off: even the free model is refused
        with pytest.raises(BudgetExhaustedError) as exc:
            await b.admit(ALICE, chat(model=model))
        err = exc.value
        assert err.retry_after_s == 12 * 3600 and err.resets_at == "2026-06-11T00:00:00+00:00"
        assert "key 'alice' has used its $1 day budget" in err.message and "resets at 2026-06-11T00:00" in err.message
    http = from_exception(err)
    assert http.status == 429 and http.headers["retry-after"] == str(12 * 3600)
    assert http.body["error"]["code"] == "insufficient_quota" and http.body["error"]["type"] == "insufficient_quota"
    assert http.body["error"]["resets_at"] == "2026-06-11T00:00:00+00:00"


@ON_MODULE_LOOP
async def test_zero_cost_models_stay_usable_when_configured(store):
    b = Budgets(pool(), KEYS, store, clock=lambda: NOON)
    body = chat()
    await b.settle(await b.admit(BOB, body), (MICRO - cost_of("small", body) + 1) / MICRO)
    ticket = await b.admit(BOB, body)
    assert ticket.zero_cost_only and ticket.allowed_models == frozenset({"free"}) and ticket.reserved == 0
    assert (await b.admit(BOB, chat(model="free"))).reserved == 0
    with pytest.raises(BudgetExhaustedError):
        await b.admit(BOB, chat(model="small"))


@ON_MODULE_LOOP
async def test_a_cascade_reserves_both_calls(store):
    b = Budgets(pool(), KEYS, store, clock=lambda: NOON)
    body = chat(routing={"cascade": True})
    assert (await b.admit(ALICE, body)).reserved == cost_of("big", body) + cost_of("small", body)


@ON_MODULE_LOOP
async def test_a_team_budget_is_shared_and_kept_beside_the_keys_own(store):
    b = Budgets(pool(), KEYS, store, clock=lambda: NOON)
    body = chat()
    t1 = await b.admit(CAROL, body)
    await b.settle(t1, 1.8)
    t2 = await b.admit(DAVE, body)  # dave's own $100 is far from spent; the team's $2 is nearly
    assert t2.allowed_models == frozenset({"small", "free"})
    await b.settle(t2, 0.19)
    with pytest.raises(BudgetExhaustedError, match="team 'research' of key 'dave' has used its \\$2 month budget"):
        await b.admit(DAVE, body)
    report = await b.report(DAVE)
    assert [(r["holder"], r["name"], r["spent_usd"]) for r in report["budgets"]] == [
        ("key", "dave", 0.19), ("team", "research", 1.99)]
    assert report["budgets"][1]["resets_at"] == "2026-07-01T00:00:00+02:00"


@ON_MODULE_LOOP
async def test_pace_is_handed_to_routing(store):
    b = Budgets(pool(), KEYS, store, clock=lambda: NOON)  # half the day gone: even pace is $0.50
    ticket = await b.admit(ALICE, chat())
    assert ticket.pace is not None and not ticket.pace.ahead
    await b.settle(ticket, 0.55)
    ticket = await b.admit(ALICE, chat())
    p = ticket.pace
    assert p.holder == "key alice" and p.elapsed == 0.5 and p.ahead
    assert p.spent_usd == 0.55  # what was spent before this request (its own maximum does not pace it)
    assert p.ahead_usd == pytest.approx(0.05)
    (row,) = (await b.report(ALICE))["budgets"]  # in flight: counted at its maximum
    assert row["spent_usd"] == pytest.approx(0.55 + ticket.reserved / MICRO)
    assert row["pace"]["ahead"] and row["pace"]["expected_usd"] == 0.5 and row["pace"]["floor_lowered_by"] == 1.0


@ON_MODULE_LOOP
@pytest.mark.parametrize("replicas", [2])
async def test_concurrent_admissions_on_two_replicas_never_pass_the_budget(store, replicas):
    """Two Budgets (two ingress replicas) on one store, 120 requests at once with true costs drawn
    between 10% and 100% of their maximum: the spend never passes the budget."""
    gates = [Budgets(pool(), KEYS, store, clock=lambda: NOON) for _ in range(replicas)]
    rng = random.Random(7)
    body = chat()
    outcomes: list[int] = []
    reserved: list[int] = []

    async def one(i: int) -> None:
        gate = gates[i % replicas]
        try:
            ticket = await gate.admit(ALICE, body)
        except BudgetExhaustedError:
            outcomes.append(0)
            return
        reserved.append(ticket.reserved)
        await asyncio.sleep(rng.random() * 0.01)  # the answer takes a while
        cost = ticket.reserved * rng.uniform(0.1, 1.0)
        await gate.settle(ticket, cost / MICRO)
        outcomes.append(to_micro(cost / MICRO))

    await asyncio.gather(*(one(i) for i in range(120)))
    spent = round((await gates[0].report(ALICE))["budgets"][0]["spent_usd"] * MICRO)
    assert spent == sum(outcomes) and spent <= MICRO
    # Even if every admission came before any settlement, the gate serves while a whole maximum
    # still fits: at least budget // largest reservation (how many more depends on timing).
    assert sum(1 for o in outcomes if o) >= MICRO // max(reserved) >= 2
    assert sum(1 for o in outcomes if not o) > 0  # and the rest refused


@ON_MODULE_LOOP
async def test_settling_survives_a_client_that_hangs_up(store):
    b = Budgets(pool(), KEYS, store, clock=lambda: NOON)
    ticket = await b.admit(ALICE, chat())
    task = asyncio.get_running_loop().create_task(b.settle(ticket, 0.01))
    await asyncio.sleep(0)
    task.cancel()  # the response was cancelled while settling
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not b._settling:
            break
        await asyncio.sleep(0.01)
    assert (await b.report(ALICE))["budgets"][0]["spent_usd"] == 0.01


# ----------------------------------------------------------------------------- the store down
@ON_MODULE_LOOP
async def test_store_unavailable_fails_closed_or_open_as_configured():
    from tests.conftest import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    for mode in ("closed", "open"):
        store = RedisStore(dead, timeout_s=0.3)
        b = Budgets(pool(state={"on_unavailable": mode}), KEYS, store, clock=lambda: NOON)
        if mode == "closed":
            with pytest.raises(StoreUnavailableError):
                await b.admit(ALICE, chat())
        else:
            ticket = await b.admit(ALICE, chat())
            assert not ticket.budgeted and ticket.allowed_models is None
        assert b.store_errors == 1
        await store.close()
