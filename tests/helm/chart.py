"""Rendering and validating the Helm chart offline: helm-python-sdk (Helm's own Go code, no
helm binary), kubernetes-validate (the Kubernetes OpenAPI schemas), the KubeRay CRD and the
Prometheus Operator's models (cloudcoil)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tiergate"
EXAMPLES = CHART / "examples"
DEPLOY = ROOT / "deploy"
KUBERAY_SCHEMAS = ROOT.parent / "shared" / "schemas" / "kuberay"
RELEASE, NAMESPACE = "demo", "models"

# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest one
# kubernetes-validate knows.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())

Manifest = dict[str, Any]


def example_values(name: str) -> dict[str, Any]:
    return helm.values_from_yaml((EXAMPLES / name).read_text())


@functools.lru_cache(maxsize=1)
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render_raw(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would give (NOTES.txt included)."""
    return chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    """Every Kubernetes object the chart renders for ``values``."""
    objects: list[Manifest] = []
    for path, text in sorted(render_raw(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


# ----------------------------------------------------------------------------- the KubeRay CRD
def _closed(schema: Any) -> Any:
    """The CRD schema with unknown fields forbidden: the API server would silently prune
    them, which hides typos in the chart, so the tests reject them instead."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def crd_validator(filename: str, version: str = "v1") -> jsonschema.protocols.Validator:
    path = KUBERAY_SCHEMAS / filename
    if not path.exists():
        raise FileNotFoundError(f"KubeRay CRD {path} is missing (expected in ../shared/schemas/kuberay/)")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _closed(served["schema"]["openAPIV3Schema"])
    return jsonschema.Draft202012Validator(schema)


def crd_errors(obj: Manifest, filename: str) -> list[str]:
    validator = crd_validator(filename)
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]


# ----------------------------------------------------------------------------- Kubernetes schemas
def kube_errors(obj: Manifest) -> list[str]:
    """Errors of ``obj`` against the strict Kubernetes schemas of every version in KUBE_VERSIONS."""
    errors = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(map(str, err.path)) or "(root)"
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {path}: {err.message}")
    return errors


def pod_templates(rayservice: Manifest) -> list[tuple[str, Manifest]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]
    return [(name, g["template"]) for name, g in groups]


def as_pod(name: str, template: Manifest) -> Manifest:
    """A pod template as the Pod KubeRay makes of it, for kubernetes-validate."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**copy.deepcopy(template.get("metadata", {})), "name": name},
            "spec": copy.deepcopy(template["spec"])}


# ----------------------------------------------------------------------------- Prometheus Operator
def monitoring_errors(obj: Manifest) -> list[str]:
    """Validate a monitoring.coreos.com/v1 object with the Prometheus Operator's models;
    fields the models drop (unknown to the CRD) are errors too."""
    from cloudcoil.models.prometheus_operator import v1 as monitoring
    from pydantic import ValidationError

    model = getattr(monitoring, obj["kind"])
    try:
        parsed = model.model_validate(obj)
    except ValidationError as err:
        return [f"{obj['kind']}: {err}"]
    back = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return [f"{obj['kind']}/{obj['metadata']['name']}: unknown field {p}" for p in unknown_fields(obj, back)]


def unknown_fields(original: Any, kept: Any, path: str = "") -> list[str]:
    """Paths of ``original`` missing from ``kept``: what a lenient model silently dropped."""
    if isinstance(original, dict):
        if not isinstance(kept, dict):
            return [path or "(root)"]
        out = []
        for k, v in original.items():
            out += unknown_fields(v, kept[k], f"{path}.{k}") if k in kept else [f"{path}.{k}"]
        return out
    if isinstance(original, list):
        if not isinstance(kept, list) or len(kept) != len(original):
            return [path or "(root)"]
        return [p for i, (a, b) in enumerate(zip(original, kept, strict=True))
                for p in unknown_fields(a, b, f"{path}[{i}]")]
    return []
