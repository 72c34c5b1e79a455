"""Smoke run of loadtests/eval_cv_draws.py on a small slice of the committed ladder outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from loadtests import eval_cv_draws

OUTCOMES = Path(__file__).resolve().parents[2] / "deploy" / "eval" / "ladder-outcomes.jsonl"


def test_each_draw_holds_the_asked_prompts_per_task_and_every_rule_is_reported(tmp_path, capsys):
    rows = [json.loads(line) for line in OUTCOMES.read_text().splitlines()]
    subjects = sorted({r["task"] for r in rows if r["task"].startswith("mmlu")})[:4]
    small = [r for r in rows if not r["task"].startswith("mmlu") or r["task"] in subjects]
    kept: dict[str, int] = {}
    keep = []
    for r in small:
        if kept.get(r["task"], 0) < 6:
            kept[r["task"]] = kept.get(r["task"], 0) + 1
            keep.append(r)
    train = tmp_path / "outcomes.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in keep))

    tasks = np.array([r["task"] for r in keep])
    drawn = eval_cv_draws.draw(tasks, {"cpu": 2, "mmlu": 1, "gsm8k": 3}, seed=0)
    counts = {t: int((tasks[drawn] == t).sum()) for t in set(tasks)}
    assert all(n == (3 if t == "gsm8k" else 1 if t.startswith("mmlu") else 2) for t, n in counts.items())

    eval_cv_draws.main(["--train", str(train), "--draws", "2", "--folds", "3", "--cpu", "2", "--mmlu", "1",
                        "--gsm8k", "3", "--values", "0.0005", "--floors", "0.5"])
    out = capsys.readouterr().out
    assert out.startswith("2 draws of ")
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["value@0.0005", "floor@0.5"]
