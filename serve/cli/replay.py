"""``tiergate replay``: train on replay files, route every eval prompt, score the routing.

    tiergate replay --train FILE [--train FILE ...] --eval FILE --json [--plot PNG]
                    [--holdout-tasks FRACTION] [--seed N] [--cost MODEL=PRICE ...]
    tiergate replay --train FILE [--train FILE ...] --cv K [--seeds 0,1,2] [--markdown MD] --json

Prints ONE JSON object. With two models, for the router and the baselines ``random``,
``knn`` (k=40 on the same embeddings) and ``oracle``: ``apgr``, ``cpt50``, ``cpt80``,
``strong_share_at_95``, the routed quality at each of those points and the curve. With more
models, each policy's cost-quality curve and its normalised ``area``. Model names come from
the files; the weak and strong models are the lowest and highest by mean training quality
(or by ``--cost``).

``--holdout-tasks F`` evaluates on a deterministic fraction F of the eval file's tasks and
drops those tasks (and any prompt id of the eval set) from training: unseen tasks only.

``--cv K`` is leave-tasks-out cross-validation on the training files (two models): for each
seed the tasks are dealt into K folds and each fold is routed by a predictor trained on the
others (see :mod:`serve.cli.replay_cv`). It prints the mean and spread over folds of APGR, the
strong share at 95% of strong quality and ECE for the router, its min-quality floor rule and
the baselines, plus every fold's figures; ``--markdown`` writes the summary table.
``--models WEAK,STRONG`` picks two models of a file that scores more; ``--without embedding``
or ``--without form`` trains the router without that input, to measure what it adds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from router.errors import ConfigError
from router.quality.dataset import ReplaySet, holdout_tasks
from router.quality.features import feature_matrix
from router.quality.knn import knn_quality
from router.quality.profile import EncoderSpec
from router.quality.train import fit_quality
from router.replay import (
    cost_quality_curve,
    expected_calibration_error,
    normalised_area,
    random_cost_curve,
    strong_share_curve,
    two_model_report,
)
from serve.cli.calibrate import DEFAULT_MAX_CHARS, ENCODER_KINDS, fit_profile, make_encoder, read_replay
from serve.cli.ladder_cv import markdown as ladder_markdown
from serve.cli.ladder_cv import run_ladder_cv
from serve.cli.replay_cv import FitPredict, cross_validate, markdown_table
from serve.config import load_pool
from serve.quality_profile import encode_all

KNN_K = 40
POLICIES = ("router", "random", "knn", "oracle")


def _split(train: ReplaySet, evals: ReplaySet, fraction: float | None, seed: int
           ) -> tuple[ReplaySet, ReplaySet, list[str] | None]:
    held: list[str] | None = None
    if fraction is not None:
        chosen = holdout_tasks(evals.tasks, fraction, seed)
        held = sorted(chosen)
        evals = evals.subset(np.isin(evals.tasks, held))
        train = train.subset(~np.isin(train.tasks, held))
    eval_ids = set(evals.ids)
    train = train.subset(np.array([i not in eval_ids for i in train.ids], dtype=bool))
    if len(train) == 0 or len(evals) == 0:
        raise ConfigError("nothing left to train on or to evaluate: eval prompts are never trained on, so to "
                          "evaluate one file on itself hold out some of its tasks with --holdout-tasks")
    return train, evals, held


def _costs(train: ReplaySet, specs: list[str]) -> np.ndarray:
    if not specs:
        order = np.argsort(train.outcomes.mean(axis=0), kind="stable")  # better = pricier
        costs = np.empty(len(train.models))
        costs[order] = np.arange(len(train.models), dtype=float)
        return costs
    given: dict[str, float] = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        try:
            given[name] = float(value)
        except ValueError:
            raise ConfigError(f"--cost takes MODEL=PRICE, got {spec!r}") from None
    missing = [m for m in train.models if m not in given]
    if missing:
        raise ConfigError(f"--cost lacks model(s) {', '.join(missing)}; models: {', '.join(train.models)}")
    return np.array([given[m] for m in train.models])


def evaluate(train: ReplaySet, evals: ReplaySet, *, encoder_kind: str = "static", max_chars: int | None =
             DEFAULT_MAX_CHARS, costs: list[str] | None = None, seed: int = 0,
             work_dir: Path = Path(".")) -> tuple[dict[str, object], dict[str, list[list[float]]]]:
    """The replay result (JSON-ready) and the curves to plot."""
    evals = evals.reorder_models(train.models)
    encoder, spec = make_encoder(encoder_kind, work_dir, max_chars)
    t0 = time.perf_counter()
    emb_train = encode_all(encoder, train.prompts)
    emb_eval = encode_all(encoder, evals.prompts)
    encode_s = time.perf_counter() - t0
    profile = fit_profile(train, encoder, spec, cascade_target=0.8, emb=emb_train, seed=seed)
    pred = profile.params.probabilities(emb_eval, feature_matrix(evals.prompts))
    knn = knn_quality(emb_train, train.outcomes, emb_eval, KNN_K)
    y = evals.outcomes
    c = _costs(train, costs or [])
    order = np.argsort(c, kind="stable")
    models = [train.models[i] for i in order]
    out: dict[str, object] = {
        "models": models, "encoder": spec.name, "n_train": len(train), "n_eval": len(evals),
        "train_tasks": int(np.unique(train.tasks).size), "eval_tasks": int(np.unique(evals.tasks).size),
        "quality": {m: round(float(y[:, i].mean()), 6) for i, m in zip(order, models)},
        "calibration": {"ece_eval": {m: round(expected_calibration_error(pred[:, i], y[:, i]), 5)
                                     for i, m in zip(order, models)},
                        "ece_train_cv": profile.report.get("ece"),
                        "memory_weight": profile.report.get("memory_weight"),
                        "folds_by": profile.report.get("folds_by")},
        "encode_ms_per_prompt": round(1000 * encode_s / max(1, len(train) + len(evals)), 4),
    }
    curves: dict[str, list[list[float]]] = {}
    if len(models) == 2:
        w, s = int(order[0]), int(order[1])
        out.update(weak=models[0], strong=models[1])
        scores = {"router": pred[:, s] - pred[:, w], "random": np.zeros(len(evals)),
                  "knn": knn[:, s] - knn[:, w], "oracle": y[:, s] - y[:, w]}
        for name in POLICIES:
            report = two_model_report(strong_share_curve(scores[name], y[:, w], y[:, s]))
            out[name] = report.to_dict()
            curves[name] = [[float(a), float(b)] for a, b in zip(report.curve.x, report.curve.quality)]
        # the live gateway's min_quality rule sends the strong model the prompts whose weak-model
        # prediction is lowest; reported so the two rules can be compared
        rule = two_model_report(strong_share_curve(-pred[:, w], y[:, w], y[:, s]))
        out["variants"] = {"router_min_quality_rule": {"apgr": rule.to_dict()["apgr"],
                                                        "strong_share_at_95": rule.to_dict()["strong_share_at_95"]}}
    else:
        yo, po, ko, co = y[:, order], pred[:, order], knn[:, order], c[order]
        q0, q1 = float(yo[:, 0].mean()), float(yo[:, -1].mean())
        built = {"router": cost_quality_curve(po, yo, co), "random": random_cost_curve(yo),
                 "knn": cost_quality_curve(ko, yo, co), "oracle": cost_quality_curve(yo, yo, co)}
        out["costs"] = {m: float(v) for m, v in zip(models, co)}
        for name in POLICIES:
            curve = built[name]
            area = normalised_area(curve, q0, q1)
            out[name] = {"area": None if area is None else round(area, 6), "curve": curve.sampled()}
            curves[name] = [[float(a), float(b)] for a, b in zip(curve.x, curve.quality)]
    return out, curves


def plot(curves: dict[str, list[list[float]]], result: dict[str, object], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    two = "weak" in result
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=110)
    styles = {"router": ("tab:blue", "-"), "knn": ("tab:orange", "-"), "random": ("gray", "--"),
              "oracle": ("tab:green", ":")}
    for name in POLICIES:
        pts = np.array(curves[name])
        metric = result[name].get("apgr" if two else "area")  # type: ignore[union-attr]
        label = f"{name} ({'apgr' if two else 'area'} {metric:.3f})" if metric is not None else name
        color, ls = styles[name]
        ax.plot(pts[:, 0], pts[:, 1], ls, color=color, label=label)
    quality = result["quality"]
    assert isinstance(quality, dict)
    for m, q in quality.items():
        ax.axhline(q, color="black", lw=0.5, alpha=0.4)
        ax.annotate(m, (0.0, q), fontsize=7, ha="left", va="bottom", alpha=0.7)
    ax.set_xlabel("strong-model call share" if two else "normalised cost")
    ax.set_ylabel("mean quality")
    ax.set_title(f"tiergate replay: {result['n_eval']} prompts, {result['eval_tasks']} task(s)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


ABLATIONS = ("embedding", "form")  # what --without can take away from the predictor's inputs


def router_predictions(train: ReplaySet, emb_train: np.ndarray, evals: ReplaySet, emb_eval: np.ndarray,
                       seed: int, *, encoder_name: str = "", without: str | None = None) -> np.ndarray:
    """P(acceptable) on ``evals`` from the quality predictor `tiergate calibrate` would fit on ``train``.

    ``without`` measures a signal by its absence: ``embedding`` zeroes the sentence embedding
    (form features only), ``form`` the prompt-form features (embedding only).
    """
    f_train, f_eval = feature_matrix(train.prompts), feature_matrix(evals.prompts)
    if without == "embedding":
        emb_train, emb_eval = np.zeros_like(emb_train), np.zeros_like(emb_eval)
    elif without == "form":
        f_train, f_eval = np.zeros_like(f_train), np.zeros_like(f_eval)
    elif without is not None:
        raise ConfigError(f"--without takes one of {', '.join(ABLATIONS)}, got {without!r}")
    params, _ = fit_quality(emb_train, f_train, train.outcomes, train.models, train.tasks,
                            encoder_name=encoder_name, seed=seed)
    return params.probabilities(emb_eval, f_eval)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def run_cv(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    data = read_replay(args.train)
    if args.models:
        data = data.select_models([m.strip() for m in args.models.split(",") if m.strip()])
    if args.pool:
        return run_priced_cv(args, data, t0)
    if len(data.models) != 2:
        raise ConfigError(f"--cv compares a weak and a strong model; the data scores {len(data.models)} "
                          f"({', '.join(data.models)}): choose two with --models WEAK,STRONG")
    c = _costs(data, args.cost or [])
    weak, strong = (int(i) for i in np.argsort(c, kind="stable"))
    spec, emb, fit_predict = _predictor(args, data)
    log = (lambda msg: print(f"tiergate replay: {msg}", file=sys.stderr, flush=True)) if args.verbose else None
    cv = cross_validate(data, emb, fit_predict, folds=args.cv, seeds=_seeds(args.seeds), weak=weak,
                        strong=strong, progress=log)
    result = {"train": list(args.train), "models": list(data.models), "weak": data.models[weak],
              "strong": data.models[strong], "encoder": spec.name, "without": args.without,
              "n_prompts": len(data), **cv,
              "seconds": round(time.perf_counter() - t0, 1)}
    return _emit(args, result, markdown_table)


def run_priced_cv(args: argparse.Namespace, data: ReplaySet, t0: float) -> int:
    """``--cv K --pool POOL``: the live rules on the pool's prices (serve/cli/ladder_cv.py)."""
    pool = load_pool(args.pool)
    spec, emb, fit_predict = _predictor(args, data)
    result = {"train": list(args.train), "pool": args.pool, "encoder": spec.name, "without": args.without,
              **run_ladder_cv(args, data, emb, pool, fit_predict, _seeds(args.seeds)),
              "seconds": round(time.perf_counter() - t0, 1)}
    return _emit(args, result, ladder_markdown)


def _predictor(args: argparse.Namespace, data: ReplaySet) -> tuple[EncoderSpec, np.ndarray, FitPredict]:
    """The encoder, the prompts' embeddings and the fit-then-predict step `tiergate calibrate` would take."""
    encoder, spec = make_encoder(args.encoder, Path("."), args.max_chars)
    emb = encode_all(encoder, data.prompts)

    def fit_predict(tr: ReplaySet, e_tr: np.ndarray, ev: ReplaySet, e_ev: np.ndarray, seed: int) -> np.ndarray:
        return router_predictions(tr, e_tr, ev, e_ev, seed, encoder_name=spec.name, without=args.without)

    return spec, emb, fit_predict


def _emit(args: argparse.Namespace, result: dict[str, object], markdown: Callable[[dict], str]) -> int:
    if args.markdown:
        Path(args.markdown).write_text(markdown(result), encoding="utf-8")
        result["markdown"] = args.markdown
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.pool is not None and args.cv is None:
        raise ConfigError("--pool prices a leave-tasks-out cross-validation: give --cv K too")
    if args.cv is not None:
        if args.eval or args.holdout_tasks is not None or args.plot:
            raise ConfigError("--cv evaluates the training files on held-out tasks by itself: "
                              "leave out --eval, --holdout-tasks and --plot")
        return run_cv(args)
    if not args.eval:
        raise ConfigError("give --eval FILE to route, or --cv K for leave-tasks-out cross-validation")
    t0 = time.perf_counter()
    train = read_replay(args.train)
    evals = read_replay([args.eval])
    train, evals, held = _split(train, evals, args.holdout_tasks, args.seed)
    result, curves = evaluate(train, evals, encoder_kind=args.encoder, max_chars=args.max_chars,
                              costs=args.cost, seed=args.seed)
    result = {"train": list(args.train), "eval": args.eval, "holdout_tasks": held, **result,
              "seconds": round(time.perf_counter() - t0, 1)}
    if args.plot:
        plot(curves, result, args.plot)
        result["plot"] = args.plot
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("replay", help="evaluate routing on replay files against baselines",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="append", required=True, metavar="FILE", help="replay file (repeatable)")
    p.add_argument("--eval", metavar="FILE", help="replay file to route")
    p.add_argument("--json", action="store_true", help="print one JSON object on one line")
    p.add_argument("--plot", metavar="PNG", help="write quality against strong-call share (or cost)")
    p.add_argument("--holdout-tasks", type=float, metavar="FRACTION",
                   help="evaluate on this fraction of the eval tasks, unseen in training")
    p.add_argument("--seed", type=int, default=0, help="which tasks are held out, and training seed")
    p.add_argument("--cost", action="append", metavar="MODEL=PRICE",
                   help="model cost for N>2 curves (default: rank by mean training quality)")
    p.add_argument("--cv", type=int, metavar="K", help="leave-tasks-out cross-validation with K folds by task")
    p.add_argument("--seeds", default="0,1,2", help="with --cv: seeds that deal the tasks into folds (and train)")
    p.add_argument("--markdown", metavar="MD", help="with --cv: write the summary as a Markdown table")
    p.add_argument("--models", metavar="WEAK,STRONG", help="with --cv: the two models to compare (data with more)")
    p.add_argument("--without", choices=ABLATIONS, help="with --cv: train the router without this input "
                   "(embedding: prompt-form features only; form: embedding only), to measure what it adds")
    p.add_argument("--verbose", action="store_true", help="with --cv: one progress line per fold on stderr")
    p.add_argument("--pool", metavar="POOL", help="with --cv on `tiergate label` records of this pool's models: "
                   "the live floor and value rules at the pool's prices, cost at 98%% of always-largest's accuracy")
    p.add_argument("--encoder", choices=ENCODER_KINDS, default="static")
    p.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    p.set_defaults(func=run)
