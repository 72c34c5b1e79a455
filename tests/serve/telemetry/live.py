"""Helpers of the live telemetry tests: pools built from the real CPU pool, and /metrics reads."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CPU_POOL

BASE_POOL = yaml.safe_load(CPU_POOL.read_text())
SMALL = next(m for m in BASE_POOL["models"] if m["name"] == "smollm2-135m-instruct")
LARGE = next(m for m in BASE_POOL["models"] if m["name"] == "qwen2.5-coder-0.5b-instruct")
# every request drawn, caps far above what a test sends
EVERY_REQUEST = {"rate": 1.0, "max_per_minute": 6000, "burst": 1000, "max_cost_usd_per_hour": None,
                 "max_in_flight": 8}


def pool(name: str, models: list[dict], monitoring: dict) -> dict:
    return {"name": name, "models": models, "limits": BASE_POOL["limits"], "auth": {"enabled": False},
            "monitoring": monitoring}


def samples(base_url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric ``name`` (full sample name, e.g. ``..._total``) on the app's /metrics."""
    r = httpx.get(f"{base_url}/metrics", timeout=30)
    r.raise_for_status()
    return [(dict(s.labels), s.value) for family in text_string_to_metric_families(r.text)
            for s in family.samples if s.name == name]


def by_label(base_url: str, name: str, label: str, **match: str) -> dict[str, float]:
    """Sum of ``name`` by the value of ``label``, over samples whose labels include ``match``."""
    out: dict[str, float] = {}
    for labels, value in samples(base_url, name):
        if all(labels.get(k) == v for k, v in match.items()):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + value
    return out


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)
