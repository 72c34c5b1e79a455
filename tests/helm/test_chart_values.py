"""values.schema.json turns wrong values away at install time with a message that names the
value; it is generated from the gateway's own pool model and never goes stale."""

from __future__ import annotations

import importlib.util
import re

import helm_python as helm
import pytest
import yaml

from router.errors import ConfigError
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


def a_pool() -> dict:
    """A valid pool mapping to spoil: the demo pool of deploy/pools/."""
    return yaml.safe_load((DEPLOY / "pools" / "cpu-default.yaml").read_text())


def test_schema_and_readme_table_are_generated_from_the_current_code():
    gen = gen_module()
    assert (CHART / "values.schema.json").read_text() == gen.render_schema(), \
        "stale: run python helm/tools/gen_values_schema.py"
    readme = (CHART / "README.md").read_text()
    assert readme == gen.render_readme(readme), "stale: run python helm/tools/gen_values_schema.py"


def test_every_value_in_values_yaml_has_a_readme_row():
    table = (CHART / "README.md").read_text()
    for key in ("workerGroups.gpu.gpus", "workerGroups.cpu.replicas", "apiKeys.existingSecret",
                "metrics.serviceMonitor.enabled", "grafanaDashboards.label", "upgradeStrategy.type", "pool",
                "serve.ingressReplicas", "serve.autoscaling.ingress.config", "serve.autoscaling.models.perModel",
                "state.store", "state.redis.existingSecret"):
        assert f"| `{key}` |" in table


@pytest.mark.parametrize("name", ["values.yaml", "examples/values-cpu.yaml", "examples/values-gpu.yaml",
                                  "examples/values-scale-out.yaml"])
def test_shipped_values_pass_the_schema(name):
    values = helm.values_from_yaml((CHART / name).read_text())
    chart().validate_schema(chart().merge_values(values))


def test_negative_worker_replicas_are_rejected():
    message = rejected({"workerGroups": {"cpu": {"replicas": -1}}})
    assert "/workerGroups/cpu/replicas" in message and "minimum" in message


def test_negative_model_replicas_are_rejected():
    pool = a_pool()
    pool["models"][0]["replicas"] = -2
    message = rejected({"pool": pool})
    assert "/pool/models/0/replicas" in message and "minimum" in message


def test_unknown_engine_is_rejected_naming_the_valid_ones():
    pool = a_pool()
    pool["models"][1]["engine"] = "tensorrt"
    message = rejected({"pool": pool})
    assert "/pool/models/1/engine" in message
    assert "'llama_cpp', 'vllm'" in message


def test_engine_args_are_checked_against_the_engine_s_own_model():
    pool = a_pool()
    pool["models"][0].update(engine="vllm", weights={"path": "/models/m"},
                             engine_args={"max_model_len": 4096})  # vLLM takes it from context_length
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
    pool = a_pool()
    pool["models"][0]["temperature"] = 0.2
    assert "/pool/models/0" in rejected({"pool": pool})
    with pytest.raises(ConfigError, match=r"models\.0\.temperature: Extra inputs are not permitted"):
        parse_pool(pool)


def test_inconsistent_replica_bounds_fail_with_a_message():
    with pytest.raises(helm.HelmRenderError, match=r"minReplicas <= replicas <= maxReplicas"):
        render({"workerGroups": {"cpu": {"minReplicas": 3, "replicas": 1, "maxReplicas": 4}}})


def test_unknown_pool_file_lists_the_shipped_ones():
    with pytest.raises(helm.HelmRenderError, match=r"cpu-default\.yaml"):
        render({"poolFile": "nope.yaml"})


@pytest.mark.parametrize(("name", "engines"), [("values-cpu.yaml", {"llama_cpp"}), ("values-gpu.yaml", {"vllm"})])
def test_examples_carry_the_deploy_pools_themselves(name, engines):
    values = example_values(name)
    assert "pool" not in values and "poolYaml" not in values  # no copy that could drift
    pool = load_pool(DEPLOY / "pools" / values["poolFile"])
    assert {m.engine for m in pool.models} == engines


def test_the_readme_s_inline_pool_example_installs_and_parses():
    readme = (CHART / "README.md").read_text()
    snippet = re.search(r"An inline pool, in a values file:\n\n```yaml\n(.*?)```", readme, re.S).group(1)
    values = helm.values_from_yaml(snippet)
    chart().render(values, name="demo", namespace="models", is_install=True)  # schema and templates
    assert parse_pool(values["pool"]).models[0].engine == "vllm"
