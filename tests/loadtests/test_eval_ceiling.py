"""The ceilings of loadtests/eval_ceiling.py on a hand-made evaluation report."""

from __future__ import annotations

import json

import pytest

from loadtests import eval_ceiling


def _answers(model: str, rows: list[tuple[str, str, float, float]]) -> list[dict]:
    return [{"id": i, "task": t, "ok": True, "correct": c, "cost_usd": k, "model": model} for i, t, c, k in rows]


REPORT = {
    "models": ["small", "large"],
    "answers": {
        # task a: small is right on one of two prompts; task b: small is right on both
        "pinned:small": _answers("small", [("a/0", "a", 1.0, 1.0), ("a/1", "a", 0.0, 1.0),
                                           ("b/0", "b", 1.0, 1.0), ("b/1", "b", 1.0, 1.0)]),
        "pinned:large": _answers("large", [("a/0", "a", 1.0, 4.0), ("a/1", "a", 1.0, 4.0),
                                           ("b/0", "b", 1.0, 4.0), ("b/1", "b", 1.0, 4.0)]),
    },
    "comparison": {"variants": {"router@0.5": {"accuracy_vs_largest": 0.75, "cost_vs_largest": 0.25}}},
}


def test_the_per_prompt_oracle_takes_the_cheapest_correct_model():
    models, per = eval_ceiling._pinned(REPORT)
    assert eval_ceiling.per_prompt_oracle(models, per) == (4.0, 1.0 + 4.0 + 1.0 + 1.0)


def test_the_per_task_frontier_assigns_one_model_per_task():
    models, per = eval_ceiling._pinned(REPORT)
    frontier = eval_ceiling.per_task_frontier(models, per, largest_cost=16.0)
    # all small: 3 right at 4/16; b small and a large: 4 right at 10/16
    assert frontier[0] == (pytest.approx(0.25), 3.0)
    assert frontier[-1] == (pytest.approx(0.625), 4.0)


def test_the_per_prompt_frontier_may_move_single_prompts():
    models, per = eval_ceiling._pinned(REPORT)
    frontier = eval_ceiling.per_task_frontier(models, per, largest_cost=16.0, by_prompt=True)
    # all small: 3 right at 4/16; only a/1 large: 4 right at 7/16 (per task it took 10/16)
    assert frontier == [(pytest.approx(0.25), 3.0), (pytest.approx(0.4375), 4.0)]


def test_the_command_prints_both_ceilings_and_the_router(tmp_path, capsys):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(REPORT))
    eval_ceiling.main([str(path)])
    out = capsys.readouterr().out
    assert "per-prompt oracle: accuracy 1.000 of largest at cost 0.438" in out
    assert "per-prompt ceiling: 98% of largest's accuracy from cost 0.438" in out
    assert "per-task ceiling (in-sample, optimistic): 98% of largest's accuracy from cost 0.625" in out
    assert "router@0.5: accuracy 0.750 of largest at cost 0.250" in out
