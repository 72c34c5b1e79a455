"""Leave-tasks-out cross-validation of the live rules on a priced ladder: ``tiergate replay --cv K --pool POOL``.

The two-model cross-validation (:mod:`serve.cli.replay_cv`) ranks prompts by predicted gain. A pool
of more models, each with its price, is routed live by one of two rules: the quality floor
(``min_quality``: the cheapest model predicted to reach it) and the value rule
(``answer_value_usd``: the highest ``value * P(acceptable) - predicted cost``, :mod:`router.value`).
This measures both on labelled outcomes of the pool's own models (``tiergate label`` records, which
carry each model's completion tokens), the way ``tiergate eval`` measures them live:

- every seed deals the tasks into K folds; each fold is predicted by a predictor trained on the
  other folds only (the one ``tiergate calibrate`` fits), so every prompt is scored on a task
  the predictor never saw;
- each setting of a rule (a floor, a value) is one operating point: the mean actual cost and the
  accuracy of the models it picks. A prompt's actual cost is its prompt (the gateway's own size
  estimate of the product prompt) and the model's recorded completion tokens at the pool's
  prices; the value rule decides on the predicted cost, the prompt plus ``max_tokens`` (what
  ``tiergate label`` and ``tiergate eval`` send) as the gateway does;
- the headline per fold: the least cost, as a share of always-largest's, at which a rule reaches
  98% of always-largest's accuracy on that fold; beside it the same for random mixes of the fixed
  models, for kNN predictions under the value rule, and the per-prompt oracle.

Figures only; nothing is tuned here. The live evaluation is ``tiergate eval``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from router.errors import ConfigError
from router.quality.dataset import ReplaySet
from router.quality.knn import knn_quality
from router.replay import (
    cost_share_reaching,
    floor_choices,
    operating_points,
    spread,
    task_fold_index,
    utility_choices,
)
from serve.api.requests import estimate_prompt_tokens
from serve.api.schemas import ChatCompletionRequest
from serve.config import PoolConfig
from serve.evaluation.label import MAX_TOKENS
from serve.evaluation.metrics import frontier_cost, random_mix_frontier
from serve.evaluation.scorer import product_prompt, scoring_kind

NEAR = 0.98  # the share of always-largest's accuracy a rule must keep
KNN_K = 40
FLOORS = np.linspace(0.0, 1.0, 201)
VALUE_SPAN = np.geomspace(1e-2, 1e3, 241)  # times the median predicted cost of the priciest model
POLICIES = ("value", "floor", "knn_value", "random_mix")

FitPredict = Callable[[ReplaySet, np.ndarray, ReplaySet, np.ndarray, int], np.ndarray]


def read_priced(paths: list[str], data: ReplaySet, pool: PoolConfig) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The pool's models cheapest first, and per prompt and model the actual and the predicted cost (USD)."""
    if set(data.models) != {m.name for m in pool.models}:
        raise ConfigError(f"the records score {sorted(data.models)}; the pool has {sorted(m.name for m in pool.models)}")
    records: dict[str, dict[str, Any]] = {}
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                records[r["id"]] = r
    models = sorted(pool.cards(), key=lambda m: (m.price.input_per_mtok + m.price.output_per_mtok, m.name))
    n = len(data)
    actual, predicted = np.zeros((n, len(models))), np.zeros((n, len(models)))
    for i, rid in enumerate(data.ids):
        r = records[rid]
        if "tokens" not in r or "kind" not in r:
            raise ConfigError(f"record {rid} has no completion tokens or kind: --pool needs `tiergate label` records")
        item = {"prompt": r["prompt"], "kind": r["kind"], "task": r["task"]}
        sent = ChatCompletionRequest.model_validate(  # as `tiergate eval` sends it, so sized as the router sizes it
            {"model": "auto", "messages": [{"role": "user", "content": product_prompt(item)}]})
        prompt_tokens = estimate_prompt_tokens(sent)
        for j, m in enumerate(models):
            actual[i, j] = m.price.cost(prompt_tokens, int(r["tokens"][m.name]))
            predicted[i, j] = m.price.cost(prompt_tokens, MAX_TOKENS[scoring_kind(item)])
    return [m.name for m in models], actual, predicted


def _points(pred: np.ndarray, predicted: np.ndarray, values: np.ndarray, y: np.ndarray, actual: np.ndarray,
            rule: str) -> np.ndarray:
    if rule == "floor":
        return operating_points([floor_choices(pred, f) for f in FLOORS], y, actual)
    return operating_points([utility_choices(pred, predicted, v) for v in values], y, actual)


def headline(pred: np.ndarray, knn: np.ndarray, y: np.ndarray, actual: np.ndarray, predicted: np.ndarray,
             values: np.ndarray) -> dict[str, float | None]:
    """Each policy's least cost (share of always-largest's) reaching NEAR of its accuracy on these prompts."""
    target, ref = NEAR * float(y[:, -1].mean()), float(actual[:, -1].mean())
    fixed = {str(j): (float(actual[:, j].mean()), float(y[:, j].mean())) for j in range(y.shape[1])}
    mix = frontier_cost(random_mix_frontier(fixed), target)
    oracle = np.where(y.any(axis=1), np.argmax(y > 0, axis=1), 0)
    rows = np.arange(y.shape[0])
    return {
        "value": cost_share_reaching(_points(pred, predicted, values, y, actual, "value"), target, ref),
        "floor": cost_share_reaching(_points(pred, predicted, values, y, actual, "floor"), target, ref),
        "knn_value": cost_share_reaching(_points(knn, predicted, values, y, actual, "value"), target, ref),
        "random_mix": None if mix is None or ref <= 0 else mix / ref,
        "oracle_cost": round(float(actual[rows, oracle].mean() / ref), 6) if ref > 0 else None,
        "oracle_accuracy_vs_largest": (round(float(y[rows, oracle].mean() / y[:, -1].mean()), 6)
                                       if y[:, -1].mean() > 0 else None),
    }


def ladder_cross_validate(data: ReplaySet, emb: np.ndarray, actual: np.ndarray, predicted: np.ndarray,
                          fit_predict: FitPredict, *, folds: int, seeds: list[int],
                          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Per fold and pooled per seed, every policy's cost at NEAR of always-largest's accuracy
    (``data``'s models in the cost order of ``actual``)."""
    y = data.outcomes
    values = float(np.median(predicted[:, -1])) * VALUE_SPAN
    per_fold: list[dict[str, Any]] = []
    pooled: list[dict[str, Any]] = []
    sets = sorted({t.split("/", 1)[0] for t in data.tasks})
    for seed in seeds:
        fold = task_fold_index(data.tasks, folds, seed)
        pred, knn = np.zeros_like(y, dtype=float), np.zeros_like(y, dtype=float)
        for f in range(folds):
            te = fold == f
            train, held = data.subset(~te), data.subset(te)
            pred[te] = fit_predict(train, emb[~te], held, emb[te], seed)
            knn[te] = knn_quality(emb[~te], train.outcomes, emb[te], KNN_K)
            per_fold.append({"seed": seed, "fold": f, "n": int(te.sum()), "tasks": int(np.unique(held.tasks).size),
                             **headline(pred[te], knn[te], y[te], actual[te], predicted[te], values)})
            if progress:
                progress(f"seed {seed} fold {f}: {per_fold[-1]}")
        by_set = {}
        for name in sets:
            sel = np.char.startswith(data.tasks.astype(str), name + "/") | (data.tasks == name)
            by_set[name] = {"n": int(sel.sum()), **headline(pred[sel], knn[sel], y[sel], actual[sel],
                                                            predicted[sel], values)}
        pooled.append({"seed": seed, **headline(pred, knn, y, actual, predicted, values), "sets": by_set})
    value_wins = sum(1 for r in per_fold if r["value"] is not None and (r["floor"] is None or r["value"] <= r["floor"]))
    return {
        "near_largest": NEAR, "folds": folds, "seeds": seeds,
        "summary": {p: spread([r[p] for r in per_fold]) for p in (*POLICIES, "oracle_cost")},
        "reached": {p: sum(1 for r in per_fold if r[p] is not None) for p in POLICIES},
        "value_at_most_floor_folds": value_wins,
        "pooled": pooled, "per_fold": per_fold,
    }


def markdown(result: dict[str, Any]) -> str:
    s, n_folds = result["summary"], len(result["per_fold"])
    lines = [f"Leave-tasks-out on {result['n_prompts']} labelled prompts of {result['models']} "
             f"({result['folds']} folds x {len(result['seeds'])} seeds = {n_folds} held-out folds): the least "
             f"cost, as a share of always-largest's, at which each policy reaches {NEAR:.0%} of always-largest's "
             "accuracy on the fold.", "",
             "| policy | mean | sd | min | max | folds reaching it |", "|---|---|---|---|---|---|"]
    for p in POLICIES:
        v = s[p]
        fmt = (lambda x: "" if x is None else f"{x:.3f}")
        lines.append(f"| {p} | {fmt(v['mean'])} | {fmt(v['sd'])} | {fmt(v['min'])} | {fmt(v['max'])} | "
                     f"{result['reached'][p]} of {n_folds} |")
    lines += ["", f"The value rule cost no more than the floor rule in {result['value_at_most_floor_folds']} of "
              f"{n_folds} folds. Pooled over each seed's folds (every prompt predicted by a fold that did not "
              "train on its task); the oracle sends each prompt to its cheapest model that got it right, so its "
              "accuracy is far above always-largest's:", "",
              "| seed | value | floor | knn_value | random_mix | oracle cost |",
              "|---|---|---|---|---|---|"]
    for r in result["pooled"]:
        lines.append("| " + " | ".join([str(r["seed"])] + ["" if r[k] is None else f"{r[k]:.3f}" for k in
                                                          (*POLICIES, "oracle_cost")]) + " |")
    return "\n".join(lines) + "\n"


def run_ladder_cv(args: Any, data: ReplaySet, emb: np.ndarray, pool: PoolConfig, fit_predict: FitPredict,
                  seeds: list[int]) -> dict[str, Any]:
    models, actual, predicted = read_priced(list(args.train), data, pool)
    data = data.reorder_models(models)
    log = (lambda msg: print(f"tiergate replay: {msg}", file=sys.stderr, flush=True)) if args.verbose else None
    cv = ladder_cross_validate(data, emb, actual, predicted, fit_predict, folds=args.cv, seeds=seeds, progress=log)
    fixed = {m: {"accuracy": round(float(data.outcomes[:, j].mean()), 6),
                 "cost_vs_largest": round(float(actual[:, j].mean() / actual[:, -1].mean()), 6)}
             for j, m in enumerate(models)}
    return {"models": models, "n_prompts": len(data), "fixed": fixed, **cv}
