"""Decision time, embedding included: the shipped static encoder against plain sentence-transformers.

    python loadtests/bench_decision.py [--profile deploy/profiles/cpu-default.json]
        [--pool deploy/pools/cpu-default.yaml] [--prompts FILE ...] [-n 300]

For each prompt, one at a time as requests arrive, it times ``predictor.predict([prompt])``
plus ``router.policy.Router.decide`` and prints p50 / p99 in milliseconds, for

* ``static``: the profile's own predictor (model2vec table distilled from all-MiniLM-L6-v2);
* ``sentence-transformers``: a plain ``SentenceTransformer.encode`` call of the full
  all-MiniLM-L6-v2 per prompt (the slow path the issue measured at ~70 ms) plus the same
  decision. The profile's heads expect the static table's space, so this path decides on
  fixed qualities: it times the baseline's floor (encoder call + decision, no heads);

and the ratio between them, measured in the same run: the two paths alternate in blocks of
50 prompts with a pause between blocks (torch's OpenMP threads spin for a while after a
call and would otherwise be charged to the next path), so both see much the same load from
anything else running on the machine; the load average is printed too. The target is
p99 <= 15 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.latency import LatencyModel  # noqa: E402
from router.policy import Router  # noqa: E402
from router.types import Budget, LatencyPrior, ModelCard, Price, RouteRequest  # noqa: E402
from serve.quality_profile import load_quality  # noqa: E402
from loadtests.summary import percentile


def load_prompts(paths: list[str], n: int, seed: int) -> list[str]:
    prompts: list[str] = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").split("\n"):
            if line.strip():
                prompts.append(json.loads(line)["prompt"])
    random.Random(seed).shuffle(prompts)
    return prompts[:n]


def cards_for(models: tuple[str, ...], pool: str | None) -> list[ModelCard]:
    if pool:
        from serve.config import load_pool

        return list(load_pool(pool).cards())
    return [ModelCard(m, Price(0.1 * (i + 1), 0.3 * (i + 1)), 0.5, 32768, LatencyPrior(100, 20))
            for i, m in enumerate(models)]


def time_path(router: Router, predict, prompts: list[str]) -> list[float]:
    out = []
    for prompt in prompts:
        t0 = time.perf_counter()
        quality = predict(prompt)
        req = RouteRequest(prompt=prompt, prompt_tokens=max(1, len(prompt) // 4), max_tokens=64,
                           budget=Budget(min_quality=0.5))
        router.decide(req, {}, quality)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=str(ROOT / "deploy/profiles/cpu-default.json"))
    ap.add_argument("--pool", default=None, help="pool YAML whose cards to route over (default: synthetic)")
    shared = ROOT.parent / "shared/data/replay"
    default_prompts = [str(ROOT / "deploy/eval/cpu-labelled.jsonl")]
    default_prompts += [str(p) for p in (shared / "mmlu-dev.jsonl", shared / "gsm8k.jsonl") if p.exists()]
    ap.add_argument("--prompts", nargs="+", default=default_prompts)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the baseline")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    prompts = load_prompts(args.prompts, args.n, args.seed)
    loaded = load_quality(args.profile, load_quality_models(args.profile), warm=True)
    predictor = loaded.predictor
    router = Router(cards_for(predictor.models, args.pool), LatencyModel(cards_for(predictor.models, args.pool)))
    lengths = [len(p) for p in prompts]
    print(f"{len(prompts)} prompts, {statistics.median(lengths):.0f} chars median, {max(lengths)} max; "
          f"profile {args.profile} ({', '.join(predictor.models)}), encoder {predictor.encoder.name}")

    import torch
    from sentence_transformers import SentenceTransformer

    from serve.quality_profile import MINILM_PACKAGE, _minilm_dir

    torch.set_num_threads(args.threads)
    st = SentenceTransformer(str(_minilm_dir(MINILM_PACKAGE)), device="cpu")
    priors = {m: 0.5 for m in predictor.models}

    def st_predict(prompt: str) -> dict[str, float]:
        st.encode([prompt], show_progress_bar=False, convert_to_numpy=True)
        return priors

    for path in (predictor.predict_one, st_predict):  # warm both before timing
        time_path(router, path, prompts[:10])
    load_before = os.getloadavg()[0]
    fast: list[float] = []
    slow: list[float] = []
    for start in range(0, len(prompts), 50):
        block = prompts[start:start + 50]
        time.sleep(0.5)
        fast += time_path(router, predictor.predict_one, block)
        time.sleep(0.5)
        slow += time_path(router, st_predict, block)
    print(f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")

    rows = [("static (shipped)", fast), ("sentence-transformers", slow)]
    print(f"{'path':24s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s}")
    for name, values in rows:
        print(f"{name:24s} {percentile(values, 50):8.3f} {percentile(values, 99):8.3f} "
              f"{statistics.fmean(values):8.3f}")
    print(f"speed-up: p50 x{percentile(slow, 50) / percentile(fast, 50):.1f}, "
          f"p99 x{percentile(slow, 99) / percentile(fast, 99):.1f}; "
          f"target p99 <= 15 ms: {'met' if percentile(fast, 99) <= 15 else 'NOT met'}")
    return 0


def load_quality_models(profile: str) -> tuple[str, ...]:
    """The profile's own model names (the bench checks the predictor, not a pool match)."""
    from serve.quality_profile import read_profile

    return read_profile(profile).models


if __name__ == "__main__":
    sys.exit(main())
