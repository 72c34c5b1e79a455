"""Loading quality profiles from disk with the real shipped encoder, and every way it can fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from router.errors import ProfileError
from router.quality.features import feature_matrix
from router.quality.profile import QualityProfile
from router.quality.train import fit_quality
from serve.config import load_pool
from serve.quality_profile import (
    SHIPPED_ENCODER,
    build_encoder,
    encoder_spec,
    load_quality,
    read_profile,
    write_profile,
)

ROOT = Path(__file__).resolve().parents[2]
CPU_POOL = ROOT / "deploy/pools/cpu-default.yaml"
CPU_PROFILE = ROOT / "deploy/profiles/cpu-default.json"
MODELS = ("small", "large")


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory) -> Path:
    """A small profile fitted on the real shipped encoder, written to a temporary directory."""
    out = tmp_path_factory.mktemp("profiles") / "p.json"
    spec = encoder_spec("static", SHIPPED_ENCODER, out.parent, 128, 2000)
    enc = build_encoder(spec, out.parent)
    prompts = [f"What is {a} plus {a + 3}?" for a in range(30)] + [f"Name the capital of country {a}." for a in range(30)]
    outcomes = np.array([[0.0, 1.0]] * 30 + [[1.0, 1.0]] * 30)
    params, report = fit_quality(enc.encode(prompts), feature_matrix(prompts), outcomes, MODELS,
                                 ["maths"] * 30 + ["capitals"] * 30, encoder_name=spec.name, folds=2)
    write_profile(QualityProfile(encoder=spec, params=params, report=report.to_dict()), out)
    return out


def _rewrite(src: Path, dst: Path, **changes) -> Path:
    data = json.loads(src.read_text())
    data.update(changes)
    dst.write_text(json.dumps(data))
    return dst


def test_load_and_predict_with_the_real_encoder(profile_file):
    loaded = load_quality(profile_file, ["large", "small"])
    assert loaded.predictor.models == MODELS
    maths, capital = loaded.predictor.predict(["What is 7 plus 10?", "Name the capital of country 99."])
    assert maths["small"] < 0.5 < capital["small"]  # learned from the prompts' meaning
    assert loaded.cascade_thresholds == {}


def test_missing_profile(tmp_path):
    with pytest.raises(ProfileError, match="does not exist.*tiergate calibrate"):
        load_quality(tmp_path / "nope.json", MODELS)


def test_corrupt_profile(tmp_path, profile_file):
    bad = tmp_path / "bad.json"
    bad.write_text(profile_file.read_text()[:200])
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_quality(bad, MODELS)
    mangled = json.loads(profile_file.read_text())
    mangled["memory"]["embeddings_int8"] = "!!!"
    bad.write_text(json.dumps(mangled))
    with pytest.raises(ProfileError, match="corrupt"):
        load_quality(bad, MODELS)


def test_wrong_version(tmp_path, profile_file):
    with pytest.raises(ProfileError, match="version 0.*recalibrate"):
        load_quality(_rewrite(profile_file, tmp_path / "v0.json", version=0), MODELS)


def test_model_names_must_match_the_pool(profile_file):
    with pytest.raises(ProfileError, match="no prediction for pool model\\(s\\) medium"):
        load_quality(profile_file, ["small", "large", "medium"])
    with pytest.raises(ProfileError, match="large not in the pool"):
        load_quality(profile_file, ["small"])


def test_changed_encoder_weights_are_refused(tmp_path, profile_file):
    copy = tmp_path / "enc"
    shutil.copytree(SHIPPED_ENCODER, copy)
    weights = copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    data = json.loads(profile_file.read_text())
    data["encoder"]["ref"] = str(copy)
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="differ from those the profile was calibrated with"):
        load_quality(moved, MODELS)
    data["encoder"]["ref"] = str(tmp_path / "gone")
    moved.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="not found"):
        load_quality(moved, MODELS)


def test_unknown_encoder_kind(tmp_path, profile_file):
    data = json.loads(profile_file.read_text())
    data["encoder"]["kind"] = "word2vec"
    path = tmp_path / "k.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="unknown encoder kind 'word2vec'; valid kinds"):
        load_quality(path, MODELS)


def test_the_shipped_cpu_profile_matches_the_cpu_pool():
    pool = load_pool(CPU_POOL)
    loaded = load_quality(CPU_PROFILE, [m.name for m in pool.models])
    profile = read_profile(CPU_PROFILE)
    assert set(profile.models) == {m.name for m in pool.models}
    assert profile.report["n_prompts"] >= 100
    assert CPU_PROFILE.stat().st_size < 3_000_000
    # measured on the shipped labelled set (0.44 / 0.80 / 0.93 correct): the ladder's order holds on
    # average over the set's prompts, as predicted by the profile
    items = [json.loads(line) for line in (ROOT / "deploy/eval/cpu-labelled.jsonl").read_text().split("\n") if line]
    preds = loaded.predictor.predict([it["prompt"] for it in items])
    mean = {m.name: sum(p[m.name] for p in preds) / len(preds) for m in pool.models}
    assert mean["smollm2-135m-instruct"] < mean["qwen2.5-coder-0.5b-instruct"] < mean["qwen2.5-coder-1.5b-instruct"]
    top = pool.models[-1].name  # nothing is above the best model: its threshold is never used to escalate
    for c in profile.cascade:
        assert c.model in profile.models and 0 <= c.escalation_rate <= 1, c
        # a threshold no log-probability can reach is one that escalates every answer (no answer set of
        # that model reaches the target): the cascade then goes straight up (router.cascade.attempt_pays)
        assert c.threshold < 0 or c.escalation_rate == 1, c
        if c.model != top:
            assert c.escalation_rate > 0, c
    assert {c.model for c in profile.cascade} == set(profile.models)
