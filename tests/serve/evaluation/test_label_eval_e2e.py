"""Smoke of the two measurement commands on real models: ``tiergate label`` in-process on smollm2, and
``tiergate eval`` through the real gateway (Ray Serve, the real openai client) on a few labelled prompts."""

from __future__ import annotations

import argparse
import hashlib
import json

import pytest
import yaml

from serve.cli import main
from serve.evaluation.labelled import read_labelled
from serve.evaluation.live import evaluate, markdown, rerender
from serve.evaluation.scorer import product_prompt, score_item
from serve.quality_profile import load_quality
from tests.conftest import CPU_POOL, ROOT

SHIPPED = ROOT / "deploy" / "eval" / "cpu-labelled.jsonl"


def test_label_runs_a_real_model_and_scores_its_replies(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["label", "--pool", str(CPU_POOL), "--models", "smollm2-135m-instruct",
                 "--set", f"{SHIPPED}:1", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().split("\n") if line.strip()]
    items = {it["id"]: it for it in read_labelled(SHIPPED)}
    assert len(records) == len({it["task"] for it in items.values()})  # one per task
    for rec in records:
        reply = rec["replies"]["smollm2-135m-instruct"]
        assert rec["outcomes"]["smollm2-135m-instruct"] == score_item(items[rec["id"]], reply)
        assert rec["tokens"]["smollm2-135m-instruct"] >= 1 and rec["confidence"]["smollm2-135m-instruct"] < 0
    assert 0 < sum(r["outcomes"]["smollm2-135m-instruct"] for r in records) < len(records) + 1
    # resumes: a second run generates nothing new and writes the same records
    assert main(["label", "--pool", str(CPU_POOL), "--models", "smollm2-135m-instruct",
                 "--set", f"{SHIPPED}:1", "--out", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().split("\n") if line.strip()] == records
    # --collect merges the partial results without generating; a prompt not yet answered is left out
    out.unlink()
    partial = tmp_path / "out.jsonl.smollm2-135m-instruct.partial"
    lines = partial.read_text().split("\n")
    partial.write_text("\n".join(lines[1:]))
    assert main(["label", "--pool", str(CPU_POOL), "--models", "smollm2-135m-instruct", "--collect",
                 "--set", f"{SHIPPED}:1", "--out", str(out)]) == 0
    collected = [json.loads(line) for line in out.read_text().split("\n") if line.strip()]
    assert collected == [r for r in records if r["id"] != json.loads(lines[0])["id"]]


def test_label_ids_labels_exactly_the_listed_prompts(tmp_path, capsys):
    chosen = [it["id"] for it in read_labelled(SHIPPED)][3:5]
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(chosen) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["label", "--pool", str(CPU_POOL), "--models", "smollm2-135m-instruct", "--set", str(SHIPPED),
                 "--ids", str(ids), "--out", str(out)]) == 0
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()) == sorted(chosen)
    ids.write_text("no/such/id\n")
    assert main(["label", "--pool", str(CPU_POOL), "--models", "smollm2-135m-instruct", "--set", str(SHIPPED),
                 "--ids", str(ids), "--out", str(out)]) == 2
    assert "1 id(s) of" in capsys.readouterr().err


@pytest.mark.e2e
async def test_eval_scores_every_variant_through_the_gateway(gateway, tmp_path):
    args = argparse.Namespace(base_url=gateway.base_url, api_key="unused", set=[f"{SHIPPED}:1"], per_task=0,
                              seed=0, split="", floors="0.5", cascade_floors="", values="1e-9", cascade_values="",
                              variants="router@0.5,random,value@1e-09", concurrency=2, timeout=120.0,
                              out=str(tmp_path))
    report = rerender(await evaluate(args))
    n = report["prompts"]
    assert n == 13 and set(report["variants"]) == {
        "pinned:smollm2-135m-instruct", "pinned:qwen2.5-coder-0.5b-instruct", "pinned:qwen2.5-coder-1.5b-instruct",
        "random", "router@0.5", "value@1e-09"}
    items = {it["id"]: it for it in read_labelled(SHIPPED)}
    for name, answers in report["answers"].items():
        assert len(answers) == n and all(a["ok"] for a in answers), name
        assert report["variants"][name]["accuracy"] == pytest.approx(sum(a["correct"] for a in answers) / n, abs=1e-4)
        if name.startswith("pinned:"):
            assert {a["model"] for a in answers} == {name.split(":", 1)[1]}
    # every answer's score is the scorer's verdict on the text the gateway returned: re-ask one and compare
    routed = report["answers"]["router@0.5"]
    assert all(a["predicted_quality"] is not None for a in routed)
    assert sum(report["variants"]["router@0.5"]["mix"].values()) == n
    assert report["comparison"]["largest"] == "qwen2.5-coder-1.5b-instruct"
    assert set(items) >= {a["id"] for a in routed}
    # the value rule at a value next to nothing: every answer from the cheapest model, said so
    valued = report["answers"]["value@1e-09"]
    assert {a["model"] for a in valued} == {"smollm2-135m-instruct"}
    assert {a["route_reason"] for a in valued} == {"best_value"}
    assert set(report["comparison"]["variants"]) == {"router@0.5", "value@1e-09"}


# --------------------------------------------------------------------------- tiergate eval --cv
OUTCOMES = ROOT / "deploy" / "eval" / "ladder-outcomes.jsonl"
MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def watching_app(serve_cluster, tmp_path_factory):
    """The ladder on a profile of its own that the gateway reloads within 0.5 s of a change."""
    folder = tmp_path_factory.mktemp("cv")
    profile = folder / "profile.json"
    assert main(["calibrate", "--train", str(OUTCOMES), "--out", str(profile)]) == 0
    pool = yaml.safe_load(CPU_POOL.read_text())
    pool.update(name="cv", quality_profile=str(profile), quality_profile_reload_s=0.5)
    pool["auth"] = {"enabled": False}
    gw = serve_cluster.deploy("cv", {"pool_config": pool, "pool_dir": str(CPU_POOL.parent)}, "/cv", timeout=600)
    yield gw, profile
    from ray import serve

    serve.delete("cv")


@pytest.mark.e2e
async def test_eval_cv_routes_each_fold_on_a_profile_that_never_saw_its_tasks(watching_app, tmp_path):
    gw, profile = watching_app
    before = _sha(profile)
    args = argparse.Namespace(base_url=gw.base_url, api_key="unused", set=[f"{SHIPPED}:1"], per_task=0, seed=0,
                              split="", floors="0.5", cascade_floors="", values="", cascade_values="",
                              variants="router@0.5", concurrency=2, timeout=120.0, out=str(tmp_path),
                              cv=2, train=[str(OUTCOMES)])
    report = rerender(await evaluate(args))
    cv = report["cv"]
    assert [f["fold"] for f in cv["per_fold"]] == [0, 1]
    assert sorted(t for f in cv["per_fold"] for t in f["tasks"]) == report["tasks"]  # the folds partition the tasks
    assert len({f["profile_sha256"] for f in cv["per_fold"]}) == 2
    items = {it["id"]: it for it in read_labelled(SHIPPED)}
    outcome_tasks = [json.loads(line)["task"] for line in OUTCOMES.read_text().split("\n") if line.strip()]
    routed = report["answers"]["router@0.5"]
    assert len(routed) == report["prompts"] == 13 and all(a["ok"] for a in routed)
    for fold in cv["per_fold"]:
        # fitted on every labelled outcome except those of the fold's own tasks ...
        assert fold["trained_on"] == sum(t not in fold["tasks"] for t in outcome_tasks)
        # ... and each of the fold's answers was routed on it: its predicted quality is that profile's
        loaded = load_quality(tmp_path / "profiles" / fold["profile"], MODELS)
        mine = [a for a in routed if a["task"] in fold["tasks"]]
        assert len(mine) == fold["prompts"] > 0
        for a in mine:
            expected = loaded.predictor.predict([product_prompt(items[a["id"]])])[0][a["model"]]
            assert a["predicted_quality"] == pytest.approx(expected, abs=1e-3), a
    assert set(report["answers"]) == {f"pinned:{m}" for m in MODELS} | {"router@0.5"}
    assert _sha(profile) == before  # the watched profile is put back
    assert "Leave-tasks-out live (2 folds, seed 0)" in markdown(report)
