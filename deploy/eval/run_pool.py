"""Run a pool's real models on the shipped labelled set and write replay records with outcomes.

    python deploy/eval/run_pool.py --pool deploy/pools/cpu-default.yaml \\
        --out deploy/eval/cpu-default-outcomes.jsonl
    tiergate calibrate --train deploy/eval/cpu-default-outcomes.jsonl --out deploy/profiles/cpu-default.json

Each model runs through the gateway's own engine (``serve.engines``, directly, without Ray),
all models side by side, greedy, a few tokens per answer; each reply is scored by ``scorer.py``.
The records carry ``outcomes`` (the scores), ``confidence`` (mean token log-probability of
each reply, for the cascade threshold) and the ``replies`` themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scorer import score  # noqa: E402

from router.cascade import mean_logprob  # noqa: E402
from serve.config import load_pool  # noqa: E402
from serve.engines.base import GenerationRequest, Message, SamplingParams, parse_engine_args  # noqa: E402
from serve.engines.llama_cpp import LlamaCppEngine  # noqa: E402

ENGINES = {"llama_cpp": LlamaCppEngine}


async def run_model(model_cfg, items: list[dict], max_tokens: int) -> list[tuple[str, float | None]]:
    try:
        engine_cls = ENGINES[model_cfg.engine]
    except KeyError:
        raise SystemExit(f"engine {model_cfg.engine!r} not supported here; valid: {', '.join(ENGINES)}") from None
    engine = engine_cls(model_cfg, parse_engine_args(engine_cls, model_cfg.engine_args))
    await engine.start()
    out = []
    try:
        sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=True, seed=0)
        for i, item in enumerate(items):
            req = GenerationRequest(request_id=f"eval-{i}", sampling=sampling,
                                    messages=(Message("user", item["prompt"]),))
            text, lps = [], []
            async for chunk in engine.stream(req):
                text.append(chunk.text)
                lps.extend(lp.logprob for lp in chunk.logprobs)
            out.append(("".join(text), mean_logprob(lps)))
    finally:
        await engine.stop()
    return out


def rescore(items: list[dict], path: Path) -> int:
    """Rewrite ``path``'s outcomes from its stored replies; prompts no longer in the set are dropped."""
    by_prompt = {it["prompt"]: it for it in items}
    kept = []
    for line in path.read_text().split("\n"):
        if not line.strip():
            continue
        rec = json.loads(line)
        item = by_prompt.get(rec["prompt"])
        if item is None:
            continue
        rec["id"], rec["task"] = item["id"], item["task"]
        rec["outcomes"] = {n: score(item["kind"], item["answer"], reply) for n, reply in rec["replies"].items()}
        kept.append(rec)
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    for name in kept[0]["outcomes"] if kept else ():
        print(f"{name}: accuracy {sum(r['outcomes'][name] for r in kept) / len(kept):.3f} on {len(kept)} prompts")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--set", default=str(HERE / "cpu-labelled.jsonl"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts (0: all)")
    ap.add_argument("--rescore", action="store_true",
                    help="do not generate: rescore the replies already in --out with the current set and scorer")
    args = ap.parse_args(argv)
    items = [json.loads(line) for line in Path(args.set).read_text().split("\n") if line.strip()]
    if args.rescore:
        return rescore(items, Path(args.out))
    pool = load_pool(args.pool)
    if args.limit:
        items = items[: args.limit]
    t0 = time.perf_counter()

    async def all_models() -> list[list[tuple[str, float | None]]]:
        # the models run side by side, as in the pool (each engine has its own thread)
        return await asyncio.gather(*(run_model(m, items, args.max_tokens) for m in pool.models))

    results = dict(zip((m.name for m in pool.models), asyncio.run(all_models())))
    for name, res in results.items():
        acc = sum(score(it["kind"], it["answer"], r[0]) for it, r in zip(items, res)) / len(items)
        print(f"{name}: {len(items)} prompts, accuracy {acc:.3f}", flush=True)
    print(f"{time.perf_counter() - t0:.1f}s in all", flush=True)
    with open(args.out, "w") as fh:
        for i, item in enumerate(items):
            rec = {"id": item["id"], "task": item["task"], "prompt": item["prompt"],
                   "outcomes": {n: score(item["kind"], item["answer"], r[i][0]) for n, r in results.items()},
                   "confidence": {n: None if r[i][1] is None else round(r[i][1], 5) for n, r in results.items()},
                   "replies": {n: r[i][0] for n, r in results.items()}}
            fh.write(json.dumps(rec) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
