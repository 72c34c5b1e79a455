"""Placement: the pool's custom Ray resources reach the actor options of the model, ingress and
telemetry deployments (what ``build_app`` hands to Ray Serve), and Ray's own resource names are
refused where Ray would refuse them later."""

from __future__ import annotations

import pytest
import yaml
from ray.serve.schema import DeploymentSchema

from router.errors import ConfigError
from serve.app import build_app, gateway_actor_options, model_options
from serve.config import parse_pool
from tests.conftest import CPU_POOL

BASE = yaml.safe_load(CPU_POOL.read_text())


def a_pool(**extra) -> dict:
    small = {**BASE["models"][0], "resources": {"num_cpus": 0.5, "custom": {"tg-worker": 1}}}
    return {"name": "placed", "models": [small], "auth": {"enabled": False}, **extra}


def test_model_custom_resources_become_ray_actor_resources():
    pool = parse_pool(a_pool())
    actor = model_options(pool.models[0])["ray_actor_options"]
    assert actor == {"num_cpus": 0.5, "num_gpus": 0.0, "resources": {"tg-worker": 1.0}}
    DeploymentSchema(name="m", ray_actor_options=actor)  # Ray Serve accepts them as they are


def test_without_custom_resources_the_actor_options_are_unchanged():
    pool = parse_pool({**a_pool(), "models": [BASE["models"][0]]})
    assert "resources" not in model_options(pool.models[0])["ray_actor_options"]
    assert gateway_actor_options(pool) == {"num_cpus": 0}


def test_ingress_resources_place_the_ingress_and_telemetry():
    pool = parse_pool(a_pool(ingress_resources={"tg-head": 0.01}))
    assert gateway_actor_options(pool) == {"num_cpus": 0, "resources": {"tg-head": 0.01}}
    ingress = build_app({"pool_config": a_pool(ingress_resources={"tg-head": 0.01})})._bound_deployment
    models, telemetry = ingress.init_args[1], ingress.init_args[2]._bound_deployment
    assert ingress.ray_actor_options == telemetry.ray_actor_options == {"num_cpus": 0, "resources": {"tg-head": 0.01}}
    (small,) = models.values()  # the models keep their own placement
    assert small._bound_deployment.ray_actor_options["resources"] == {"tg-worker": 1.0}


@pytest.mark.parametrize("where", ["model", "ingress"])
@pytest.mark.parametrize("name", ["CPU", "GPU", "memory"])
def test_ray_s_own_resources_are_not_custom(where, name):
    cfg = a_pool()
    if where == "model":
        cfg["models"][0]["resources"]["custom"] = {name: 1}
    else:
        cfg["ingress_resources"] = {name: 1}
    with pytest.raises(ConfigError, match=f"{name}: Ray's own resources are asked for by num_cpus"):
        parse_pool(cfg)


def test_negative_custom_amounts_are_refused():
    cfg = a_pool()
    cfg["models"][0]["resources"]["custom"] = {"tg-worker": -1}
    with pytest.raises(ConfigError, match=r"models\.0\.resources\.custom\.tg-worker"):
        parse_pool(cfg)


# ----------------------------------------------------------------------------- placement: ingress
def fake_model(name: str, **extra) -> dict:
    return {"name": name, "engine": "fake", "quantization": "none", "context_length": 4096,
            "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}, "prior_quality": 0.3,
            "latency_prior": {"ttft_ms": 5, "tpot_ms": 1}, **extra}


def mixed_pool(**extra) -> dict:
    local = fake_model("local", placement="ingress", resources={"num_cpus": 0.5, "memory_gb": 1})
    return {"name": "mixed", "models": [local, fake_model("remote")], "auth": {"enabled": False}, **extra}


def test_a_model_placed_in_the_ingress_gets_no_deployment_and_its_resources_go_to_the_ingress():
    ingress = build_app({"pool_config": mixed_pool()})._bound_deployment
    models = ingress.init_args[1]
    assert set(models) == {"remote"}  # only the deployment-placed model is deployed
    assert ingress.ray_actor_options == {"num_cpus": 0.5, "memory": 1024**3}
    telemetry = ingress.init_args[2]._bound_deployment
    assert telemetry.ray_actor_options == {"num_cpus": 0}  # telemetry does not carry the engine
    DeploymentSchema(name="ingress", ray_actor_options=ingress.ray_actor_options)


async def test_model_clients_follow_each_model_s_placement():
    from serve.clients import HandleClient
    from serve.local_model import LocalModel
    from serve.placement import model_clients

    class Handle:  # what HandleClient asks of a deployment handle when built
        def options(self, **_):
            return self

    pool = parse_pool(mixed_pool())
    clients = model_clients(pool, {"remote": Handle()})
    assert isinstance(clients["local"], LocalModel) and isinstance(clients["remote"], HandleClient)
    await clients["local"]._loading
    assert (await clients["local"].health()).ready


def test_a_deployment_placed_model_without_a_handle_is_a_config_error():
    from serve.placement import model_clients

    with pytest.raises(ConfigError, match="'remote' has placement 'deployment' but no deployment handle"):
        model_clients(parse_pool({**mixed_pool(), "models": [fake_model("remote")]}), {})


def test_an_ingress_placed_model_runs_one_engine_per_ingress_replica():
    cfg = mixed_pool(ingress_replicas=2)
    with pytest.raises(ConfigError, match=r"its replicas \(1\) must equal ingress_replicas \(2\)"):
        parse_pool(cfg)
    cfg["models"][0]["replicas"] = 2
    assert parse_pool(cfg).models[0].replicas == 2


@pytest.mark.parametrize("resources", [{"num_gpus": 1}, {"custom": {"tg-worker": 1}}])
def test_an_ingress_placed_model_takes_no_gpus_or_custom_resources(resources):
    cfg = mixed_pool()
    cfg["models"][0]["resources"] = resources
    with pytest.raises(ConfigError, match="takes num_cpus and memory_gb only"):
        parse_pool(cfg)
