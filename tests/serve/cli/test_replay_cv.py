"""Leave-tasks-out cross-validation: no held-out task reaches training, and the scores are right."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import ConfigError
from router.quality.dataset import parse_records
from serve.cli.replay_cv import cross_validate, markdown_table, score_fold


def _data(n_tasks: int = 6, per_task: int = 20, seed: int = 0, confidence: bool = False):
    rng = np.random.default_rng(seed)
    records = []
    for t in range(n_tasks):
        for i in range(per_task):
            weak = float(rng.random() < 0.4)
            strong = 1.0 if confidence else float(weak or rng.random() < 0.5)  # with confidence: gain = 1 - weak
            rec = {"id": f"t{t}/{i}", "task": f"t{t}", "prompt": f"task {t} item {i}",
                   "outcomes": {"weak": weak, "strong": strong}}
            if confidence:  # the weak model's answers are confident exactly when right, up to noise
                rec["confidence"] = {"weak": -2.0 + 1.5 * weak + 0.3 * rng.random(), "strong": None}
            records.append((f"r{t}-{i}", rec))
    data = parse_records(records)
    return data, rng.normal(size=(len(data), 4)).astype(np.float32)


def test_score_fold_by_hand():
    y = np.array([[1, 1], [0, 1], [0, 0], [1, 1]], dtype=float)
    pred = np.array([[0.9, 0.9], [0.1, 0.9], [0.5, 0.5], [0.9, 0.9]])
    prior = np.array([0.5, 0.75])
    out = score_fold(pred, pred, prior, y, weak=0, strong=1)
    assert out["router"]["apgr"] == pytest.approx(out["oracle"]["apgr"])  # ranks the only gainer first
    assert out["random"]["apgr"] == pytest.approx(0.5)
    assert out["oracle"]["ece"] is None
    # random predicts the training means: |0.5 - 0.5| for the weak model, |0.75 - 0.75| for the strong
    assert out["random"]["ece"] == pytest.approx(0.0)


def test_cross_validation_never_trains_on_held_out_tasks():
    data, emb = _data()
    seen: list[tuple[int, frozenset[str]]] = []

    def fit_predict(train, e_train, evals, e_eval, seed):
        assert not set(train.tasks.tolist()) & set(evals.tasks.tolist())
        assert len(train) == e_train.shape[0] and len(evals) == e_eval.shape[0]
        seen.append((seed, frozenset(evals.tasks.tolist())))
        return evals.outcomes * 0.98 + 0.01  # a predictor that knows the answers: the router is the oracle

    result = cross_validate(data, emb, fit_predict, folds=3, seeds=[0, 1], weak=0, strong=1)
    assert result["n_folds_evaluated"] == 6 and len(result["per_fold"]) == 6
    for seed in (0, 1):  # each seed's folds partition the tasks
        held = [tasks for s, tasks in seen if s == seed]
        assert sum(len(t) for t in held) == 6 and frozenset().union(*held) == set(data.tasks.tolist())
    s = result["summary"]
    assert s["random"]["apgr"]["mean"] == pytest.approx(0.5)
    assert s["router"]["apgr"]["mean"] == pytest.approx(s["oracle"]["apgr"]["mean"])
    assert s["router"]["apgr"]["n"] == 6
    assert result["router_beats"]["random"] == 1.0
    gap = result["router_minus"]["random"]
    assert gap["n"] == 6 and gap["mean"] == pytest.approx(s["oracle"]["apgr"]["mean"] - 0.5)
    table = markdown_table(result)
    assert "| router |" in table and "| knn |" in table and "6 held-out folds" in table


def test_too_many_folds_is_a_config_error():
    data, emb = _data(n_tasks=3)
    with pytest.raises(ConfigError, match="folds"):
        cross_validate(data, emb, lambda *a: None, folds=4, seeds=[0], weak=0, strong=1)


def test_ablations_take_an_input_away():
    from serve.cli.replay import router_predictions

    data, emb = _data(n_tasks=4, per_task=30)
    train, evals = data.subset(data.tasks != "t3"), data.subset(data.tasks == "t3")
    e_tr, e_ev = emb[data.tasks != "t3"], emb[data.tasks == "t3"]
    same_emb = np.repeat(e_ev[:1], len(evals), axis=0)  # one embedding, prompts of different form
    no_form = router_predictions(train, e_tr, evals, same_emb, 0, without="form")
    assert np.allclose(no_form, no_form[0])  # only the (shared) embedding is left to tell them apart
    no_emb = router_predictions(train, e_tr, evals, e_ev, 0, without="embedding")
    assert np.allclose(no_emb, router_predictions(train, e_tr, evals, same_emb, 0, without="embedding"))
    with pytest.raises(ConfigError, match="--without"):
        router_predictions(train, e_tr, evals, e_ev, 0, without="everything")


def test_the_weak_models_confidence_gives_cascade_policies():
    data, emb = _data(confidence=True)

    def fit_predict(train, e_train, evals, e_eval, seed):
        return np.tile(train.outcomes.mean(axis=0), (len(evals), 1))  # a router that knows nothing

    result = cross_validate(data, emb, fit_predict, folds=3, seeds=[0], weak=0, strong=1)
    assert result["policies"][-2:] == ["cascade", "router+confidence"]
    s = result["summary"]
    assert s["router"]["apgr"]["mean"] == pytest.approx(0.5)
    # escalating the unconfident weak answers sends exactly the weak model's failures, the gainers, up
    assert s["cascade"]["apgr"]["mean"] == pytest.approx(s["oracle"]["apgr"]["mean"])
    assert s["router+confidence"]["apgr"]["mean"] == pytest.approx(s["oracle"]["apgr"]["mean"])
    assert "| cascade |" in markdown_table(result)
    plain, _ = _data()
    assert "cascade" not in cross_validate(plain, emb, fit_predict, folds=3, seeds=[0], weak=0, strong=1)["policies"]


def test_select_models():
    data, _ = _data(confidence=True)
    two = data.select_models(["strong", "weak"])
    assert two.models == ("strong", "weak") and np.array_equal(two.outcomes[:, 0], data.outcomes[:, 1])
    with pytest.raises(ConfigError, match="choose distinct models"):
        data.select_models(["weak", "other"])
