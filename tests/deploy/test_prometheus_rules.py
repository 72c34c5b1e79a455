"""Recording and alert rules: valid, unit-tested with promtool, and fed by the real drift monitor."""

from __future__ import annotations

from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from serve.telemetry.drift import DriftConfig, DriftMonitor
from serve.telemetry.features import counts_for_drift, row_from_record
from serve.telemetry.reference import Reference
from serve.telemetry.synthetic import TrafficShape, records
from tests.conftest import ROOT
from tests.deploy.promtool import RULE_FILES, RULE_TESTS, rules, run_promtool


def test_rule_files_are_valid():
    result = run_promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = run_promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_is_tested_firing_and_quiet():
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert {"TiergateBudgetSLOFastBurn", "TiergateBudgetSLOSlowBurn", "TiergateShadowAgreementFastBurn",
            "TiergateShadowAgreementSlowBurn", "TiergateTrafficDrift", "TiergateProbeFlipRateAboveBaseline",
            "TiergateOutputHealthBelowBaseline", "TiergateModelDown", "TiergateMetricsAbsent"} <= alerts
    firing, quiet = set(), set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts <= firing, f"alerts never tested firing: {sorted(alerts - firing)}"
    assert alerts <= quiet, f"alerts never tested quiet: {sorted(alerts - quiet)}"


def _gauges(registry) -> dict[tuple[str, str, str, str], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            if s.name in ("tiergate_drift_score", "tiergate_drift_threshold"):
                out[(s.name, s.labels["feature"], s.labels["method"], s.labels["window"])] = s.value
    return out


def test_drift_alert_fires_on_the_real_monitors_gauges(tmp_path):
    """Two calm 15-minute windows, then four with much longer prompts: the gauges the real
    DriftMonitor exports, minute by minute, make promtool fire TiergateTrafficDrift for the
    prompt-length feature only."""
    rows = [row_from_record(r) for r in records(TrafficShape(), 3000, seed=1) if counts_for_drift(r)]
    registry = CollectorRegistry()
    config = DriftConfig(windows=({"name": "15m", "seconds": 900},), min_samples=50,
                         methods=("jensen_shannon", "psi"), features=("prompt_tokens", "output_tokens", "route_class"))
    monitor = DriftMonitor(registry, Reference.build(rows), config)
    shapes = [TrafficShape()] * 2 + [TrafficShape(prompt_tokens_mean=100)] * 4
    per_minute: list[dict] = []
    for k, shape in enumerate(shapes):
        batch = records(shape, 150, seed=40 + k)
        for minute in range(15):
            now = k * 900 + minute * 60
            for j, rec in enumerate(batch[minute * 10:(minute + 1) * 10]):
                monitor.observe(rec, now + j)
            monitor.tick(now + 59)
            per_minute.append(_gauges(registry))
    keys = sorted({key for snap in per_minute for key in snap})
    series = []
    for name, feature, method, window in keys:
        values = " ".join(f"{snap[(name, feature, method, window)]:.6f}" if (name, feature, method, window) in snap
                          else "_" for snap in per_minute)
        series.append({"series": f'{name}{{job="tiergate",instance="t:1",feature="{feature}",method="{method}",'
                                 f'window="{window}"}}', "values": values})
    at = per_minute[85]  # what promtool reads at eval_time 85m
    expected = [{"exp_labels": {"job": "tiergate", "instance": "t:1", "feature": "prompt_tokens", "method": m,
                                "window": "15m", "severity": "ticket"},
                 "exp_annotations": {
                     "summary": f"Traffic drifted from the reference in prompt_tokens ({m})",
                     "description": f"Drift score {at[('tiergate_drift_score', 'prompt_tokens', m, '15m')]:.3f} is "
                                    "above its threshold in consecutive 15m windows; the quality profile may no "
                                    "longer fit the traffic.",
                     "runbook": "docs/runbooks/quality-drift.md"}}
                for m in ("jensen_shannon", "psi")]
    test_file = {
        "rule_files": [str(p) for p in RULE_FILES], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": [
            {"eval_time": "40m", "alertname": "TiergateTrafficDrift", "exp_alerts": []},
            {"eval_time": "85m", "alertname": "TiergateTrafficDrift", "exp_alerts": expected},
        ]}],
    }
    path = tmp_path / "drift-live.test.yaml"
    path.write_text(yaml.safe_dump(test_file))
    result = run_promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_runbook_an_alert_links_to_exists():
    linked = []
    for path in RULE_FILES:
        for group in yaml.safe_load(Path(path).read_text())["groups"]:
            for rule in group["rules"]:
                runbook = rule.get("annotations", {}).get("runbook")
                if runbook:
                    linked.append(runbook)
                    assert (ROOT / runbook).is_file(), f"{rule['alert']} links to a missing runbook {runbook}"
    assert "docs/runbooks/quality-drift.md" in linked
