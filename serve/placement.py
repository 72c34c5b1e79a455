"""Where each pool model's engine runs, and the client the ingress reaches it by.

The registry :data:`PLACEMENTS` maps a model's ``placement`` to the :class:`ModelClient` that
serves it: ``deployment`` (its own Ray Serve deployment, reached by its handle) or ``ingress``
(the engine inside each ingress replica, :class:`LocalModel`). ``build_app`` deploys only the
first kind and gives the ingress actor the CPUs and memory of the second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from router.errors import ConfigError
from serve.clients import HandleClient, ModelClient
from serve.config import ModelConfig, PoolConfig
from serve.local_model import LocalModel

ClientFactory = Callable[[ModelConfig, Mapping[str, Any]], ModelClient]  # (model, deployment handles)


def _deployed(model: ModelConfig, handles: Mapping[str, Any]) -> ModelClient:
    try:
        return HandleClient(handles[model.name])
    except KeyError:
        raise ConfigError(f"model {model.name!r} has placement 'deployment' but no deployment handle") from None


PLACEMENTS: dict[str, ClientFactory] = {
    "deployment": _deployed,
    "ingress": lambda model, _handles: LocalModel(model),
}


def deployed_models(pool: PoolConfig) -> tuple[ModelConfig, ...]:
    """The models that get their own deployment."""
    return tuple(m for m in pool.models if m.placement == "deployment")


def model_clients(pool: PoolConfig, handles: Mapping[str, Any]) -> dict[str, ModelClient]:
    """Every pool model's client, by its placement. Call inside the ingress's event loop (local engines load at once)."""
    return {m.name: PLACEMENTS[m.placement](m, handles) for m in pool.models}


def ingress_actor_options(pool: PoolConfig, own: Mapping[str, Any]) -> dict[str, Any]:
    """The ingress's actor options ``own`` plus the CPUs and memory of the engines placed in it."""
    local = [m for m in pool.models if m.placement == "ingress"]
    actor = dict(own)
    actor["num_cpus"] = actor.get("num_cpus", 0) + sum(m.resources.num_cpus for m in local)
    memory = sum(m.resources.memory_gb or 0.0 for m in local)
    if memory:
        actor["memory"] = int(memory * 1024**3)
    return actor
