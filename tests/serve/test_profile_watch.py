"""A running gateway's quality profile is replaced without a restart.

In this process: the watcher loads a profile that ``tiergate calibrate --refresh`` rewrote from
live outcomes and keeps the old one when the file is broken. Through Ray Serve with the real
ladder (test_live_refresh_e2e below): shadow comparisons are recorded as outcomes, refreshed
into the watched profile, and the next request is routed on it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from serve.profile_watch import ProfileWatcher
from tests.conftest import CPU_POOL, ROOT

SHIPPED = ROOT / "deploy" / "profiles" / "cpu-default.json"
MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
PROMPT = "What is the capital of France?"


def calibrate(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", "from serve.cli import main; raise SystemExit(main())", "calibrate",
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def outcomes(path: Path, model: str, n: int, predicted: float, agree_every: int) -> None:
    with path.open("a") as f:
        for i in range(n):
            f.write(json.dumps({"source": "shadow", "model": model, "reference_model": MODELS[2],
                                "route_class": "default", "quality_class": None, "predicted_quality": predicted,
                                "outcome": 1 if i % agree_every == 0 else 0, "similarity": 0.5}) + "\n")


def copy_of_shipped(folder: Path) -> Path:
    """The shipped profile, rewritten into ``folder`` (its encoder path rebased) by a no-op refresh."""
    empty = folder / "none.jsonl"
    empty.write_text("")
    out = folder / "profile.json"
    calibrate("--refresh", str(SHIPPED), "--live", str(empty), "--out", str(out))
    return out


async def test_a_refreshed_profile_is_picked_up_and_a_broken_one_is_not(tmp_path):
    profile = copy_of_shipped(tmp_path)
    applied = []
    watcher = ProfileWatcher(profile, MODELS, applied.append, interval_s=0.05)
    assert not await watcher.check() and not applied
    old_sha = watcher.sha256

    live = tmp_path / "outcomes.jsonl"
    outcomes(live, MODELS[0], 60, predicted=0.6, agree_every=10)  # smollm2 agrees with the strong model 10%
    result = calibrate("--refresh", str(profile), "--live", str(live), "--out", str(profile), "--min-outcomes", "30")
    fit = result["models"][MODELS[0]]
    assert fit["refitted"] and fit["predicted_after"] < fit["predicted_before"] - 0.2
    assert not result["models"][MODELS[1]]["refitted"]  # no outcomes of its own: left as it was

    assert await watcher.check()
    (new,) = applied
    before = json.loads(SHIPPED.read_text())
    assert watcher.sha256 != old_sha and watcher.reloads == 1
    smol_before = next(h for h in before["heads"] if h["model"] == MODELS[0])
    assert new.predictor.predict([PROMPT])[0][MODELS[0]] < 0.9 * _shipped_prediction(smol_before["model"])

    profile.write_text(profile.read_text()[:100])  # a half-written copy, not through calibrate
    assert not await watcher.check()
    assert watcher.failures == 1 and "not valid JSON" in watcher.last_error and len(applied) == 1


def _shipped_prediction(model: str) -> float:
    from serve.quality_profile import load_quality

    return load_quality(SHIPPED, MODELS).predictor.predict([PROMPT])[0][model]


# --------------------------------------------------------------------------- through Ray Serve
@pytest.fixture(scope="module")
def live_app(serve_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    profile = copy_of_shipped(folder)
    pool = yaml.safe_load(CPU_POOL.read_text())
    pool.update(name="live", quality_profile=str(profile), quality_profile_reload_s=0.5)
    pool["auth"] = {"enabled": False}
    sampler = {"rate": 1.0, "max_per_minute": 600, "burst": 50, "max_cost_usd_per_hour": None, "max_in_flight": 16}
    pool["monitoring"] = {"brittleness": {"shadow": sampler, "probe": {"rate": 0.0}},
                          "outcomes": {"path": str(folder / "outcomes.jsonl")}}
    gw = serve_cluster.deploy("live", {"pool_config": pool, "pool_dir": str(CPU_POOL.parent)}, "/live", timeout=600)
    yield gw, profile, folder / "outcomes.jsonl"
    from ray import serve

    serve.delete("live")


@pytest.mark.e2e
async def test_live_outcomes_refresh_the_profile_of_a_running_gateway(live_app):
    gw, profile, live = live_app
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4,
            "routing": {"min_quality": 0.05}}  # the cheapest model answers; the 1.5B shadows it
    async with httpx.AsyncClient(timeout=300) as client:
        def recorded() -> list[dict]:
            return [json.loads(x) for x in live.read_text().split("\n") if x.strip()] if live.exists() else []

        first = await client.post(f"{gw.api}/chat/completions", json=body)
        assert first.status_code == 200 and first.headers["x-tiergate-model"] == MODELS[0]
        # one at a time: a shadow check runs only while the 1.5B model has a free slot (never queued in
        # front of callers), so each answer waits for the previous answer's check to be recorded
        deadline = time.monotonic() + 240
        for n in range(1, 11):
            while len(recorded()) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert (await client.post(f"{gw.api}/chat/completions", json=body)).status_code == 200
        while len(recorded()) < 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        lines = recorded()
        assert len(lines) >= 10, f"only {len(lines)} live outcomes recorded"
        assert all(x["model"] == MODELS[0] and "prompt" not in x for x in lines)  # no prompt text by default

        sha_before = (await client.get(f"{gw.base_url}/health")).json()["quality_profile"]["sha256"]
        result = calibrate("--refresh", str(profile), "--live", str(live), "--out", str(profile), "--min-outcomes", "10")
        assert result["models"][MODELS[0]]["refitted"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = (await client.get(f"{gw.base_url}/health")).json()["quality_profile"]
            if info["sha256"] != sha_before:
                break
            await asyncio.sleep(0.5)
        assert info["sha256"] != sha_before and info["reloads"] == 1, info
        after = await client.post(f"{gw.api}/chat/completions", json=body)

    from serve.quality_profile import load_quality

    expected = load_quality(profile, MODELS).predictor.predict([PROMPT])[0][MODELS[0]]
    assert float(after.headers["x-tiergate-predicted-quality"]) == pytest.approx(expected, abs=1e-3)
    assert float(after.headers["x-tiergate-predicted-quality"]) != pytest.approx(
        float(first.headers["x-tiergate-predicted-quality"]), abs=1e-3)
