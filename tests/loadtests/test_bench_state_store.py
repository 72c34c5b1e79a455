"""A short run of the state-store benchmark on all three real stores (the full run is by hand)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_state_store_benchmark_runs_on_every_store(tmp_path):
    out = tmp_path / "state.json"
    proc = subprocess.run([sys.executable, str(ROOT / "loadtests" / "bench_state_store.py"), "--requests", "40",
                           "--rounds", "2", "--warmup", "5", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(out.read_text())["stores"]
    assert set(figures) == {"memory", "ray", "redis"}
    for parts in figures.values():
        assert parts["admission"]["requests"] == 40 and parts["total"]["p99_ms"] >= parts["total"]["p50_ms"] > 0
    assert "added p50" in proc.stdout and "redis" in proc.stdout
