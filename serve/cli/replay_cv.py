"""Leave-tasks-out cross-validation for ``tiergate replay --cv K``.

Every seed deals the tasks into K folds (:func:`router.replay.task_fold_index`); each fold in
turn is evaluated by a predictor trained on the other folds only, so every reported figure is
measured on tasks the predictor never saw. Per fold and policy (the router, its min-quality
floor rule, and the baselines ``random``, ``knn`` and ``oracle``): APGR, the strong-model
share needed for 95% of the strong model's quality (the cost at 95%), and the ECE of the
policy's P(acceptable) (mean over models). The summary gives each metric's mean, standard
deviation, min and max over all folds of all seeds, and how often the router beats both kNN
and random.

When every prompt carries the weak model's own answer confidence (mean token logprob, as the
CPU ladder's labelled outcomes do), two more policies are scored: ``cascade`` (escalate the
least confident weak answers first, the cascade's trigger) and ``router+confidence`` (the
router's weak-model prediction updated by that confidence, calibrated per fold on the training
tasks, ranked by predicted gain). Both have paid for the weak model's answer on every prompt,
which the strong-share axis does not count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from router.errors import ConfigError
from router.quality.dataset import ReplaySet
from router.quality.knn import knn_quality
from router.quality.learned import logit, sigmoid
from router.quality.train import platt_fit
from router.replay import (
    expected_calibration_error,
    spread,
    strong_share_curve,
    task_fold_index,
    two_model_report,
)

KNN_K = 40
CV_POLICIES = ("router", "router_floor", "knn", "random", "oracle")
CONFIDENCE_POLICIES = ("cascade", "router+confidence")
METRICS = ("apgr", "strong_share_at_95", "ece")

# (train set, its embeddings, eval set, its embeddings, seed) -> P(acceptable), (eval prompts, models)
FitPredict = Callable[[ReplaySet, np.ndarray, ReplaySet, np.ndarray, int], np.ndarray]


def _ece(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([expected_calibration_error(pred[:, j], y[:, j]) for j in range(y.shape[1])]))


def score_fold(pred: np.ndarray, knn: np.ndarray, prior: np.ndarray, y: np.ndarray, weak: int, strong: int,
               confidence: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, dict[str, float | None]]:
    """Every policy's metrics on one held-out fold.

    ``pred`` is the router's P(acceptable), ``knn`` the kNN baseline's, ``prior`` the training
    set's mean quality per model (the ``random`` policy's constant prediction), ``y`` the outcomes;
    ``confidence``: the weak model's P(acceptable) from its answer confidence alone, and combined
    with the router's prediction (:func:`confidence_predictions`).
    """
    n = y.shape[0]
    policies: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
        "router": (pred[:, strong] - pred[:, weak], pred),
        "router_floor": (-pred[:, weak], pred),  # the gateway's min_quality rule: least likely weak answers go up
        "knn": (knn[:, strong] - knn[:, weak], knn),
        "random": (np.zeros(n), np.broadcast_to(prior, y.shape)),
        "oracle": (y[:, strong] - y[:, weak], None),
    }
    if confidence is not None:
        p_conf, p_both = confidence
        alone = np.array(np.broadcast_to(prior, y.shape), dtype=float)
        alone[:, weak] = p_conf
        policies["cascade"] = (-p_conf, alone)
        both = pred.copy()
        both[:, weak] = p_both
        policies["router+confidence"] = (both[:, strong] - both[:, weak], both)
    out: dict[str, dict[str, float | None]] = {}
    for name, (scores, probs) in policies.items():
        report = two_model_report(strong_share_curve(scores, y[:, weak], y[:, strong]))
        out[name] = {"apgr": report.apgr, "strong_share_at_95": report.strong_share_at_95,
                     "ece": None if probs is None else _ece(probs, y)}
    return out


def confidence_predictions(conf_train: np.ndarray, y_train: np.ndarray, base_rate: float,
                           conf_eval: np.ndarray, pred_eval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weak model's P(acceptable) from its answer confidence, and combined with the router's.

    The confidence is Platt-calibrated on the training tasks; the combination adds the two
    log-odds and takes the base rate's out once (independent evidence about one answer).
    """
    a, b = platt_fit(conf_train, y_train)
    p_conf = sigmoid(a * conf_eval + b)
    p_both = sigmoid(logit(pred_eval) + logit(p_conf) - logit(np.asarray(base_rate)))
    return p_conf, p_both


def cross_validate(data: ReplaySet, emb: np.ndarray, fit_predict: FitPredict, *, folds: int,
                   seeds: Sequence[int], weak: int, strong: int, knn_k: int = KNN_K,
                   progress: Callable[[str], None] | None = None) -> dict[str, object]:
    """K-fold leave-tasks-out cross-validation over ``seeds``; a JSON-ready result."""
    n_tasks = int(np.unique(data.tasks).size)
    if folds < 2 or folds > n_tasks:
        raise ConfigError(f"--cv {folds}: leave-tasks-out needs between 2 and {n_tasks} folds "
                          f"(the data has {n_tasks} task(s))")
    if not seeds:
        raise ConfigError("--cv needs at least one seed")
    with_conf = bool(np.isfinite(data.confidence[:, weak]).all())
    policies = CV_POLICIES + (CONFIDENCE_POLICIES if with_conf else ())
    rows: list[dict[str, object]] = []
    for seed in seeds:
        fold_of = task_fold_index(data.tasks, folds, seed)
        for k in range(folds):
            test = fold_of == k
            train, evals = data.subset(~test), data.subset(test)
            pred = fit_predict(train, emb[~test], evals, emb[test], seed)
            knn = knn_quality(emb[~test], train.outcomes, emb[test], knn_k)
            prior = train.outcomes.mean(axis=0)
            conf = None
            if with_conf:
                conf = confidence_predictions(train.confidence[:, weak], train.outcomes[:, weak], float(prior[weak]),
                                              evals.confidence[:, weak], pred[:, weak])
            scores = score_fold(pred, knn, prior, evals.outcomes, weak, strong, conf)
            rows.append({"seed": seed, "fold": k, "n_eval": len(evals),
                         "eval_tasks": sorted(set(evals.tasks.tolist())), **scores})
            if progress:
                progress(f"seed {seed} fold {k}: router apgr {scores['router']['apgr']:.3f}, "
                         f"knn {scores['knn']['apgr']:.3f}")
    summary = {name: {m: spread([r[name][m] for r in rows]) for m in METRICS}  # type: ignore[index]
               for name in policies}
    beats = [_beats(r, "knn") and _beats(r, "random") for r in rows]
    return {"folds": folds, "seeds": list(seeds), "n_folds_evaluated": len(rows), "tasks": n_tasks,
            "policies": list(policies), "summary": summary,
            "router_minus": {other: spread([_gap(r, other) for r in rows]) for other in ("knn", "random")},
            "router_beats": {"knn": _share([_beats(r, "knn") for r in rows]),
                             "random": _share([_beats(r, "random") for r in rows]),
                             "knn_and_random": _share(beats)},
            "per_fold": rows}


def _beats(row: dict[str, object], other: str) -> bool:
    mine, theirs = row["router"]["apgr"], row[other]["apgr"]  # type: ignore[index]
    return mine is not None and theirs is not None and mine > theirs


def _gap(row: dict[str, object], other: str) -> float | None:
    """The router's APGR minus another policy's on the same fold (a paired difference)."""
    mine, theirs = row["router"]["apgr"], row[other]["apgr"]  # type: ignore[index]
    return None if mine is None or theirs is None else mine - theirs


def _share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def _fmt(s: dict[str, float | int | None], digits: int = 3) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def markdown_table(result: dict[str, object]) -> str:
    """The cross-validation summary as a Markdown table (mean ± sd over folds; APGR range)."""
    summary = result["summary"]
    assert isinstance(summary, dict)
    lines = [f"Leave-tasks-out: {result['folds']} folds × {len(result['seeds'])} seed(s) "  # type: ignore[arg-type]
             f"= {result['n_folds_evaluated']} held-out folds over {result['tasks']} tasks; mean ± sd over folds.",
             "",
             "| policy | APGR | APGR min–max | strong share at 95% of strong quality | ECE |",
             "|---|---|---|---|---|"]
    for name in result["policies"]:  # type: ignore[attr-defined]
        s = summary[name]
        rng = "n/a" if s["apgr"]["mean"] is None else f"{s['apgr']['min']:.3f}–{s['apgr']['max']:.3f}"
        lines.append(f"| {name} | {_fmt(s['apgr'])} | {rng} | {_fmt(s['strong_share_at_95'])} | {_fmt(s['ece'])} |")
    beats = result["router_beats"]
    assert isinstance(beats, dict)
    lines += ["", f"Router APGR above kNN in {beats['knn']:.0%} of folds, above random in {beats['random']:.0%}, "
                  f"above both in {beats['knn_and_random']:.0%}; paired APGR gap over kNN "
                  f"{_fmt(result['router_minus']['knn'])}."]  # type: ignore[index]
    return "\n".join(lines) + "\n"
