"""values.schema.json turns wrong values away at install time with a message that names the
value; it is generated from the gateway's own pool model and never goes stale."""

from __future__ import annotations

import copy
import importlib.util

import helm_python as helm
import pytest

from serve.config import load_pool, parse_pool
from tests.helm.chart import CHART, DEPLOY, ROOT, chart, example_values, render


def gen_module():
    spec = importlib.util.spec_from_file_location("gen_values_schema", ROOT / "helm" / "tools" / "gen_values_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rejected(values: dict) -> str:
    """The error `helm install` prints for ``values`` (schema checked, as on install)."""
    with pytest.raises(helm.HelmValuesError) as err:
        chart().render(values, name="demo", namespace="models", is_install=True)
    return str(err.value)


def gpu_pool() -> dict:
    return copy.deepcopy(example_values("values-gpu.yaml")["pool"])


def test_schema_and_readme_table_are_generated_from_the_current_code():
    gen = gen_module()
    assert (CHART / "values.schema.json").read_text() == gen.render_schema(), \
        "stale: run python helm/tools/gen_values_schema.py"
    readme = (CHART / "README.md").read_text()
    assert readme == gen.render_readme(readme), "stale: run python helm/tools/gen_values_schema.py"


def test_every_value_in_values_yaml_has_a_readme_row():
    table = (CHART / "README.md").read_text()
    for key in ("workerGroups.gpu.gpus", "workerGroups.cpu.replicas", "apiKeys.existingSecret",
                "metrics.serviceMonitor.enabled", "grafanaDashboards.label", "upgradeStrategy.type", "pool"):
        assert f"| `{key}` |" in table


@pytest.mark.parametrize("name", ["values.yaml", "examples/values-cpu.yaml", "examples/values-gpu.yaml"])
def test_shipped_values_pass_the_schema(name):
    values = helm.values_from_yaml((CHART / name).read_text())
    chart().validate_schema(chart().merge_values(values))


def test_negative_worker_replicas_are_rejected():
    message = rejected({"workerGroups": {"cpu": {"replicas": -1}}})
    assert "/workerGroups/cpu/replicas" in message and "minimum" in message


def test_negative_model_replicas_are_rejected():
    pool = gpu_pool()
    pool["models"][0]["replicas"] = -2
    message = rejected({"pool": pool})
    assert "/pool/models/0/replicas" in message and "minimum" in message


def test_unknown_engine_is_rejected_naming_the_valid_ones():
    pool = gpu_pool()
    pool["models"][1]["engine"] = "tensorrt"
    message = rejected({"pool": pool})
    assert "/pool/models/1/engine" in message
    assert "'llama_cpp', 'vllm'" in message


def test_engine_args_are_checked_against_the_engine_s_own_model():
    pool = gpu_pool()
    pool["models"][0]["engine_args"]["max_model_len"] = 4096  # vLLM takes it from context_length
    message = rejected({"pool": pool})
    assert "/pool/models/0/engine_args" in message and "max_model_len" in message


@pytest.mark.parametrize(("values", "where"), [
    ({"workerGroups": {"gpu": {"gpus": -1}}}, "/workerGroups/gpu/gpus"),
    ({"workerGroups": {"cpu": {"replica": 2}}}, "/workerGroups/cpu"),  # a typo
    ({"upgradeStrategy": {"type": "Rolling"}}, "/upgradeStrategy/type"),
    ({"serve": {"port": 0}}, "/serve/port"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
])
def test_other_wrong_values_are_rejected(values, where):
    assert where in rejected(values)


def test_pool_schema_agrees_with_the_gateway_on_unknown_pool_fields():
    pool = gpu_pool()
    pool["models"][0]["temperature"] = 0.2
    assert "/pool/models/0" in rejected({"pool": pool})
    with pytest.raises(Exception, match="temperature"):
        parse_pool(pool)


def test_inconsistent_replica_bounds_fail_with_a_message():
    with pytest.raises(helm.HelmRenderError, match=r"minReplicas <= replicas <= maxReplicas"):
        render({"workerGroups": {"cpu": {"minReplicas": 3, "replicas": 1, "maxReplicas": 4}}})


def test_unknown_pool_file_lists_the_shipped_ones():
    with pytest.raises(helm.HelmRenderError, match=r"cpu-default\.yaml"):
        render({"poolFile": "nope.yaml"})


def test_example_pools_are_the_deploy_pools():
    cpu = example_values("values-cpu.yaml")
    assert "pool" not in cpu and (DEPLOY / "pools" / cpu["poolFile"]).is_file()
    gpu = parse_pool(example_values("values-gpu.yaml")["pool"])
    assert {m.engine for m in gpu.models} == {"vllm"}
    deploy_gpu = sorted((DEPLOY / "pools").glob("gpu-*.yaml"))
    if deploy_gpu:  # the GPU example carries the repository's GPU pool
        assert gpu in [load_pool(p) for p in deploy_gpu]
