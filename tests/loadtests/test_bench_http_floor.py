"""Smoke run of loadtests/bench_http_floor.py: both servers start (Ray Serve with tiergate's options) and
stream the event every request waits for; figures only, so nothing about their size is asserted."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "loadtests" / "bench_http_floor.py"


def test_both_servers_answer_every_request_and_a_figure_is_printed_per_cell():
    out = subprocess.run([sys.executable, str(SCRIPT), "--requests", "3", "--rounds", "1", "--waits-ms", "0,5"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("uvicorn", "ray-serve"))]
    assert sorted((r[0], r[1]) for r in rows) == [("ray-serve", "0"), ("ray-serve", "5"), ("uvicorn", "0"),
                                                  ("uvicorn", "5")]
    for _, _, p50, p99 in rows:
        assert math.isfinite(float(p50)) and float(p99) >= float(p50)
