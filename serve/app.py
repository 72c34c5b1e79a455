"""The Ray Serve application builder: ``serve.app:build_app``.

Used by ``tiergate serve``, by Ray's ``serve run``/``serve deploy`` with the configs in
``deploy/serve/`` and by the Helm chart's ``serveConfigV2``. ``args`` holds either
``pool`` (a path to a pool YAML file) or ``pool_config`` (the same mapping inline).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray.serve import Application

from router.errors import ConfigError
from serve.config import ModelConfig, PoolConfig, load_pool, parse_pool, resolve_paths
from serve.data import POOLS_DIR
from serve.ingress import Ingress
from serve.model_server import ModelServer
from serve.placement import deployed_models, ingress_actor_options
from serve.state import store_name
from serve.telemetry.service import Telemetry


# Relative paths in an inline pool (Helm's serveConfigV2) resolve against the folder that ships the
# pool files: $TIERGATE_POOL_DIR in the images, else the pools the package carries.
DEFAULT_POOL_DIR = POOLS_DIR


def pool_from_args(args: dict[str, Any]) -> PoolConfig:
    if "pool" in args and "pool_config" not in args:
        return load_pool(args["pool"])
    if "pool_config" in args and "pool" not in args:
        base = Path(args.get("pool_dir") or os.environ.get("TIERGATE_POOL_DIR") or DEFAULT_POOL_DIR)
        return resolve_paths(parse_pool(args["pool_config"], "pool_config"), base)
    raise ConfigError("application args need exactly one of 'pool' (a path) or 'pool_config' (a mapping)")


def model_options(m: ModelConfig, callers: int = 1) -> dict[str, Any]:
    """Ray Serve options of a model deployment.

    Ray bounds ``max_queued_requests`` per caller, and each ingress replica is a caller. With a
    shared state store the ingress replicas' leases already bound the pool's total in flight, so
    each caller may use the whole queue (``callers=1``); with per-replica (memory) state the
    queue is split between the replicas.
    """
    actor: dict[str, Any] = {"num_cpus": m.resources.num_cpus, "num_gpus": m.resources.num_gpus}
    if m.resources.memory_gb:
        actor["memory"] = int(m.resources.memory_gb * 1024**3)
    if m.resources.custom:
        actor["resources"] = dict(m.resources.custom)
    return {
        "name": f"model-{m.name}",
        "num_replicas": m.replicas,
        "max_ongoing_requests": m.max_ongoing_requests,
        "max_queued_requests": m.max_queued_requests if m.max_queued_requests < 0
        else max(1, -(-m.max_queued_requests // callers)),
        "ray_actor_options": actor,
        "health_check_period_s": 5,
        "graceful_shutdown_timeout_s": 10,
    }


def gateway_actor_options(pool: PoolConfig) -> dict[str, Any]:
    """The ingress's and telemetry's actor options: no CPU, and the pool's ``ingress_resources``."""
    actor: dict[str, Any] = {"num_cpus": 0}
    if pool.ingress_resources:
        actor["resources"] = dict(pool.ingress_resources)
    return actor


def build_app(args: dict[str, Any]) -> Application:
    pool = pool_from_args(args)
    callers = pool.ingress_replicas if store_name(pool) == "memory" else 1
    models = {m.name: ModelServer.options(**model_options(m, callers)).bind(m.model_dump(mode="json"))
              for m in deployed_models(pool)}
    own = gateway_actor_options(pool)
    telemetry = Telemetry.options(name="telemetry", ray_actor_options=own).bind(pool.monitoring.model_dump(mode="json"))
    ingress = Ingress.options(name="ingress", num_replicas=pool.ingress_replicas,
                              ray_actor_options=ingress_actor_options(pool, own), max_ongoing_requests=1000)
    return ingress.bind(pool.model_dump(mode="json"), models, telemetry)
