"""What any router could reach on a live evaluation's prompts (by hand, after ``tiergate eval``).

    .venv/bin/python -m loadtests.eval_ceiling loadtests/results/eval-mixed/eval.json

``tiergate eval`` runs every fixed model on the same prompts (the ``pinned:`` variants) and scores
each answer against gold, so each prompt's outcome and actual cost on each model is known. From
them this prints two ceilings, each as accuracy and cost against always-largest:

- **per prompt**: an oracle that sends each prompt to its cheapest model that answered it
  correctly (the cheapest model when none did). No router reaches it; it bounds them all.
- **per task**: the best assignment of one model to each *task* (subject), at each cost: what a
  router that knew each task's per-model accuracy exactly, and nothing about single prompts,
  could reach. It is measured on the very prompts it is chosen on, so it is optimistic; on tasks
  held out from calibration a router does not know their accuracies at all.

Then the router's own variants, from the same file. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

COST_STEPS = 400  # the per-task frontier's cost grid, over always-largest's cost


def _pinned(report: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, dict[str, float]]]]:
    """The models (cheapest first, as the report lists them) and, per prompt id, each model's
    outcome and cost; only prompts every model answered."""
    models = list(report["models"])
    per: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for model in models:
        for a in report["answers"][f"pinned:{model}"]:
            if a.get("ok"):
                per[a["id"]][model] = {"correct": float(a["correct"]), "cost": float(a["cost_usd"]),
                                       "task": a["task"]}
    return models, {i: m for i, m in per.items() if len(m) == len(models)}


def per_prompt_oracle(models: list[str], per: dict[str, dict[str, dict[str, float]]]) -> tuple[float, float]:
    """(correct answers, cost) of the cheapest correct model per prompt."""
    correct = cost = 0.0
    for outcomes in per.values():
        right = [m for m in models if outcomes[m]["correct"] > 0]
        pick = min(right, key=lambda m: outcomes[m]["cost"]) if right else min(models, key=lambda m: outcomes[m]["cost"])
        correct += outcomes[pick]["correct"]
        cost += outcomes[pick]["cost"]
    return correct, cost


def per_task_frontier(models: list[str], per: dict[str, dict[str, dict[str, float]]],
                      largest_cost: float, *, by_prompt: bool = False) -> list[tuple[float, float]]:
    """(cost share, correct answers) of the best one-model-per-task assignment within each cost
    share of always-largest (a knapsack over tasks on a grid of COST_STEPS). ``by_prompt``: one
    model per prompt instead, the per-prompt oracle's frontier (it may give up correct answers
    to save cost, where the oracle keeps them all)."""
    tasks: dict[str, list[tuple[float, float]]] = defaultdict(lambda: [(0.0, 0.0)] * len(models))
    for prompt_id, outcomes in per.items():
        task = prompt_id if by_prompt else str(outcomes[models[0]]["task"])
        tasks[task] = [(c + outcomes[m]["correct"], k + outcomes[m]["cost"])
                       for (c, k), m in zip(tasks[task], models)]
    step = largest_cost / COST_STEPS
    best = [0.0] + [-1.0] * (2 * COST_STEPS)  # best[j]: most correct answers at cost j steps
    for options in tasks.values():
        nxt = [-1.0] * len(best)
        for j, have in enumerate(best):
            if have < 0:
                continue
            for correct, cost in options:
                k = j + max(0, round(cost / step))
                if k < len(nxt) and have + correct > nxt[k]:
                    nxt[k] = have + correct
        best = nxt
    frontier, top = [], -1.0
    for j, correct in enumerate(best):
        if correct > top:
            top = correct
            frontier.append((j / COST_STEPS, correct))
    return frontier


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("eval_json", type=Path, help="a tiergate eval report (eval.json)")
    p.add_argument("--accuracy", type=float, default=0.98, help="the share of always-largest accuracy to reach")
    args = p.parse_args(argv)
    report = json.loads(args.eval_json.read_text())
    models, per = _pinned(report)
    largest = models[-1]
    l_correct = sum(o[largest]["correct"] for o in per.values())
    l_cost = sum(o[largest]["cost"] for o in per.values())
    print(f"{len(per)} prompts every model answered; always-largest ({largest}): {l_correct:.0f} correct")
    correct, cost = per_prompt_oracle(models, per)
    print(f"per-prompt oracle: accuracy {correct / l_correct:.3f} of largest at cost {cost / l_cost:.3f}")
    by_prompt = per_task_frontier(models, per, l_cost, by_prompt=True)
    reach = next(((share, c) for share, c in by_prompt if c >= args.accuracy * l_correct), None)
    if reach is not None:
        print(f"per-prompt ceiling: {args.accuracy:.0%} of largest's accuracy from cost {reach[0]:.3f} of largest")
    frontier = per_task_frontier(models, per, l_cost)
    reach = next(((share, c) for share, c in frontier if c >= args.accuracy * l_correct), None)
    if reach is not None:
        print(f"per-task ceiling (in-sample, optimistic): {args.accuracy:.0%} of largest's accuracy from "
              f"cost {reach[0]:.3f} of largest")
    print("per-task frontier (cost share: accuracy share): " + ", ".join(
        f"{share:.2f}: {c / l_correct:.3f}" for share, c in frontier if share <= 1.0))
    for name, v in report.get("comparison", {}).get("variants", {}).items():
        print(f"{name}: accuracy {v['accuracy_vs_largest']:.3f} of largest at cost {v['cost_vs_largest']:.3f}")


if __name__ == "__main__":
    main()
