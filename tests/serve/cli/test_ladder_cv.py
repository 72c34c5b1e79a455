"""``tiergate replay --cv K --pool POOL``: the live floor and value rules, leave-tasks-out, on a priced ladder."""

from __future__ import annotations

import json

import numpy as np

from router.quality.dataset import parse_records
from serve.cli import main
from serve.cli.ladder_cv import ladder_cross_validate
from tests.conftest import CPU_POOL

LADDER = "deploy/eval/ladder-outcomes.jsonl"


def _data(n_tasks=8, per_task=30, seed=0):
    """Three models; on half the prompts (marked in the text) only the priciest is right, on the rest all are."""
    rng = np.random.default_rng(seed)
    records = []
    for t in range(n_tasks):
        for i in range(per_task):
            hard = bool(rng.random() < 0.5)
            records.append((f"r{t}-{i}", {"id": f"t{t}/{i}", "task": f"t{t}", "prompt": f"{'hard' if hard else 'easy'} {i}",
                                          "outcomes": {"a": 0.0 if hard else 1.0, "b": 0.0 if hard else 1.0,
                                                       "c": 1.0}}))
    return parse_records(records)


def test_held_out_tasks_never_train_and_a_good_predictor_saves_cost():
    data = _data()
    n = len(data)
    actual = np.tile([1.0, 2.0, 10.0], (n, 1))
    seen: list[tuple[set[str], set[str]]] = []

    def fit_predict(train, e_tr, held, e_ev, seed):  # knows the rule: 'hard' prompts need the priciest model
        seen.append((set(train.tasks), set(held.tasks)))
        hard = np.array([p.startswith("hard") for p in held.prompts])
        return np.where(hard[:, None], [0.05, 0.05, 0.95], [0.9, 0.9, 0.95])

    out = ladder_cross_validate(data, np.zeros((n, 2), dtype=np.float32), actual, actual, fit_predict,
                                folds=4, seeds=[0, 1])
    assert len(seen) == 8 and all(not (tr & ev) for tr, ev in seen)
    for r in out["per_fold"]:
        # the value rule sends the easy half to the cheapest model: (share * 1 + (1 - share) * 10) / 10
        assert r["value"] is not None and r["value"] < 0.6
        assert r["random_mix"] > r["value"]
    assert out["reached"]["value"] == 8 and out["value_at_most_floor_folds"] == 8


def test_the_cli_on_the_ladder_s_labelled_outcomes(tmp_path, capsys):
    md = tmp_path / "cv.md"
    assert main(["replay", "--train", LADDER, "--cv", "3", "--seeds", "0", "--pool", str(CPU_POOL),
                 "--markdown", str(md), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["models"] == ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
    assert result["fixed"]["qwen2.5-coder-1.5b-instruct"]["cost_vs_largest"] == 1.0
    assert len(result["per_fold"]) == 3 and sum(r["n"] for r in result["per_fold"]) == result["n_prompts"]
    pooled = result["pooled"][0]
    # on tasks it never saw, the value rule keeps 98% of the 1.5B's accuracy for less than random mixing pays
    assert pooled["value"] is not None and pooled["value"] < pooled["random_mix"]
    assert "| value |" in md.read_text()
