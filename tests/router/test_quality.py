"""The learned quality predictor: encoders, features, fitting, calibration, profiles, kNN."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import ConfigError, ProfileError
from router.quality.dataset import concat, holdout_tasks, parse_records
from router.quality.encoders import FakeEncoder, LazyEncoder
from router.quality.features import FEATURE_NAMES, feature_matrix, prompt_features
from router.quality.knn import knn_quality
from router.quality.learned import LearnedQuality
from router.quality.profile import EncoderSpec, QualityProfile, profile_from_dict
from router.quality.train import fit_quality
from router.replay import expected_calibration_error, strong_share_curve, two_model_report


def test_fake_encoder_is_deterministic_and_normalised():
    enc = FakeEncoder(dim=16)
    a = enc.encode(["the cat sat", "", "the cat sat"])
    assert a.shape == (3, 16)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert np.array_equal(a[0], a[2])


def test_lazy_encoder_loads_once_on_first_use_and_truncates():
    calls: list[list[str]] = []
    loads = []

    def load():
        loads.append(1)

        def fn(texts):
            calls.append(list(texts))
            return np.ones((len(texts), 4)) * np.arange(1, 5)

        return fn

    enc = LazyEncoder("test", 4, load, max_chars=3)
    assert not enc.loaded and not loads
    out = enc.encode(["abcdef", "xy"])
    enc.encode(["z"])
    assert loads == [1] and calls == [["abc", "xy"], ["z"]]
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    assert enc.encode([]).shape == (0, 4)


def test_lazy_encoder_rejects_a_wrong_shape():
    enc = LazyEncoder("bad", 4, lambda: (lambda texts: np.ones((len(texts), 3))))
    with pytest.raises(ValueError, match="shape"):
        enc.encode(["a"])


def test_features_read_task_hints_from_the_text():
    mc = prompt_features("Which is right?\nA. one\nB. two\nC. three\nAnswer:")
    plain = prompt_features("Tell me a story about a dragon")
    names = dict(zip(FEATURE_NAMES, range(len(FEATURE_NAMES))))
    assert mc[names["multiple_choice"]] == 1.0 and plain[names["multiple_choice"]] == 0.0
    assert mc[names["question"]] == 1.0 and plain[names["question"]] == 0.0
    maths = prompt_features("What is 17 * 23 + 4 = ?")
    assert maths[names["digit_share"]] > 0 and maths[names["math_symbol_share"]] > 0
    assert feature_matrix([]).shape == (0, len(FEATURE_NAMES))


def _synthetic(n: int, seed: int):
    """Prompts whose topic word sets the true P(acceptable) of two models."""
    rng = np.random.default_rng(seed)
    topics = {"poem": (0.9, 0.95), "algebra": (0.2, 0.8), "history": (0.6, 0.7), "chess": (0.1, 0.2)}
    names = list(topics)
    prompts, tasks, truth = [], [], []
    for i in range(n):
        t = names[i % len(names)]
        filler = " ".join(rng.choice(["please", "now", "kindly", "quick", "a", "the"], size=3))
        prompts.append(f"{filler} {t} question {i % 7}")
        tasks.append(t)
        truth.append(topics[t])
    truth = np.array(truth)
    outcomes = (rng.random(truth.shape) < truth).astype(float)
    return prompts, np.array(tasks), truth, outcomes


def _fit(prompts, tasks, outcomes, enc):
    return fit_quality(enc.encode(prompts), feature_matrix(prompts), outcomes, ("weak", "strong"), tasks,
                       encoder_name=enc.name, folds=2)


def test_fit_learns_per_model_quality_and_is_calibrated():
    enc = FakeEncoder(dim=32)
    prompts, tasks, truth, outcomes = _synthetic(1200, seed=1)
    # fold by prompt (not task): every topic is seen in training, as in a live pool
    params, report = _fit(prompts, np.arange(len(prompts)).astype(str), outcomes, enc)
    assert params.models == ("weak", "strong")
    test_prompts, _, test_truth, test_outcomes = _synthetic(800, seed=2)
    pred = LearnedQuality(params, enc).predict_matrix(test_prompts)
    assert np.abs(pred - test_truth).mean() < 0.08  # recovers the per-topic rates
    for j, name in enumerate(params.models):
        assert expected_calibration_error(pred[:, j], test_outcomes[:, j]) < 0.06
        assert 0.0 <= report.ece[name] < 0.06
    # ranking by predicted gain beats random on the replay metric
    rep = two_model_report(strong_share_curve(pred[:, 1] - pred[:, 0], test_outcomes[:, 0], test_outcomes[:, 1]))
    assert rep.apgr > 0.7


def test_predict_returns_one_mapping_per_prompt():
    enc = FakeEncoder(dim=8)
    prompts, tasks, _, outcomes = _synthetic(80, seed=3)
    params, _ = _fit(prompts, tasks, outcomes, enc)
    out = LearnedQuality(params, enc).predict(["poem please", "chess now"])
    assert len(out) == 2 and set(out[0]) == {"weak", "strong"}
    assert all(0.0 <= v <= 1.0 for row in out for v in row.values())


def test_a_model_that_never_succeeds_gets_a_constant_low_head():
    enc = FakeEncoder(dim=8)
    prompts, tasks, _, outcomes = _synthetic(80, seed=4)
    outcomes[:, 0] = 0.0
    params, _ = _fit(prompts, tasks, outcomes, enc)
    pred = LearnedQuality(params, enc).predict_matrix(prompts[:5])
    assert np.all(pred[:, 0] < 0.05)


def test_encoder_dimension_must_match_the_profile():
    enc = FakeEncoder(dim=8)
    prompts, tasks, _, outcomes = _synthetic(40, seed=5)
    params, _ = _fit(prompts, tasks, outcomes, enc)
    with pytest.raises(ValueError, match="dims"):
        LearnedQuality(params, FakeEncoder(dim=16))


def _profile(enc: FakeEncoder) -> QualityProfile:
    prompts, tasks, _, outcomes = _synthetic(60, seed=6)
    params, report = _fit(prompts, tasks, outcomes, enc)
    return QualityProfile(encoder=EncoderSpec("fake", "hash", enc.dim), params=params, report=report.to_dict())


def test_profile_round_trip_predicts_the_same():
    enc = FakeEncoder(dim=8)
    profile = _profile(enc)
    again = profile_from_dict(profile.to_dict())
    a = LearnedQuality(profile.params, enc).predict_matrix(["poem please"])
    b = LearnedQuality(again.params, enc).predict_matrix(["poem please"])
    assert np.allclose(a, b, atol=1e-5)
    assert again.models == ("weak", "strong") and again.encoder.dim == 8


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d.update(format="something"), "not a tiergate quality profile"),
    (lambda d: d.pop("heads"), "missing field 'heads'"),
    (lambda d: d["heads"][0].update(out_weights=[1.0]), "corrupt"),
    (lambda d: d.update(models=["weak", "other"]), "lists models"),
    (lambda d: d.update(heads=[]), "no model heads"),
])
def test_bad_profiles_are_profile_errors(mutate, message):
    data = _profile(FakeEncoder(dim=8)).to_dict()
    mutate(data)
    with pytest.raises(ProfileError, match=message):
        profile_from_dict(data, "test.json")


def test_knn_quality_by_hand():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    y = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = knn_quality(train, y, q, k=2)
    assert np.allclose(out, [[0.5, 0.0], [0.5, 0.5]])
    assert np.allclose(knn_quality(train, y, q, k=40), y.mean(axis=0))  # k capped at the set size


def test_parse_records_and_holdout():
    recs = [(f"f:{i}", {"id": str(i), "task": f"t{i % 3}", "prompt": f"p{i}",
                        "outcomes": {"a": 1.0, "b": 0.5}}) for i in range(6)]
    data = parse_records(recs)
    assert data.models == ("a", "b") and data.outcomes.shape == (6, 2)
    assert np.isnan(data.confidence).all()
    both = concat([data, data.reorder_models(("b", "a"))])
    assert both.models == ("a", "b") and np.allclose(both.outcomes[6:], data.outcomes)
    held = holdout_tasks(data.tasks, 0.34, seed=0)
    assert len(held) == 1 and held == holdout_tasks(data.tasks, 0.34, seed=0)
    with pytest.raises(ConfigError, match="f:1"):
        parse_records([("f:0", {"prompt": "x", "outcomes": {"a": 1}}), ("f:1", {"prompt": "y", "outcomes": {"b": 1}})])
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        parse_records([("f:0", {"prompt": "x", "outcomes": {"a": 2}})])
