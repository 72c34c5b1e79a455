"""The chart renders, lints clean, and every object it renders is valid for Kubernetes, for
KubeRay and for our own Serve app, with the default, CPU-example, GPU-example and scale-out-example values."""

from __future__ import annotations

import base64
import json
from typing import Any

import helm_python as helm
import pytest
import yaml

from serve.app import pool_from_args
from serve.auth import Authenticator, load_keys
from serve.config import AuthConfig, PoolConfig, load_pool
from serve.engines import engine_class
from serve.engines.base import parse_engine_args
from tests.helm.chart import (
    CHART, DEPLOY, NAMESPACE, RELEASE, as_pod, by_kind, crd_errors, example_values, kube_errors,
    monitoring_errors, pod_templates, render, render_raw, unknown_fields,
)

VALUE_SETS = {
    "default": None,
    "cpu": example_values("values-cpu.yaml"),
    "gpu": example_values("values-gpu.yaml"),
    "scale-out": example_values("values-scale-out.yaml"),
}
CORE_KINDS = {"ConfigMap", "Ingress", "PodDisruptionBudget", "Secret", "Service"}
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(VALUE_SETS[request.param])


def rayservice(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (rs,) = by_kind(objects, "RayService")
    return rs


def serve_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(rayservice(objects)["spec"]["serveConfigV2"])


def with_auth_on(pool: PoolConfig) -> PoolConfig:
    """The pool as the chart passes it on with apiKeys.enabled: auth switched on."""
    return pool.model_copy(update={"auth": pool.auth.model_copy(update={"enabled": True})})


def secret_keys_file(secret: dict[str, Any], tmp_path) -> Any:
    """Load the Secret's keys file with the gateway's own loader, as the pods will."""
    (name, data), = secret["data"].items()
    path = tmp_path / name
    path.write_bytes(base64.b64decode(data))
    return load_keys(AuthConfig(), environ={"TIERGATE_API_KEYS_FILE": str(path)})


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_lint_is_clean(name):
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    # Severity 1 is info (only "icon is recommended": the project has no hosted icon).
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_object_has_a_known_kind_and_the_release_labels(rendered):
    _, objects = rendered
    kinds = {o["kind"] for o in objects}
    assert "RayService" in kinds
    assert kinds <= CORE_KINDS | MONITORING_KINDS | {"RayService"}
    for o in objects:
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_core_objects_match_the_kubernetes_schemas(rendered):
    _, objects = rendered
    errors = [e for o in objects if o["kind"] in CORE_KINDS for e in kube_errors(o)]
    assert errors == []


def test_rayservice_matches_the_kuberay_crd(rendered):
    _, objects = rendered
    assert crd_errors(rayservice(objects), "ray.io_rayservices.yaml") == []


def test_ray_pod_templates_are_valid_pods(rendered):
    _, objects = rendered
    pods = [as_pod(name, t) for name, t in pod_templates(rayservice(objects))]
    assert [e for p in pods for e in kube_errors(p)] == []


def test_monitoring_objects_match_the_prometheus_operator_models(rendered):
    _, objects = rendered
    assert [e for o in objects if o["kind"] in MONITORING_KINDS for e in monitoring_errors(o)] == []


def test_serve_config_is_valid_for_ray_serve_and_for_our_app(rendered):
    name, objects = rendered
    from ray.serve.schema import ServeDeploySchema

    config = serve_config(objects)
    parsed = ServeDeploySchema.model_validate(config)  # what `serve deploy` and KubeRay submit
    # Ray's schema ignores unknown keys; a misspelt key would be lost silently, so none may be.
    assert unknown_fields(config, parsed.model_dump(mode="json", exclude_unset=True)) == []
    (app,) = config["applications"]
    assert app["import_path"] == "serve.app:build_app"
    assert set(app["args"]) == {"pool_config"}
    pool = pool_from_args(app["args"])  # the gateway's own parsing, errors and all
    for m in pool.models:  # and each engine's own argument model
        parse_engine_args(engine_class(m.engine), m.engine_args)
    expected = {"default": DEPLOY / "pools" / "cpu-default.yaml", "cpu": DEPLOY / "pools" / "cpu-default.yaml"}
    assert pool.auth.enabled  # apiKeys.enabled (the default) turns the gateway's auth on
    if name in expected:
        assert pool == with_auth_on(load_pool(expected[name]))
    elif name == "gpu":
        assert {m.engine for m in pool.models} == {"vllm"}
    else:  # scale-out: the CPU pool with its replicas and state store set by the chart (test_chart_scale_out)
        cpu = load_pool(DEPLOY / "pools" / "cpu-default.yaml")
        assert [m.name for m in pool.models] == [m.name for m in cpu.models]


def test_serve_config_numbers_survive_templating():
    """Large integers and decimals reach the Serve config unchanged (no 1e+06 forms)."""
    config = serve_config(render())
    pool = config["applications"][0]["args"]["pool_config"]
    assert pool["limits"]["max_body_bytes"] == 1048576
    assert pool["models"][0]["price"]["input_per_mtok"] == 0.076
    assert pool["models"][2]["weights"]["parts"]["size"] == 1117320768  # the 1.5B GGUF's byte count


def test_gpu_workers_get_gpus_node_selector_and_tolerations():
    values = VALUE_SETS["gpu"]
    groups = {g["groupName"]: g for g in rayservice(render(values))["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    gpu = groups[values["workerGroups"]["gpu"].get("groupName", "gpu")]
    pod = gpu["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == values["workerGroups"]["gpu"]["gpus"]
    assert container["image"].endswith("-gpu")
    assert pod["nodeSelector"] == values["workerGroups"]["gpu"]["nodeSelector"]
    assert pod["tolerations"] == values["workerGroups"]["gpu"]["tolerations"]
    pool_gpus = sum(m.resources.num_gpus * m.replicas for m in pool_from_args(
        serve_config(render(values))["applications"][0]["args"]).models)
    assert pool_gpus <= gpu["maxReplicas"] * values["workerGroups"]["gpu"]["gpus"], "the pool cannot fit"


def test_cpu_workers_have_no_gpus_and_autoscaling_follows_values():
    values = VALUE_SETS["cpu"]
    rs = rayservice(render(values))
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == values["autoscaling"]["idleTimeoutSeconds"]
    (cpu,) = cluster["workerGroupSpecs"]
    assert (cpu["minReplicas"], cpu["replicas"], cpu["maxReplicas"]) == (1, 1, 3)
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    assert rs["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


def test_api_keys_secret_is_mounted_named_by_env_and_read_by_the_gateway(tmp_path):
    keys = [{"name": "team-a", "key": "sk-tiergate-team-a-0001"},
            {"name": "team-b", "key_sha256": "ab" * 32, "models": ["qwen2.5-coder-0.5b-instruct"], "priority": "low",
             "limits": {"requests_per_minute": 60}}]
    objects = render({"apiKeys": {"keys": keys}})
    (secret,) = by_kind(objects, "Secret")
    loaded = secret_keys_file(secret, tmp_path)
    assert [k.name for k in loaded.keys] == ["team-a", "team-b"]
    assert Authenticator(loaded).authenticate({"authorization": "Bearer sk-tiergate-team-a-0001"}).name == "team-a"
    for _, template in pod_templates(rayservice(objects)):
        (container,) = template["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TIERGATE_API_KEYS_FILE"] == "/etc/tiergate/api-keys/api-keys.yaml"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["api-keys"] == "/etc/tiergate/api-keys"
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["api-keys"]["secret"]["secretName"] == secret["metadata"]["name"]


def test_spend_budgets_and_teams_reach_the_gateways_keys_file(tmp_path):
    keys = [{"name": "app", "key": "sk-tiergate-app-00001", "team": "research",
             "budget": {"usd": 5, "period": "day", "timezone": "Europe/Paris", "zero_cost_models": True}},
            {"name": "batch", "key": "sk-tiergate-batch-0001", "team": "research"}]
    teams = [{"name": "research", "budget": {"usd": 200, "period": "month"}}]
    (secret,) = by_kind(render({"apiKeys": {"keys": keys, "teams": teams}}), "Secret")
    loaded = secret_keys_file(secret, tmp_path)
    app, batch = loaded.keys
    assert (app.budget.usd, app.budget.period, app.budget.timezone, app.budget.zero_cost_models) == (
        5.0, "day", "Europe/Paris", True)
    assert batch.budget is None and batch.team == "research"
    assert loaded.team("research").budget.usd == 200.0 and loaded.team("research").budget.period == "month"
    with pytest.raises(helm.HelmValuesError, match="budget/period"):  # the values schema checks budgets
        render({"apiKeys": {"keys": [{**keys[0], "budget": {"usd": 5, "period": "week"}}]}})


def test_without_keys_one_random_key_is_generated(tmp_path):
    secrets = [by_kind(render(), "Secret")[0] for _ in range(2)]
    generated = [secret_keys_file(s, tmp_path).keys for s in secrets]
    assert [len(g) for g in generated] == [1, 1]
    assert generated[0][0].key_sha256 != generated[1][0].key_sha256  # random, not a fixed default


def test_existing_api_keys_secret_is_referenced_not_created():
    objects = render({"apiKeys": {"enabled": True, "existingSecret": "mine"}})
    assert by_kind(objects, "Secret") == []
    _, head = pod_templates(rayservice(objects))[0]
    assert {"name": "api-keys", "secret": {"secretName": "mine", "defaultMode": 0o440}} in head["spec"]["volumes"]


def test_without_chart_keys_the_pool_must_turn_auth_off_or_name_a_keys_file():
    # The demo pool turns auth off explicitly: the gateway runs open, and says so loudly.
    pool = pool_from_args(serve_config(render({"apiKeys": {"enabled": False}}))["applications"][0]["args"])
    assert pool.auth.enabled is False
    secured = yaml.safe_load((DEPLOY / "pools" / "cpu-default.yaml").read_text())
    secured.pop("auth")  # auth on, by the gateway's default
    with pytest.raises(helm.HelmRenderError, match="apiKeys.enabled is false but the pool"):
        render({"apiKeys": {"enabled": False}, "pool": secured})
    secured["auth"] = {"keys_file": "/keys/keys.yaml"}
    pool = pool_from_args(serve_config(render({"apiKeys": {"enabled": False}, "pool": secured}))
                          ["applications"][0]["args"])
    assert (pool.auth.enabled, pool.auth.keys_file) == (True, "/keys/keys.yaml")


def test_everything_around_the_rayservice_can_be_switched_off():
    off = {"serveService": {"enabled": False}, "ingress": {"enabled": False}, "apiKeys": {"enabled": False},
           "podDisruptionBudget": {"enabled": False}, "grafanaDashboards": {"enabled": False},
           "prometheusRule": {"enabled": False},
           "metrics": {"serviceMonitor": {"enabled": False}, "podMonitor": {"enabled": False}}}
    objects = render(off)
    assert [o["kind"] for o in objects] == ["RayService"]
    assert "serveService" not in objects[0]["spec"]


def test_ingress_and_service_monitor_point_at_the_serve_service():
    objects = render(VALUE_SETS["cpu"])
    serve_svc = rayservice(objects)["spec"]["serveService"]
    (ingress,) = by_kind(objects, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": serve_svc["metadata"]["name"], "port": {"name": "serve"}}
    (monitor,) = by_kind(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= serve_svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == serve_svc["spec"]["ports"][0]["name"] == "serve"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    (podmon,) = by_kind(objects, "PodMonitor")
    for _, template in pod_templates(rayservice(objects)):
        assert podmon["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        assert {"name": "metrics", "containerPort": 8080} in template["spec"]["containers"][0]["ports"]


def test_pdb_selects_the_ray_pods():
    objects = render()
    (pdb,) = by_kind(objects, "PodDisruptionBudget")
    for _, template in pod_templates(rayservice(objects)):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


def test_pool_yaml_from_set_file_gives_the_same_pool():
    text = (DEPLOY / "pools" / "cpu-default.yaml").read_text()
    pool = pool_from_args(serve_config(render({"poolYaml": text}))["applications"][0]["args"])
    assert pool == with_auth_on(load_pool(DEPLOY / "pools" / "cpu-default.yaml"))


def test_notes_tell_how_to_reach_the_api_and_dashboards():
    notes = render_raw(VALUE_SETS["cpu"])["tiergate/templates/NOTES.txt"]
    assert "http://tiergate.local/v1/chat/completions" in notes
    assert "grafana_dashboard=1" in notes
    notes = render_raw()["tiergate/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} port-forward svc/{RELEASE}-tiergate-serve 8000:8000" in notes


def test_images_default_to_the_app_version_and_can_be_overridden():
    def images(values):
        return {name: t["spec"]["containers"][0]["image"] for name, t in pod_templates(rayservice(render(values)))}

    assert images({"workerGroups": {"gpu": {"enabled": True}}}) == {
        "head": "tiergate:0.1.0-cpu", "cpu": "tiergate:0.1.0-cpu", "gpu": "tiergate:0.1.0-gpu"}
    assert images({"image": {"repository": "registry.example/tiergate", "cpuTag": "c1"},
                   "workerGroups": {"gpu": {"enabled": True, "image": {"repository": "registry.example/tg-gpu",
                                                                        "tag": "g2"}}}}) == {
        "head": "registry.example/tiergate:c1", "cpu": "registry.example/tiergate:c1",
        "gpu": "registry.example/tg-gpu:g2"}
