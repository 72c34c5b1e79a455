"""Pool config parsing: clear errors naming the bad field."""

from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import ValidationError

from router.errors import ConfigError, RegistryError
from serve.config import ModelConfig, load_pool, parse_pool
from serve.engines import engine_class
from tests.conftest import CPU_POOL

BASE = yaml.safe_load(CPU_POOL.read_text())


def test_default_pool_loads():
    pool = load_pool(CPU_POOL)
    assert [m.name for m in pool.models] == [
        "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
    prices = [m.card().price for m in pool.models]
    assert prices[0].input_per_mtok < prices[1].input_per_mtok < prices[2].input_per_mtok  # the ladder's order
    assert prices[0].output_per_mtok < prices[1].output_per_mtok < prices[2].output_per_mtok


@pytest.mark.parametrize("path,value,needle", [
    (("models", 0, "replicas"), -1, "models.0.replicas"),
    (("models", 0, "engine"), "tensorrt", "unknown engine 'tensorrt'; valid engines: llama_cpp, vllm, fake"),
    (("models", 1, "prior_quality"), 1.5, "models.1.prior_quality"),
    (("models", 0, "price", "input_per_mtok"), -3, "models.0.price.input_per_mtok"),
    (("models", 0, "colour"), "blue", "models.0.colour"),
    (("routing", "min_quality"), 2, "routing.min_quality"),
    (("models", 1, "name"), "smollm2-135m-instruct", "repeated: smollm2-135m-instruct"),
    (("models", 1, "name"), "auto", "'auto' is reserved"),
])
def test_bad_values_name_the_field(path, value, needle):
    data = copy.deepcopy(BASE)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as exc:
        parse_pool(data, "test.yaml")
    assert needle in exc.value.message


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_pool(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pool(bad)


def test_config_is_frozen():
    pool = load_pool(CPU_POOL)
    with pytest.raises(ValidationError, match="frozen"):
        pool.name = "x"  # type: ignore[misc]


def test_engine_registry_lists_valid_names():
    assert engine_class("fake").__name__ == "FakeEngine"
    with pytest.raises(RegistryError, match="valid engines: fake, llama_cpp, vllm"):
        engine_class("onnx")


def test_engine_args_are_validated():
    cls = engine_class("llama_cpp")
    with pytest.raises(ValidationError, match="n_threads"):
        cls.Args.model_validate({"n_threads": 0})
    with pytest.raises(ValidationError, match="extra"):
        cls.Args.model_validate({"flash": True})


def test_inline_pool_paths_resolve_against_the_pool_dir(tmp_path, monkeypatch):
    from serve.app import DEFAULT_POOL_DIR, pool_from_args

    inline = copy.deepcopy(BASE)
    assert pool_from_args({"pool_config": inline}).quality_profile == str(
        (DEFAULT_POOL_DIR / inline["quality_profile"]).resolve())
    monkeypatch.setenv("TIERGATE_POOL_DIR", str(tmp_path / "pools"))
    assert pool_from_args({"pool_config": inline}).quality_profile == str(
        (tmp_path / "pools" / inline["quality_profile"]).resolve())
    with pytest.raises(ConfigError, match="exactly one"):
        pool_from_args({"pool": str(CPU_POOL), "pool_config": inline})


def test_a_model_s_guaranteed_speed_is_its_cpus_over_its_engine_threads():
    pool = load_pool(CPU_POOL)
    for m in pool.models:  # the embedded pool: half a CPU for one llama.cpp thread each
        assert (m.resources.num_cpus, m.engine_args.get("n_threads", 1)) == (0.5, 1)
        assert m.card().guaranteed_speed == 0.5
    base = pool.models[0].model_dump()
    four = ModelConfig.model_validate({**base, "engine_args": {**base["engine_args"], "n_threads": 4},
                                       "resources": {**base["resources"], "num_cpus": 2.0}})
    assert four.card().guaranteed_speed == 0.5
    whole = ModelConfig.model_validate({**base, "resources": {**base["resources"], "num_cpus": 2.0}})
    assert whole.card().guaranteed_speed == 1.0  # never above its prior speed
    gpu = ModelConfig.model_validate({**base, "resources": {**base["resources"], "num_gpus": 1.0}})
    assert gpu.card().guaranteed_speed == 1.0
    fake = ModelConfig.model_validate({**base, "engine": "fake", "engine_args": {}, "resources": {"num_cpus": 0}})
    assert fake.card().guaranteed_speed == 1.0  # timers, no CPU share: no co-location worst case
