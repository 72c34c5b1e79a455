"""End to end: `tiergate calibrate` and `tiergate replay --json` on a slice of the real replay data,
plus the shipped labelled set and its scorer."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from serve.cli import main
from serve.quality_profile import load_quality, read_profile

ROOT = Path(__file__).resolve().parents[3]
REPLAY = ROOT.parent / "shared" / "data" / "replay"
EVAL_DIR = ROOT / "deploy" / "eval"
KEYS = {"apgr", "cpt50", "cpt80", "strong_share_at_95", "quality_at", "curve"}


@pytest.fixture(scope="module")
def mmlu_slice(tmp_path_factory) -> Path:
    """40 prompts from each of 12 MMLU subjects (480 prompts)."""
    src = REPLAY / "mmlu-dev.jsonl"
    if not src.exists():
        pytest.skip(f"replay data not found at {src}")
    per_task: dict[str, list[str]] = defaultdict(list)
    for line in src.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            task = json.loads(line)["task"]
            if len(per_task) < 12 or task in per_task:
                if len(per_task[task]) < 40:
                    per_task[task].append(line)
    out = tmp_path_factory.mktemp("replay") / "mmlu-slice.jsonl"
    out.write_text("".join(line + "\n" for lines in per_task.values() for line in lines), encoding="utf-8")
    return out


def _run(argv: list[str], capsys) -> str:
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_calibrate_then_replay_json(mmlu_slice, tmp_path, capsys):
    profile = tmp_path / "profile.json"
    summary = json.loads(_run(["calibrate", "--train", str(mmlu_slice), "--out", str(profile)], capsys))
    assert summary["models"] == ["mixtral-8x7b-instruct", "gpt-4-1106-preview"]
    loaded = load_quality(profile, summary["models"])
    p = loaded.predictor.predict_one("Find the degree of the field extension Q(sqrt(2)) over Q.")
    assert set(p) == set(summary["models"]) and all(0 < v < 1 for v in p.values())
    ece = read_profile(profile).report["ece"]
    assert all(0 <= v < 0.3 for v in ece.values())

    plot = tmp_path / "curve.png"
    out = _run(["replay", "--train", str(mmlu_slice), "--eval", str(mmlu_slice), "--holdout-tasks", "0.25",
                "--json", "--plot", str(plot)], capsys)
    lines = [line for line in out.split("\n") if line.strip()]
    assert len(lines) == 1  # ONE JSON object
    result = json.loads(lines[0])
    assert result["weak"] == "mixtral-8x7b-instruct" and result["strong"] == "gpt-4-1106-preview"
    assert len(result["holdout_tasks"]) == 3 and result["eval_tasks"] == 3 and result["train_tasks"] == 9
    assert result["n_train"] + result["n_eval"] == 480
    for name in ("router", "random", "knn", "oracle"):
        assert KEYS <= set(result[name]), name
    assert result["random"]["apgr"] == pytest.approx(0.5)
    assert result["random"]["cpt50"] == pytest.approx(0.5)
    for name in ("router", "knn", "random"):
        assert result["oracle"]["apgr"] >= result[name]["apgr"]
    q = result["quality"]
    assert result["router"]["curve"][0][1] == pytest.approx(q["mixtral-8x7b-instruct"], abs=1e-5)
    assert result["router"]["curve"][-1][1] == pytest.approx(q["gpt-4-1106-preview"], abs=1e-5)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_with_three_models_reports_cost_curves(mmlu_slice, tmp_path, capsys):
    three = tmp_path / "three.jsonl"
    rows = []
    for line in mmlu_slice.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            rec = json.loads(line)
            o = rec["outcomes"]
            o["middle"] = max(o["mixtral-8x7b-instruct"], 0.5 * o["gpt-4-1106-preview"])
            rows.append(json.dumps(rec))
    three.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = _run(["replay", "--train", str(three), "--eval", str(three), "--holdout-tasks", "0.25", "--json",
                "--cost", "mixtral-8x7b-instruct=1", "--cost", "middle=2", "--cost", "gpt-4-1106-preview=10"],
               capsys)
    result = json.loads(out)
    assert result["models"] == ["mixtral-8x7b-instruct", "middle", "gpt-4-1106-preview"]
    assert "weak" not in result
    for name in ("router", "random", "knn", "oracle"):
        assert {"area", "curve"} <= set(result[name])
    assert result["random"]["area"] == pytest.approx(0.5)
    assert result["oracle"]["area"] >= result["router"]["area"]


def test_replay_cross_validation_by_task(mmlu_slice, tmp_path, capsys):
    md = tmp_path / "cv.md"
    out = _run(["replay", "--train", str(mmlu_slice), "--cv", "3", "--seeds", "0,1", "--markdown", str(md),
                "--json"], capsys)
    result = json.loads(out)
    assert (result["weak"], result["strong"]) == ("mixtral-8x7b-instruct", "gpt-4-1106-preview")
    assert result["folds"] == 3 and result["seeds"] == [0, 1] and result["n_folds_evaluated"] == 6
    for seed in (0, 1):
        folds = [set(r["eval_tasks"]) for r in result["per_fold"] if r["seed"] == seed]
        assert sum(len(f) for f in folds) == 12 and len(set().union(*folds)) == 12  # a partition of the tasks
        assert sum(r["n_eval"] for r in result["per_fold"] if r["seed"] == seed) == 480
    s = result["summary"]
    for name in ("router", "router_floor", "knn", "random", "oracle"):
        assert s[name]["apgr"]["n"] == 6 and s[name]["strong_share_at_95"]["n"] == 6, name
    assert s["random"]["apgr"]["mean"] == pytest.approx(0.5)
    for r in result["per_fold"]:
        assert r["oracle"]["apgr"] >= max(r["router"]["apgr"], r["knn"]["apgr"])
        assert 0 <= r["router"]["ece"] < 0.5
    assert 0 <= result["router_beats"]["knn_and_random"] <= 1
    assert "| router |" in md.read_text() and result["markdown"] == str(md)
    assert main(["replay", "--train", str(mmlu_slice), "--cv", "13", "--json"]) == 2
    assert "between 2 and 12 folds" in capsys.readouterr().err
    assert main(["replay", "--train", str(mmlu_slice), "--cv", "3", "--eval", str(mmlu_slice)]) == 2
    assert "leave out --eval" in capsys.readouterr().err


def test_replay_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "outcomes": {"a": 1.5}}\n')
    assert main(["replay", "--train", str(bad), "--eval", str(bad), "--json"]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert main(["calibrate", "--train", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "p.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_shipped_labelled_set_and_scorer():
    from serve.evaluation.scorer import score

    items = [json.loads(line) for line in (EVAL_DIR / "cpu-labelled.jsonl").read_text().split("\n") if line.strip()]
    assert 100 <= len(items) <= 400 and len({i["id"] for i in items}) == len(items)
    assert all(i["kind"] in ("number", "word", "yesno") and i["answer"] for i in items)
    assert score("number", ["15"], "7 + 8 = 15") == 1.0
    assert score("number", ["1000"], "It is 1,000.") == 1.0
    assert score("number", ["9"], "1. 5 + 4 =") == 0.0
    assert score("word", ["Rome"], "The capital of Italy is Rome.") == 1.0
    assert score("word", ["Buenos Aires"], "Buenos Aires") == 1.0
    assert score("word", ["below"], "What is the opposite of 'below'? Answer") == 0.0
    assert score("yesno", ["no"], "No, it is not.") == 1.0 and score("yesno", ["no"], "Yes") == 0.0
    # the measured outcomes the CPU profile was calibrated from cover the same prompts
    measured = [json.loads(line) for line in (EVAL_DIR / "ladder-outcomes.jsonl").read_text().split("\n")
                if line.strip()]
    assert {i["prompt"] for i in items} <= {m["prompt"] for m in measured}


def test_calibrate_with_a_split_leaves_out_its_held_out_tasks(mmlu_slice, tmp_path, capsys):
    tasks = sorted({json.loads(line)["task"] for line in mmlu_slice.read_text().split("\n") if line.strip()})
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"heldout_tasks": tasks[:3], "calibration_tasks": tasks[3:]}))
    profile = tmp_path / "profile.json"
    summary = json.loads(_run(["calibrate", "--train", str(mmlu_slice), "--split", str(split),
                               "--out", str(profile)], capsys))
    assert summary["n_prompts"] == 9 * 40
    assert read_profile(profile).report["n_tasks"] == 9

    for content, message in (({"heldout_tasks": tasks}, "every prompt of the training files is in a held-out task"),
                             ({"calibration_tasks": tasks}, "has no list of heldout_tasks")):
        split.write_text(json.dumps(content))
        assert main(["calibrate", "--train", str(mmlu_slice), "--split", str(split), "--out", str(profile)]) == 2
        assert message in capsys.readouterr().err


def test_a_model_whose_answers_would_all_be_escalated_keeps_its_threshold(tmp_path, capsys):
    """On the ladder no smollm2 answer set reaches the cascade target (0.8): its threshold escalates them
    all, and is kept, so a cascade from it goes straight up instead of keeping unchecked answers."""
    profile = tmp_path / "profile.json"
    summary = json.loads(_run(["calibrate", "--train", str(EVAL_DIR / "ladder-outcomes.jsonl"), "--split",
                               str(EVAL_DIR / "split.json"), "--out", str(profile)], capsys))
    assert set(summary["cascade"]) == set(summary["models"])
    assert summary["cascade"]["smollm2-135m-instruct"]["escalation_rate"] >= 0.99
