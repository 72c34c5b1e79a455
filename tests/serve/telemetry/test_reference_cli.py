"""The feature recorder and ``tiergate reference build|show`` on its output."""

from __future__ import annotations

import json

from serve.cli import main
from serve.telemetry.drift import DriftMonitor
from serve.telemetry.monitoring import Monitoring, MonitoringConfig
from serve.telemetry.recorder import FeatureRecorder, RecorderConfig
from serve.telemetry.reference import Reference
from serve.telemetry.synthetic import TrafficShape, records
from prometheus_client import CollectorRegistry


def test_recorder_writes_features_never_text_unless_enabled(tmp_path):
    recs = records(TrafficShape(), 3, seed=2)
    plain = tmp_path / "plain.jsonl"
    with FeatureRecorder(RecorderConfig(path=str(plain))) as rec:
        for r in recs:
            rec.record(r, prompt_text="my secret prompt")
    lines = [json.loads(x) for x in plain.read_text().splitlines()]
    assert len(lines) == 3 and all("prompt" not in x and "key_name" not in x for x in lines)
    assert "secret" not in plain.read_text()
    assert lines[0]["prompt_tokens"] == recs[0].prompt_tokens
    opted = tmp_path / "opted.jsonl"
    with FeatureRecorder(RecorderConfig(path=str(opted), include_prompt_text=True)) as rec:
        rec.record(recs[0], prompt_text="my secret prompt")
    assert json.loads(opted.read_text())["prompt"] == "my secret prompt"
    capped = tmp_path / "capped.jsonl"
    with FeatureRecorder(RecorderConfig(path=str(capped), max_bytes=1024)) as rec:
        results = [rec.record(r) for r in records(TrafficShape(), 20, seed=3)]
    assert results[0] and not results[-1] and capped.stat().st_size <= 1024


def test_record_then_build_then_monitor(tmp_path, capsys):
    traffic = tmp_path / "traffic.jsonl"
    config = MonitoringConfig(recorder=RecorderConfig(path=str(traffic)), brittleness={"enabled": False})
    monitoring = Monitoring(CollectorRegistry(), config)
    assert monitoring.drift is None  # no reference yet
    for i, r in enumerate(records(TrafficShape(), 600, seed=4)):
        monitoring.observe(r, float(i))
    monitoring.close()
    ref = tmp_path / "ref" / "reference.json"
    assert main(["reference", "build", "--from", str(traffic), "--out", str(ref), "--bins", "8"]) == 0
    out = capsys.readouterr().out
    assert "prompt_tokens: numeric" in out and f"wrote {ref}" in out
    reference = Reference.load(ref)
    assert 550 < reference.n_records < 600  # failed requests are not traffic
    assert main(["reference", "show", str(ref)]) == 0
    assert "route_class: categorical" in capsys.readouterr().out
    # the pool config's monitoring section points at it; paths resolve against the pool file
    section = MonitoringConfig.model_validate({"drift": {"reference": "ref/reference.json"}}).resolve_paths(tmp_path)
    live = Monitoring(CollectorRegistry(), section, embedder=None)
    assert isinstance(live.drift, DriftMonitor) and live.drift.reference.n_records == reference.n_records


def test_build_errors_name_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_tokens": 3}\n{"prompt_tokens": "many"}\n')
    assert main(["reference", "build", "--from", str(bad), "--out", str(tmp_path / "r.json")]) == 2
    assert "bad.jsonl:2: field 'prompt_tokens' must be a number" in capsys.readouterr().err
    few = tmp_path / "few.jsonl"
    few.write_text('{"prompt_tokens": 3}\n')
    assert main(["reference", "build", "--from", str(few), "--out", str(tmp_path / "r.json")]) == 2
    assert "at least 100 answered requests" in capsys.readouterr().err
    assert main(["reference", "show", str(tmp_path / "missing.json")]) == 2
