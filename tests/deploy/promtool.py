"""Helpers of the deploy tests: where the rules live and how to run promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yaml"))
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.test.yaml"))
APT_HINT = "apt-get update && apt-get install -y prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(f"promtool not installed (Debian package 'prometheus': {APT_HINT}); CI installs it")
    return path


def run_promtool(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=timeout, check=False)


def rules() -> list[dict]:
    """Every rule of every rule file (recording and alerting)."""
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out
