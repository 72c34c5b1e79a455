"""How far one live leave-tasks-out evaluation can be trusted: the same evaluation, replayed offline
on many draws of its workload (by hand; figures only).

    .venv/bin/python -m loadtests.eval_cv_draws [--draws 15] [--cpu 3 --mmlu 2 --gsm8k 12]
        [--values 0.0003,0.0005,0.0007,0.001] [--floors 0.5,0.6]

``tiergate eval --cv`` draws a workload (``--cpu`` prompts of each closed-form task, ``--mmlu`` of each
MMLU subject, ``--gsm8k`` GSM8K problems), deals its tasks into folds and routes each fold on a profile
fitted without that fold's tasks. Every model's answer to every labelled prompt is already scored in
``deploy/eval/ladder-outcomes.jsonl`` (greedy answers: the live run of loadtests/results/eval-cv
reproduced all 213 of its pinned outcomes), so the evaluation can be replayed offline: for each draw,
each fold is predicted by the predictor ``tiergate calibrate`` fits on the outcomes outside the fold's
tasks, and each rule's choice is scored with the recorded outcome and charged the recorded tokens at
the pool's prices. Printed per operating point: accuracy and cost against always-largest's (mean and
sd over the draws), ECE, and in how many draws it reached 98% of always-largest's accuracy within 60%
and within 50% of its cost.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from router.replay import (
    expected_calibration_error,
    floor_choices,
    task_fold_index,
    utility_choices,
)
from serve.cli.calibrate import make_encoder, read_replay
from serve.cli.ladder_cv import read_priced
from serve.cli.replay import router_predictions
from serve.config import load_pool
from serve.quality_profile import encode_all

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.98


def draw(tasks: np.ndarray, per_task: dict[str, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    for t in sorted(set(tasks)):
        idx = np.where(tasks == t)[0]
        n = per_task["gsm8k" if t == "gsm8k" else "mmlu" if t.startswith("mmlu") else "cpu"]
        rows.extend(rng.choice(idx, min(n, len(idx)), replace=False))
    return np.array(sorted(rows))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default=str(ROOT / "deploy" / "eval" / "ladder-outcomes.jsonl"))
    p.add_argument("--pool", default=str(ROOT / "deploy" / "pools" / "cpu-default.yaml"))
    p.add_argument("--draws", type=int, default=15)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--cpu", type=int, default=3)
    p.add_argument("--mmlu", type=int, default=2)
    p.add_argument("--gsm8k", type=int, default=12)
    p.add_argument("--values", default="0.0003,0.0005,0.0007,0.001")
    p.add_argument("--floors", default="0.5,0.6")
    args = p.parse_args(argv)
    data = read_replay([args.train])
    models, actual, predicted = read_priced([args.train], data, load_pool(args.pool))
    data = data.reorder_models(models)
    tasks = data.tasks.astype(str)
    encoder, spec = make_encoder("static", Path("."), 2000)
    emb = encode_all(encoder, data.prompts)
    rules = [(f"value@{v}", "value", float(v)) for v in args.values.split(",") if v] + \
            [(f"floor@{f}", "floor", float(f)) for f in args.floors.split(",") if f]
    seen: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in rules}
    per_task = {"cpu": args.cpu, "mmlu": args.mmlu, "gsm8k": args.gsm8k}
    for seed in range(args.draws):
        rows = draw(tasks, per_task, seed)
        fold = task_fold_index(tasks[rows], args.folds, 0)
        pred = np.zeros((len(rows), len(models)))
        for f in range(args.folds):
            held = set(tasks[rows][fold == f])
            train = np.array([t not in held for t in tasks])
            ev = rows[fold == f]
            pred[fold == f] = router_predictions(data.subset(train), emb[train],
                                                 data.subset(np.isin(np.arange(len(tasks)), ev)), emb[ev], 0,
                                                 encoder_name=spec.name)
        y, act, prd = data.outcomes[rows], actual[rows], predicted[rows]
        at = np.arange(len(rows))
        for name, rule, x in rules:
            c = utility_choices(pred, prd, x) if rule == "value" else floor_choices(pred, x)
            seen[name].append((y[at, c].mean() / y[:, -1].mean(), act[at, c].mean() / act[:, -1].mean(),
                               expected_calibration_error(pred[at, c], y[at, c])))
    print(f"{args.draws} draws of {len(rows)} prompts ({args.cpu} per closed-form task, {args.mmlu} per MMLU "
          f"subject, {args.gsm8k} GSM8K), {args.folds} folds by task; against always-largest")
    print(f"{'rule':14} {'accuracy':>15} {'cost':>15} {'ECE':>6} {'98% within 60%':>15} {'within 50%':>11}")
    for name, points in seen.items():
        acc, cost, cal = zip(*points)
        sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        met = [(a >= TARGET and c <= 0.60, a >= TARGET and c <= 0.50) for a, c, _ in points]
        print(f"{name:14} {statistics.mean(acc):7.3f} ± {sd(acc):5.3f} {statistics.mean(cost):7.3f} ± {sd(cost):5.3f} "
              f"{statistics.mean(cal):6.3f} {sum(m[0] for m in met):>9} of {len(met):<3} {sum(m[1] for m in met):>5} of "
              f"{len(met)}")


if __name__ == "__main__":
    main()
