"""Every state store keeps the same promises, under concurrency, on the real thing: the memory
store in this process, the Ray actor on the session's Ray cluster, Redis on a real server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from router.errors import StoreUnavailableError
from serve.state import Charge, MemoryStore, StateStore, Window
from serve.state.ray_actor import NAMESPACE, RayActorStore
from serve.state.redis_store import RedisStore
from tests.conftest import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the store fixture's clients live on that loop


@pytest.fixture(params=["memory", "ray", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        s: StateStore = MemoryStore()
    elif request.param == "ray":
        request.getfixturevalue("serve_cluster")  # ray.init
        s = RayActorStore(f"test-state-{uuid.uuid4().hex[:8]}")
        await s.start()  # a new actor's worker process takes seconds to start (the gateway waits so too)
    else:
        s = RedisStore(request.getfixturevalue("redis_url"))
    try:
        yield s
    finally:
        await s.close()
        if isinstance(s, RayActorStore):
            import ray

            ray.kill(ray.get_actor(s.actor_name, namespace=NAMESPACE))


def _name(kind: str) -> str:  # fresh names: the Redis server lives for the whole session
    return f"{kind}-{uuid.uuid4().hex[:8]}"


async def test_three_n_concurrent_hits_on_a_quota_of_n_admit_exactly_n(store: StateStore):
    w = Window(_name("rpm"), 20, 60)
    results = await asyncio.gather(*(store.hit([Charge(w, 1)]) for _ in range(60)))
    assert sum(r is None for r in results) == 20
    refusal = next(r for r in results if r is not None)
    assert refusal.window == w and 1.0 <= refusal.retry_after_s <= 60


async def test_windows_are_charged_all_or_none(store: StateStore):
    roomy, tight = Window(_name("tpd"), 1000, 86400), Window(_name("tpm"), 100, 60)
    assert await store.hit([Charge(roomy, 80), Charge(tight, 80)]) is None
    refusal = await store.hit([Charge(roomy, 80), Charge(tight, 80)])
    assert refusal is not None and refusal.window == tight
    # the refused request kept no charge on the roomy window: 920 more fit, 921 do not
    assert await store.hit([Charge(roomy, 921)]) is not None
    assert await store.hit([Charge(roomy, 920)]) is None


async def test_a_refund_gives_back_what_was_not_used(store: StateStore):
    w = Window(_name("tpm"), 100, 60)
    assert await store.hit([Charge(w, 90)]) is None
    assert await store.hit([Charge(w, 20)]) is not None
    await store.refund([Charge(w, 60)])  # the request used 30 of its 90
    assert await store.hit([Charge(w, 70)]) is None
    assert await store.hit([Charge(w, 1)]) is not None


async def test_token_windows_cost_the_same_whatever_the_count(store: StateStore):
    """A sliding-window counter, not one entry per token: a million tokens is one hit."""
    w = Window(_name("tpd"), 5_000_000, 86400)
    assert await store.hit([Charge(w, 1_000_000)]) is None
    assert await store.hit([Charge(w, 4_000_001)]) is not None


async def test_leases_never_exceed_the_capacity_under_concurrency(store: StateStore):
    pool = _name("inflight")
    got = await asyncio.gather(*(store.lease(pool, f"r{i}", 7, 30) for i in range(40)))
    assert sum(g is not None for g in got) == 7 and max(g for g in got if g is not None) == 7
    assert (await store.held([pool]))[pool] == 7
    holder = next(f"r{i}" for i, g in enumerate(got) if g is not None)
    assert await store.lease(pool, holder, 7, 30) == 7  # renewing one's own lease is no new slot
    await store.unlease(pool, holder)
    assert await store.lease(pool, "late", 7, 30) == 7
    assert await store.lease(pool, "later", 7, 30) is None


async def test_a_lease_expires_so_a_dead_replica_cannot_leak_it(store: StateStore):
    pool = _name("inflight")
    assert await store.lease(pool, "dies", 1, 0.3) == 1
    assert await store.lease(pool, "waits", 1, 0.3) is None
    await asyncio.sleep(0.5)
    assert (await store.held([pool]))[pool] == 0
    assert await store.lease(pool, "waits", 1, 30) == 1


async def test_reservations_stop_at_the_limit_and_adjust_settles(store: StateStore):
    c = _name("spend")
    got = await asyncio.gather(*(store.reserve(c, 10, 95, 60) for _ in range(30)))
    assert sum(g is not None for g in got) == 9
    assert await store.adjust(c, -25, 60) == 65  # three requests cost less than reserved
    assert await store.adjust(c, 40, 60) == 105  # a settlement may pass the limit; a reservation may not
    assert await store.reserve(c, 1, 95, 60) is None
    never = _name("never")
    assert await store.values([c, never]) == {c: 105, never: 0}


async def test_a_redis_store_that_cannot_be_reached_raises_a_clear_error():
    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    with pytest.raises(StoreUnavailableError, match="redis store at redis://127.0.0.1:.* failed hit"):
        await s.hit([Charge(Window("rpm:x", 1, 60), 1)])
    with pytest.raises(StoreUnavailableError, match="failed lease"):
        await s.lease("inflight:m", "r", 1, 10)
    await s.close()


async def test_a_redis_url_password_never_reaches_the_error_text():
    s = RedisStore(f"redis://user:hunter2@127.0.0.1:{free_port()}/0", timeout_s=0.5)
    with pytest.raises(StoreUnavailableError) as info:
        await s.values(["x"])
    assert "hunter2" not in str(info.value) and "***@127.0.0.1" in str(info.value)
    await s.close()
