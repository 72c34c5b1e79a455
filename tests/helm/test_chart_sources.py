"""One source: the chart's pools, rules and dashboards are deploy/'s files, byte for byte.

helm/tiergate/files/{pools,rules,dashboards} are symlinks into deploy/. Helm follows them when it loads the chart
and `helm package` stores the files' contents, so the chart never holds copies that could
drift; these tests prove it for the loaded chart, the packaged archive and the rendered
PrometheusRules and dashboard ConfigMaps."""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import helm_python as helm
import yaml

from tests.helm.chart import CHART, DEPLOY, by_kind, chart, render

RULES = DEPLOY / "prometheus" / "rules"
# The chart's links: files/<name> -> deploy/<target>.
LINKS = {"pools": "pools", "rules": "prometheus/rules", "dashboards": "grafana/dashboards"}
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
ALL_ON = {"prometheusRule": {"enabled": True}, "grafanaDashboards": {"enabled": True},
          "apiKeys": {"keys": [{"name": "fixed", "key": "not-random-0123456789"}]}}


def deploy_files(root: Path, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    if not root.is_dir():
        return {}
    return {str(p.relative_to(DEPLOY)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in suffixes}


def rule_files() -> dict[str, bytes]:
    files = deploy_files(RULES, (".yaml", ".yml"))
    return {k: v for k, v in files.items() if "groups" in (yaml.safe_load(v) or {})}


def deploy_path(chart_path: str) -> str:
    """files/rules/x.yaml -> prometheus/rules/x.yaml (relative to deploy/)."""
    link, _, rest = chart_path.removeprefix("files/").partition("/")
    return f"{LINKS[link]}/{rest}"


def chart_files() -> dict[str, bytes]:
    return {deploy_path(f["name"]): f["data"].encode() for f in chart().files if f["name"].startswith("files/")}


def wanted_files() -> dict[str, bytes]:
    return {**deploy_files(DEPLOY / "pools", (".yaml",)), **rule_files(), **deploy_files(DASHBOARDS, (".json",))}


def test_the_chart_links_to_deploy_instead_of_copying():
    assert sorted(p.name for p in (CHART / "files").iterdir()) == sorted(LINKS)
    for name, target in LINKS.items():
        link = CHART / "files" / name
        assert link.is_symlink(), f"{link} must be a link into deploy/, not a copy"
        assert os.readlink(link) == f"../../../deploy/{target}"
        assert link.resolve() == (DEPLOY / target).resolve()


def test_loaded_chart_carries_deploy_files_byte_identical():
    files = chart_files()
    wanted = wanted_files()
    assert wanted, "deploy/ has no pools, rules or dashboards"
    assert {k: files.get(k) for k in wanted} == wanted


def test_packaged_chart_carries_deploy_files_byte_identical(tmp_path):
    archive = chart().save(tmp_path)
    with tarfile.open(archive) as tar:
        packed = {deploy_path(m.name.removeprefix("tiergate/")): tar.extractfile(m).read()
                  for m in tar.getmembers() if m.isfile() and m.name.startswith("tiergate/files/")}
    wanted = wanted_files()
    assert {k: packed.get(k) for k in wanted} == wanted
    with helm.Chart.load(archive) as reloaded:  # the archive renders what the linked chart renders
        assert reloaded.render(ALL_ON, name="demo") == chart().render(ALL_ON, name="demo")


def test_prometheus_rules_are_rendered_from_every_rule_file_unchanged():
    rules = by_kind(render(ALL_ON), "PrometheusRule")
    sources = rule_files()
    assert sources, "deploy/prometheus/ has no rule files"
    assert {r["metadata"]["annotations"]["tiergate.io/source"] for r in rules} == {f"deploy/{k}" for k in sources}
    for r in rules:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", r["metadata"]["name"])
        text = sources[r["metadata"]["annotations"]["tiergate.io/source"].removeprefix("deploy/")]
        assert r["spec"] == yaml.safe_load(text)


def test_prometheus_rule_text_is_embedded_verbatim():
    raw = render_text(ALL_ON, "prometheusrule.yaml")
    for text in rule_files().values():
        body = text.decode().removeprefix("---\n").rstrip("\n")
        indented = "\n".join("  " + line for line in body.split("\n"))  # as Helm's nindent 2
        assert indented in raw


def test_dashboards_are_configmaps_for_the_grafana_sidecar_byte_identical():
    maps = by_kind(render(ALL_ON), "ConfigMap")
    sources = deploy_files(DASHBOARDS, (".json",))
    assert sources, "deploy/grafana/dashboards/ has no dashboards"
    assert {m["metadata"]["annotations"]["tiergate.io/source"] for m in maps} == {f"deploy/{k}" for k in sources}
    for m in maps:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", m["metadata"]["name"])
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        source = m["metadata"]["annotations"]["tiergate.io/source"].removeprefix("deploy/")
        (data,) = m["data"].values()
        assert data.encode() == sources[source]


def render_text(values: dict, template: str) -> str:
    return chart().render(values, name="demo", namespace="models")[f"tiergate/templates/{template}"]


def test_one_prometheus_rule_per_rule_file():
    docs = [d for d in yaml.safe_load_all(io.StringIO(render_text(ALL_ON, "prometheusrule.yaml"))) if d]
    assert len(docs) == len(rule_files())
