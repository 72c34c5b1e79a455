"""Shared state for several ingress replicas: one interface, three stores, chosen by name."""

from __future__ import annotations

import os
from collections.abc import Callable

from router.errors import RegistryError
from serve.config import PoolConfig
from serve.state.base import Charge, Refusal, StateStore, StoreUnavailableError, Window
from serve.state.memory import MemoryStore

__all__ = ["Charge", "MemoryStore", "Refusal", "StateStore", "StoreUnavailableError", "Window",
           "STORES", "build_store", "store_name"]

ENV_REDIS_URL = "TIERGATE_REDIS_URL"


def _memory(pool: PoolConfig) -> StateStore:
    return MemoryStore()


def _ray(pool: PoolConfig) -> StateStore:
    from serve.state.ray_actor import RayActorStore

    return RayActorStore(f"tiergate-state-{pool.name}", timeout_s=pool.state.timeout_s)


def _redis(pool: PoolConfig) -> StateStore:
    from serve.state.redis_store import RedisStore

    url = os.environ.get(ENV_REDIS_URL) or pool.state.redis_url
    if not url:
        raise RegistryError(f"state.store 'redis' needs state.redis_url or ${ENV_REDIS_URL}")
    return RedisStore(url, timeout_s=pool.state.timeout_s)


STORES: dict[str, Callable[[PoolConfig], StateStore]] = {"memory": _memory, "ray": _ray, "redis": _redis}


def store_name(pool: PoolConfig) -> str:
    """``auto`` is memory with one ingress replica and the Ray actor with several (or autoscaling)."""
    name = pool.state.store
    if name == "auto":
        return "memory" if pool.ingress_replicas == 1 else "ray"
    return name


def build_store(pool: PoolConfig) -> StateStore:
    name = store_name(pool)
    try:
        factory = STORES[name]
    except KeyError:
        raise RegistryError(f"unknown state store {name!r}; valid: {', '.join(sorted(STORES))}") from None
    return factory(pool)
