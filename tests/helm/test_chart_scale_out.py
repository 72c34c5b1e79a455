"""Scale-out in the chart: several gateway (ingress) replicas, the shared state store (Redis by URL
or by an existing Secret, as TIERGATE_REDIS_URL in every Ray container), Ray Serve autoscaling of
the ingress and of the models; what the rendered RayService carries, read back with the gateway's
and Ray Serve's own parsers, and the combinations that are refused, with the value to change."""

from __future__ import annotations

import base64
from typing import Any

import helm_python as helm
import pytest
import yaml
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ServeDeploySchema

from serve.app import build_app, pool_from_args
from serve.config import PoolConfig
from serve.state import ENV_REDIS_URL, store_name
from tests.helm.chart import DEPLOY, by_kind, chart, example_values, pod_templates, render, render_raw

SCALE_OUT = example_values("values-scale-out.yaml")
REDIS_URL = "redis://:s3cret@redis-master.redis.svc:6379/0"
CPU_MODELS = [m["name"] for m in yaml.safe_load((DEPLOY / "pools" / "cpu-default.yaml").read_text())["models"]]


def rayservice(values: dict[str, Any] | None) -> dict[str, Any]:
    (rs,) = by_kind(render(values), "RayService")
    return rs


def serve_app(values: dict[str, Any] | None) -> dict[str, Any]:
    config = yaml.safe_load(rayservice(values)["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)  # what KubeRay submits to Serve
    (app,) = config["applications"]
    return app


def pool_of(values: dict[str, Any] | None) -> PoolConfig:
    return pool_from_args(serve_app(values)["args"])


def overrides(values: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Serve deployment name -> its autoscaling_config, as serveConfigV2 overrides it."""
    return {d["name"]: d["autoscaling_config"] for d in serve_app(values).get("deployments", [])}


def deployment_names(app: dict[str, Any]) -> dict[str, str]:
    """What build_app names the deployments of the app's pool: "ingress" and model name -> deployment."""
    ingress = build_app(app["args"])._bound_deployment
    models = ingress.init_args[1]
    return {"ingress": ingress.name, **{m: a._bound_deployment.name for m, a in models.items()}}


def container_env(values: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """Ray group -> its container's env."""
    return {name: t["spec"]["containers"][0].get("env", []) for name, t in pod_templates(rayservice(values))}


def rejected_by_schema(values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmValuesError) as err:
        chart().render(values, name="demo", namespace="models", is_install=True)
    return str(err.value)


# --------------------------------------------------------------------------- defaults
def test_by_default_one_ingress_replica_its_own_memory_and_no_overrides():
    app = serve_app(None)
    assert "deployments" not in app
    pool = pool_from_args(app["args"])
    assert (pool.ingress_replicas, store_name(pool)) == (1, "memory")
    assert all(e["name"] != ENV_REDIS_URL for env in container_env(None).values() for e in env)
    assert [s["metadata"]["name"] for s in by_kind(render(None), "Secret")] == ["demo-tiergate-api-keys"]


# --------------------------------------------------------------------------- several ingress replicas
def test_ingress_replicas_reach_the_pool_and_share_a_ray_actor_store():
    pool = pool_of({"serve": {"ingressReplicas": 3}})
    assert pool.ingress_replicas == 3
    assert store_name(pool) == "ray"  # auto: one store for all three, not three memories


def test_ingress_autoscaling_is_a_serve_override_of_the_ingress_deployment():
    values = {"serve": {"autoscaling": {"ingress": {"enabled": True, "config": {
        "min_replicas": 2, "max_replicas": 5, "target_ongoing_requests": 80, "upscale_delay_s": 10}}}}}
    app = serve_app(values)
    names = deployment_names(app)
    ((name, config),) = overrides(values).items()
    assert name == names["ingress"]
    assert config == {"min_replicas": 2, "max_replicas": 5, "target_ongoing_requests": 80, "upscale_delay_s": 10}
    AutoscalingConfig(**config)  # Ray Serve's own model takes it as it is
    assert "num_replicas" not in app["deployments"][0]  # a fixed count beside autoscaling is refused by Serve
    pool = pool_from_args(app["args"])
    assert pool.ingress_replicas == 5  # sized for the most replicas there can be
    assert store_name(pool) == "ray"


# --------------------------------------------------------------------------- models
def test_model_autoscaling_covers_every_model_with_per_model_fields():
    app = serve_app(SCALE_OUT)
    names = deployment_names(app)
    got = overrides(SCALE_OUT)
    base = SCALE_OUT["serve"]["autoscaling"]["models"]["config"]
    big = "qwen2.5-coder-1.5b-instruct"
    assert set(got) == {names["ingress"]} | {names[m] for m in CPU_MODELS}
    for model in CPU_MODELS:
        expected = {**base, "max_replicas": 2} if model == big else base
        assert got[names[model]] == expected, model
        AutoscalingConfig(**got[names[model]])
    pool = pool_from_args(app["args"])
    # the gateway's admission capacity is that of the scaled-out model
    assert {m.name: m.replicas for m in pool.models} == {m: (2 if m == big else 3) for m in CPU_MODELS}
    assert pool.ingress_replicas == SCALE_OUT["serve"]["autoscaling"]["ingress"]["config"]["max_replicas"]


def test_the_scale_out_example_fits_its_worker_group_at_full_scale():
    rs = rayservice(SCALE_OUT)
    (cpu,) = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert rs["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    cpus = float(cpu["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])
    needed = sum(m.resources.num_cpus * m.replicas for m in pool_of(SCALE_OUT).models)
    assert needed <= cpu["maxReplicas"] * cpus
    assert cpu["minReplicas"] <= cpu["replicas"] <= cpu["maxReplicas"]


# --------------------------------------------------------------------------- the state store
def test_redis_by_url_goes_into_a_secret_named_in_every_ray_container():
    values = {"state": {"store": "redis", "redis": {"url": REDIS_URL}}, "workerGroups": {"gpu": {"enabled": True}}}
    objects = render(values)
    (secret,) = [s for s in by_kind(objects, "Secret") if s["metadata"]["name"] == "demo-tiergate-redis"]
    assert base64.b64decode(secret["data"]["redis-url"]).decode() == REDIS_URL
    (rs,) = by_kind(objects, "RayService")
    assert "s3cret" not in rs["spec"]["serveConfigV2"]  # the password stays in the Secret
    envs = container_env(values)
    assert set(envs) == {"head", "cpu", "gpu"}  # the ingress may run on any node
    for env in envs.values():
        assert {"name": ENV_REDIS_URL, "valueFrom": {"secretKeyRef": {"name": "demo-tiergate-redis",
                                                                     "key": "redis-url"}}} in env
    pool = pool_of(values)
    assert (pool.state.store, pool.state.redis_url) == ("redis", None)  # the URL comes from the env


def test_redis_by_existing_secret_is_referenced_not_created():
    values = {"state": {"store": "redis", "onUnavailable": "open",
                        "redis": {"existingSecret": "shared-redis", "secretKey": "url"}}}
    assert [s["metadata"]["name"] for s in by_kind(render(values), "Secret")] == ["demo-tiergate-api-keys"]
    for env in container_env(values).values():
        assert {"name": ENV_REDIS_URL, "valueFrom": {"secretKeyRef": {"name": "shared-redis", "key": "url"}}} in env
    assert pool_of(values).state.on_unavailable == "open"


def test_the_pool_s_own_redis_url_is_enough_for_the_redis_store():
    pool = yaml.safe_load((DEPLOY / "pools" / "cpu-default.yaml").read_text())
    pool["state"] = {"store": "redis", "redis_url": "redis://redis:6379/0"}
    assert pool_of({"pool": pool, "serve": {"ingressReplicas": 2}}).state.redis_url == "redis://redis:6379/0"


# --------------------------------------------------------------------------- refused
@pytest.mark.parametrize(("values", "where", "why"), [
    ({"state": {"store": "memory"}, "serve": {"ingressReplicas": 2}}, "/state/store",
     "value must be one of 'auto', 'ray', 'redis'"),
    ({"state": {"store": "memory"}, "serve": {"autoscaling": {"ingress": {"enabled": True}}}}, "/state/store",
     "value must be one of 'auto', 'ray', 'redis'"),
    ({"state": {"store": "redis", "redis": {"url": REDIS_URL, "existingSecret": "r"}}}, "/state/redis/url",
     "value must be ''"),
    ({"state": {"store": "redis", "redis": {"url": "http://redis:6379"}}}, "/state/redis/url", "does not match"),
    ({"state": {"store": "etcd"}}, "/state/store", "value must be one of"),
    ({"serve": {"ingressReplicas": -1}}, "/serve/ingressReplicas", "minimum"),
    ({"serve": {"autoscaling": {"ingress": {"enabled": True, "config": {"min_replicas": 0, "max_replicas": 2}}}}},
     "/serve/autoscaling/ingress/config/min_replicas", "minimum: got 0, want 1"),
    ({"serve": {"autoscaling": {"models": {"config": {"min_replicas": 1, "max_replica": 3}}}}},
     "/serve/autoscaling/models/config", "additional properties 'max_replica' not allowed"),
    ({"serve": {"autoscaling": {"models": {"config": {"min_replicas": None}}}}},  # null deletes the default
     "/serve/autoscaling/models/config", "missing property 'min_replicas'"),
    ({"serve": {"autoscaling": {"models": {"perModel": {CPU_MODELS[0]: {"target_ongoing_requests": 0}}}}}},
     f"/serve/autoscaling/models/perModel/{CPU_MODELS[0]}/target_ongoing_requests", "exclusiveMinimum"),
])
def test_wrong_values_are_refused_by_the_schema(values, where, why):
    message = rejected_by_schema(values)
    assert f"at '{where}'" in message and why in message, message


@pytest.mark.parametrize(("values", "message"), [
    ({"serve": {"autoscaling": {"ingress": {"enabled": True, "config": {"min_replicas": 4, "max_replicas": 2}}}}},
     r"serve\.autoscaling\.ingress\.config: min_replicas \(4\) is above max_replicas \(2\)"),
    ({"serve": {"autoscaling": {"models": {"enabled": True, "perModel": {CPU_MODELS[1]: {"initial_replicas": 5}}}}}},
     (rf"serve\.autoscaling\.models, model {CPU_MODELS[1]}: initial_replicas \(5\) is outside "
      r"min_replicas\.\.max_replicas \(1\.\.2\)")),
    ({"serve": {"autoscaling": {"models": {"perModel": {"qwen-72b": {"max_replicas": 2}}}}}},
     r'perModel: "qwen-72b" is not a model of the pool \(smollm2-135m-instruct, '),
    ({"state": {"store": "redis"}}, r"state\.store is redis but no Redis is given"),
    ({"state": {"redis": {"existingSecret": "r"}}},
     r"state\.redis is set but the state store is auto, which would not use it"),
])
def test_inconsistent_values_fail_to_render_with_a_message(values, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


def test_a_pool_that_keeps_memory_cannot_have_several_ingress_replicas():
    # the schema sees the chart's values; the pool's own state.store is checked when the chart renders
    pool = yaml.safe_load((DEPLOY / "pools" / "cpu-default.yaml").read_text())
    pool["state"] = {"store": "memory"}
    with pytest.raises(helm.HelmRenderError, match=r"state\.store memory keeps each ingress replica's counters "
                                                   r"apart, but the gateway has 2 ingress replicas"):
        render({"pool": pool, "serve": {"ingressReplicas": 2}})
    assert pool_of({"pool": pool}).state.store == "memory"  # one replica: fine


def test_notes_say_how_the_gateway_scales_and_where_its_state_lives():
    notes = render_raw(SCALE_OUT)["tiergate/templates/NOTES.txt"]
    assert ("Gateway: 2 to 6 ingress replicas (Serve autoscaling), state store redis (URL from the Secret "
            "tiergate-redis, key redis-url); models autoscaled by Serve.") in notes
    notes = render_raw(None)["tiergate/templates/NOTES.txt"]
    assert "Gateway: 1 ingress replica(s), state store auto (memory)." in notes
    notes = render_raw({"serve": {"ingressReplicas": 3}})["tiergate/templates/NOTES.txt"]
    assert "Gateway: 3 ingress replica(s), state store auto (a Ray actor)." in notes
