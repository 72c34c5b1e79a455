"""Does a model's own confidence tell its right answers from its wrong ones? (by hand; figures only)

    .venv/bin/python -m loadtests.confidence_signal [deploy/eval/ladder-outcomes.jsonl]
        [--pool deploy/pools/cpu-default.yaml] [--cpu 3 --mmlu 2 --gsm8k 12]

From ``tiergate label`` records (every model's scored answer to every prompt, with its mean and
first-token logprob), per task family (closed-form, MMLU, GSM8K) and model:

- accuracy, and the AUROC of each confidence signal for the model's own correctness (0.5: no signal);
- each family's share of always-largest's cost, with prompts weighted to a workload of ``--cpu``
  prompts per closed-form task, ``--mmlu`` per MMLU subject and ``--gsm8k`` GSM8K problems (the live
  evaluation's shape), at the pool's prices and the recorded completion tokens;
- the cheapest cost at which a cascade from each cheaper model to the largest (keep the cheap answer
  when its confidence is at or above one threshold) reaches 98% of always-largest's accuracy, the
  threshold chosen in hindsight on these very prompts: an optimistic bound on any confidence cascade.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from serve.cli.calibrate import read_replay
from serve.cli.ladder_cv import read_priced
from serve.config import load_pool

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = ("confidence", "first_logprob")


def family(task: str) -> str:
    return "gsm8k" if task == "gsm8k" else "mmlu" if task.startswith("mmlu") else "closed-form"


def auroc(score: np.ndarray, right: np.ndarray) -> float | None:
    """P(a right answer's score > a wrong one's), ties counting half; None without both kinds."""
    if len(set(right > 0)) < 2:
        return None
    return float(roc_auc_score(right > 0, score))


def cascade_cost_at(target: float, keep_score: np.ndarray, cheap_right: np.ndarray, large_right: np.ndarray,
                    cheap_cost: np.ndarray, large_cost: np.ndarray, w: np.ndarray) -> float | None:
    """The least cost, as a share of always-largest's, at which some threshold reaches ``target`` of
    its accuracy (weights ``w``); None if none does."""
    best = None
    base_acc, base_cost = (w * large_right).sum(), (w * large_cost).sum()
    for t in np.append(np.unique(keep_score), np.inf):  # inf: escalate every answer
        keep = keep_score >= t
        acc = (w * np.where(keep, cheap_right, large_right)).sum()
        cost = (w * np.where(keep, cheap_cost, cheap_cost + large_cost)).sum()
        if acc >= target * base_acc and (best is None or cost / base_cost < best):
            best = cost / base_cost
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", nargs="?", default=str(ROOT / "deploy" / "eval" / "ladder-outcomes.jsonl"))
    p.add_argument("--pool", default=str(ROOT / "deploy" / "pools" / "cpu-default.yaml"))
    p.add_argument("--cpu", type=int, default=3)
    p.add_argument("--mmlu", type=int, default=2)
    p.add_argument("--gsm8k", type=int, default=12)
    args = p.parse_args(argv)
    data = read_replay([args.records])
    models, cost, _ = read_priced([args.records], data, load_pool(args.pool))  # actual cost, cheapest model first
    data = data.reorder_models(models)
    lines = Path(args.records).read_text().splitlines()
    by_id = {r["id"]: r for r in (json.loads(line) for line in lines if line.strip())}
    rows = [by_id[i] for i in data.ids]
    per_task = {"closed-form": args.cpu, "mmlu": args.mmlu, "gsm8k": args.gsm8k}
    n_task = Counter(r["task"] for r in rows)
    w = np.array([per_task[family(r["task"])] / n_task[r["task"]] for r in rows])
    fam = np.array([family(r["task"]) for r in rows])
    right = np.asarray(data.outcomes, dtype=float)
    large = (w * cost[:, -1]).sum()
    print(f"{len(rows)} prompts; weighted to {args.cpu} per closed-form task, {args.mmlu} per MMLU subject, "
          f"{args.gsm8k} GSM8K")
    print(f"{'family':12} {'share of cost':>13}  " + "  ".join(f"{m[:24]:>24}" for m in models))
    for f in ("closed-form", "mmlu", "gsm8k"):
        at = fam == f
        if not at.any():
            continue
        cells = []
        for j, m in enumerate(models):
            signal = [auroc(np.array([r[s][m] for r, a in zip(rows, at) if a]), right[at, j]) for s in SIGNALS]
            shown = "/".join("-" if a is None else f"{a:.2f}" for a in signal)
            cells.append(f"acc {right[at, j].mean():.3f} AUROC {shown}")
        print(f"{f:12} {(w[at] * cost[at, -1]).sum() / large:13.3f}  " + "  ".join(f"{c:>24}" for c in cells))
    print("(AUROC of the mean / first-token logprob for the model's own correctness)")
    for j, m in enumerate(models[:-1]):
        for s in SIGNALS:
            share = cascade_cost_at(0.98, np.array([r[s][m] for r in rows]), right[:, j], right[:, -1],
                                    cost[:, j], cost[:, -1], w)
            shown = "never" if share is None else f"from {share:.3f} of its cost"
            print(f"cascade {m} -> {models[-1]} on {s}, threshold in hindsight: 98% of always-largest {shown}")


if __name__ == "__main__":
    main()
