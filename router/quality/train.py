"""Fitting the learned quality predictor from replay outcomes (pure computation, no I/O).

Per model, a one-hidden-layer network (scikit-learn's ``MLPClassifier``, L2-regularised, a
fixed number of epochs) on [embedding, standardised cheap features]. Outcomes may be fractional quality
scores in [0, 1]: each prompt then counts as a weighted positive and a weighted negative
example. The network's probability is blended with a nearest-neighbour estimate from a memory
of the training prompts (:class:`~router.quality.learned.Memory`), with the weight of
:data:`MEMORY_WEIGHTS` that gives the lowest out-of-fold log loss.
Out-of-task predictions of that blend come from cross-validation *grouped by task*, and a
Platt recalibration is fitted on them, so the probabilities are calibrated for prompts of tasks
the predictor has not seen. The reported expected calibration error (ECE) is cross-fitted:
the recalibration applied to each half of the folds was fitted on the other half; when that
ECE is no better than the raw blend's (small sets), the raw blend is kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from router.quality.features import FEATURE_NAMES
from router.quality.learned import Head, Memory, QualityParams, logit, sigmoid
from router.replay import expected_calibration_error

HIDDEN = 64
ALPHA = 1.0  # L2 penalty
EPOCHS = 60
LEARNING_RATE = 3e-3
MEMORY_WEIGHTS = (0.0, 0.25, 0.5, 0.75)  # chosen per profile by out-of-fold log loss
MEMORY_K_MAX = 100
MIN_TASKS_FOR_TASK_FOLDS = 20  # fewer tasks: whole-task folds leave too little alike to learn from


def memory_k(rows: int) -> int:
    """Neighbours for the memory term: a tenth of the training rows, between 5 and 100."""
    return int(min(MEMORY_K_MAX, max(5, rows // 10)))


@dataclass(frozen=True)
class FitReport:
    """What calibration measured, per model; stored in the profile for the record."""

    n_prompts: int
    n_tasks: int
    folds: int
    folds_by: str
    hidden: int
    alpha: float
    memory_k: int
    memory_weight: float
    ece: dict[str, float] = field(default_factory=dict)  # cross-fitted, after recalibration
    ece_uncalibrated: dict[str, float] = field(default_factory=dict)
    mean_outcome: dict[str, float] = field(default_factory=dict)
    log_loss: dict[str, float] = field(default_factory=dict)  # out-of-task, after recalibration

    def to_dict(self) -> dict[str, object]:
        r = lambda d: {k: round(v, 5) for k, v in d.items()}  # noqa: E731
        return {"n_prompts": self.n_prompts, "n_tasks": self.n_tasks, "folds": self.folds, "folds_by": self.folds_by,
                "hidden": self.hidden, "alpha": self.alpha, "memory_k": self.memory_k,
                "memory_weight": self.memory_weight,
                "ece": r(self.ece), "ece_uncalibrated": r(self.ece_uncalibrated),
                "mean_outcome": r(self.mean_outcome), "log_loss": r(self.log_loss)}


def _constant_head(model: str, width: int, rate: float, hidden: int) -> Head:
    r = min(max(rate, 1e-3), 1 - 1e-3)
    return Head(model, np.zeros((width, hidden)), np.zeros(hidden), np.zeros(hidden), float(np.log(r / (1 - r))))


def _soft_fit(model: str, x: np.ndarray, y: np.ndarray, hidden: int, alpha: float, seed: int) -> Head:
    """A network on soft labels y in [0, 1] (two weighted copies of each row), as a :class:`Head`."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    xx = np.vstack([x, x])
    yy = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    ww = np.concatenate([y, 1.0 - y])
    keep = ww > 0
    if len(np.unique(yy[keep])) < 2 or len(y) < 20:  # one class, or too few to learn from
        return _constant_head(model, x.shape[1], float(y.mean()), hidden)
    net = MLPClassifier((hidden,), alpha=alpha, max_iter=EPOCHS, learning_rate_init=LEARNING_RATE,
                        random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed epoch budget, on purpose
        net.fit(xx[keep], yy[keep], sample_weight=ww[keep])
    (w1, w2), (b1, b2) = net.coefs_, net.intercepts_
    return Head(model, w1.astype(np.float64), b1.astype(np.float64), w2[:, 0].astype(np.float64), float(b2[0]))


def platt_fit(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Scale and shift of the logit that minimise log loss of y (fractional allowed)."""
    from scipy.optimize import minimize

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        p = np.clip(sigmoid(params[0] * z + params[1]), 1e-9, 1 - 1e-9)
        nll = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        g = p - y
        return float(nll), np.array([np.mean(g * z), np.mean(g)])

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                   bounds=[(1e-3, 10.0), (-20.0, 20.0)])
    return float(res.x[0]), float(res.x[1])


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _folds(groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Assign whole tasks to k folds (each row's fold index), shuffled by ``seed``."""
    names = np.unique(groups)
    rng = np.random.default_rng(seed)
    order = rng.permutation(names.size)
    fold_of = {names[i]: j % k for j, i in enumerate(order)}
    fold = np.array([fold_of[g] for g in groups])
    return [np.nonzero(fold == j)[0] for j in range(k)]


def fit_quality(emb: np.ndarray, feats: np.ndarray, outcomes: np.ndarray, models: Sequence[str],
                groups: Sequence[str], *, encoder_name: str, hidden: int = HIDDEN, alpha: float = ALPHA,
                folds: int = 4, seed: int = 0, memory_weight: float | None = None,
                task_folds: bool | None = None) -> tuple[QualityParams, FitReport]:
    """Fit one calibrated head per model. ``outcomes`` is (prompts, models) in [0, 1].

    ``task_folds`` calibrates on predictions for unseen *tasks* (True) or unseen *prompts* of
    seen tasks (False); None picks tasks when the data has at least 20 of them. A small
    labelled set of a dozen tasks that stand for the traffic (the CPU pool's) wants prompt
    folds; a broad benchmark that must carry over to new subjects wants task folds.

    BLAS runs single-threaded meanwhile: these matrices are small, and on a shared 2-core
    machine oversubscribed BLAS threads made fitting ten times slower.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _fit_quality(emb, feats, outcomes, models, groups, encoder_name=encoder_name, hidden=hidden,
                            alpha=alpha, folds=folds, seed=seed, memory_weight=memory_weight,
                            task_folds=task_folds)


def _fit_quality(emb: np.ndarray, feats: np.ndarray, outcomes: np.ndarray, models: Sequence[str],
                 groups: Sequence[str], *, encoder_name: str, hidden: int, alpha: float, folds: int,
                 seed: int, memory_weight: float | None, task_folds: bool | None
                 ) -> tuple[QualityParams, FitReport]:
    emb = np.asarray(emb, dtype=np.float64)
    feats = np.asarray(feats, dtype=np.float64)
    y_all = np.clip(np.asarray(outcomes, dtype=np.float64), 0.0, 1.0)
    g = np.asarray(groups)
    n = emb.shape[0]
    if not (feats.shape[0] == n == y_all.shape[0] == g.shape[0]) or y_all.shape[1] != len(models):
        raise ValueError("embeddings, features, outcomes and groups must have one row per prompt")
    if n < 2:
        raise ValueError("need at least two labelled prompts")
    mean = feats.mean(axis=0)
    scale = feats.std(axis=0)
    scale[scale < 1e-6] = 1.0
    x = np.hstack([emb, (feats - mean) / scale])
    n_tasks = int(np.unique(g).size)
    by_task = n_tasks >= MIN_TASKS_FOR_TASK_FOLDS if task_folds is None else task_folds
    keys = g if by_task and n_tasks >= folds else np.arange(n).astype(str)
    k = min(folds, np.unique(keys).size)
    parts = _folds(keys, k, seed)
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def memory(rows: np.ndarray, weight: float) -> Memory | None:
        if weight <= 0:
            return None
        return Memory(unit[rows].astype(np.float32), y_all[rows], memory_k(rows.size), weight)

    # out-of-fold predictions of the network and of the memory, kept apart to choose the blend
    p_net = np.zeros_like(y_all)
    p_mem = np.zeros_like(y_all)
    for test in parts:
        rows = np.setdiff1d(np.arange(n), test)
        hs = tuple(_soft_fit(name, x[rows], y_all[rows, j], hidden, alpha, seed) for j, name in enumerate(models))
        net = QualityParams(encoder_name, emb.shape[1], FEATURE_NAMES, mean, scale, hs)
        p_net[test] = net.blend(emb[test], feats[test])
        mem = memory(rows, 1.0)
        assert mem is not None
        p_mem[test] = mem.estimate(emb[test])

    def recalibrated_loss(w: float) -> float:
        z = logit((1 - w) * p_net + w * p_mem)
        return sum(_log_loss(sigmoid(a * z[:, j] + b), y_all[:, j])
                   for j in range(len(models)) for a, b in [platt_fit(z[:, j], y_all[:, j])])

    if memory_weight is None:
        memory_weight = min(MEMORY_WEIGHTS, key=recalibrated_loss)
    z_oof = logit((1 - memory_weight) * p_net + memory_weight * p_mem)

    heads: list[Head] = []
    report = FitReport(n_prompts=n, n_tasks=n_tasks, folds=k, folds_by="task" if keys is g else "prompt",
                       hidden=hidden, alpha=alpha,
                       memory_k=memory_k(n) if memory_weight > 0 else 0, memory_weight=memory_weight)
    half = np.isin(np.arange(n), np.concatenate(parts[::2]))
    for j, name in enumerate(models):
        y, z = y_all[:, j], z_oof[:, j]
        a, b = platt_fit(z, y)
        # cross-fitted ECE: recalibrate each half of the folds with the other half's fit
        p_cf = np.empty(n)
        for side in (half, ~half):
            if side.all() or not side.any():
                p_cf = sigmoid(a * z + b)
                break
            a2, b2 = platt_fit(z[~side], y[~side])
            p_cf[side] = sigmoid(a2 * z[side] + b2)
        ece_cf, ece_raw = expected_calibration_error(p_cf, y), expected_calibration_error(sigmoid(z), y)
        if ece_cf > ece_raw:  # recalibrating did not help out of fold (small sets): keep the raw blend
            a, b, p_cf, ece_cf = 1.0, 0.0, sigmoid(z), ece_raw
        report.ece[name] = ece_cf
        report.ece_uncalibrated[name] = ece_raw
        report.log_loss[name] = _log_loss(p_cf, y)
        report.mean_outcome[name] = float(y.mean())
        final = _soft_fit(name, x, y, hidden, alpha, seed)
        heads.append(Head(name, final.hidden_weights, final.hidden_bias, final.out_weights, final.out_bias, a, b))
    params = QualityParams(encoder_name=encoder_name, dim=emb.shape[1], feature_names=FEATURE_NAMES,
                           feature_mean=mean, feature_scale=scale, heads=tuple(heads),
                           memory=memory(np.arange(n), memory_weight))
    return params, report
