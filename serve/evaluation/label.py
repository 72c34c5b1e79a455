"""``tiergate label``: run a pool's real models on labelled sets and write scored replay records.

    tiergate label --pool deploy/pools/cpu-default.yaml --set ../shared/data/labelled/mmlu-dev.jsonl \\
        --per-task 38 --out deploy/eval/mmlu-outcomes.jsonl

Each model runs in this process through the gateway's own engine (no Ray, no HTTP), greedy, the
models side by side. Each prompt is sent as a product would send it: one user message, the set's
prompt plus, where the set needs one, a short-answer instruction (:func:`product_prompt`). Each
reply is scored against gold (:mod:`serve.evaluation.scorer`). A record is the replay format plus,
per model, ``confidence`` (mean token log-probability), ``first_logprob`` (of the first token),
``tokens`` (completion tokens), ``seconds`` (wall time of the generation) and ``replies``.
Results are appended to ``OUT.<model>.partial`` as they come, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from router.cascade import mean_logprob
from serve.config import ModelConfig, PoolConfig, load_pool
from serve.engines import GenerationRequest, Message, SamplingParams, build_engine
from serve.evaluation.labelled import read_jsonl, read_labelled, sample_per_task
from serve.evaluation.scorer import product_prompt, score_item, scoring_kind

# Enough tokens for each kind's answer: a letter, a word or a sentence; GSM8K's worked solution (asked for
# only-the-number, these models reason anyway: cut at 16 tokens, all 64 replies of a first run scored 0).
MAX_TOKENS = {"choice": 8, "gsm8k": 320, "number": 12, "word": 12, "yesno": 12}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="run the pool's models on labelled sets; write scored replay records",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", required=True)
    p.add_argument("--set", action="append", required=True,
                   help="labelled JSONL file, optionally FILE:N for at most N prompts per task (repeatable)")
    p.add_argument("--out", required=True)
    p.add_argument("--per-task", type=int, default=0, help="at most N prompts per task, seeded (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default="", help="comma-separated subset of the pool's models")
    p.add_argument("--ids", default="", help="a file of prompt ids, one per line: label only these prompts of the "
                   "sets (e.g. the ids of committed records, to reproduce or extend them)")
    p.add_argument("--collect", action="store_true",
                   help="generate nothing: write the records of the prompts every model has answered so far "
                        "(from the .partial files of an interrupted or running run)")
    p.set_defaults(func=run)


async def label_model(model: ModelConfig, items: list[dict[str, Any]], partial: Path) -> dict[str, dict[str, Any]]:
    """Generate and score every item not yet in ``partial``; returns id -> result."""
    done = {r["id"]: r for r in read_jsonl(partial)} if partial.exists() else {}
    todo = [it for it in items if it["id"] not in done]
    if not todo:
        return done
    engine = build_engine(model)
    await engine.start()
    t_start = time.perf_counter()
    try:
        with partial.open("a") as fh:
            for n, item in enumerate(todo, start=1):
                sampling = SamplingParams(max_tokens=MAX_TOKENS[scoring_kind(item)], temperature=0.0, seed=0,
                                          logprobs=True, top_logprobs=5)
                req = GenerationRequest(request_id=item["id"], sampling=sampling,
                                        messages=(Message("user", product_prompt(item)),))
                text, lps, tokens = [], [], 0
                t0 = time.perf_counter()
                async for chunk in engine.stream(req):
                    text.append(chunk.text)
                    lps.extend(chunk.logprobs)
                    tokens = chunk.completion_tokens
                reply = "".join(text)
                mean = mean_logprob([lp.logprob for lp in lps])
                result = {"id": item["id"], "outcome": score_item(item, reply), "reply": reply,
                          "confidence": None if mean is None else round(mean, 5),
                          "first_logprob": round(lps[0].logprob, 5) if lps else None,
                          "first_top": [[t, round(lp, 4)] for t, lp in lps[0].top] if lps else [],
                          "tokens": tokens, "seconds": round(time.perf_counter() - t0, 4)}
                fh.write(json.dumps(result) + "\n")
                fh.flush()
                done[item["id"]] = result
                if n % 50 == 0 or n == len(todo):
                    rate = n / (time.perf_counter() - t_start)
                    print(f"{model.name}: {n}/{len(todo)} ({rate:.2f} prompts/s)", file=sys.stderr, flush=True)
    finally:
        await engine.stop()
    return done


def load_sets(specs: list[str], per_task: int, seed: int, shuffle: bool = False) -> list[dict[str, Any]]:
    """Items of each ``FILE`` or ``FILE:N`` (N overrides ``per_task`` for that file), seeded samples.
    With ``shuffle`` each file's items come in a seeded random order (files stay in the order given), so
    a run stopped early has labelled a fair sample of every task of the files it reached."""
    items: list[dict[str, Any]] = []
    for spec in specs:
        path, _, n = spec.rpartition(":") if spec.rpartition(":")[2].isdigit() else (spec, "", "")
        chosen = sample_per_task(read_labelled(path), int(n) if n else per_task, seed)
        if shuffle:
            random.Random(seed).shuffle(chosen)
        items.extend(chosen)
    return items


def records(items: list[dict[str, Any]], results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        per = {name: res[item["id"]] for name, res in results.items()}
        out.append({
            "id": item["id"], "task": item["task"], "prompt": item["prompt"], "kind": scoring_kind(item),
            "outcomes": {n: r["outcome"] for n, r in per.items()},
            "confidence": {n: r["confidence"] for n, r in per.items()},
            "first_logprob": {n: r["first_logprob"] for n, r in per.items()},
            "tokens": {n: r["tokens"] for n, r in per.items()},
            "seconds": {n: r["seconds"] for n, r in per.items()},
            "replies": {n: r["reply"] for n, r in per.items()},
        })
    return out


def only_ids(items: list[dict[str, Any]], path: Path) -> list[dict[str, Any]] | None:
    """The items whose ids ``path`` lists; None, said on stderr, when an id is in none of the sets."""
    wanted = {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    missing = wanted - {it["id"] for it in items}
    if missing:
        print(f"{len(missing)} id(s) of {path} are in none of the sets, e.g. {sorted(missing)[:3]}", file=sys.stderr)
        return None
    return [it for it in items if it["id"] in wanted]


def chosen_models(pool: PoolConfig, spec: str | None) -> list[ModelConfig] | None:
    """The pool's models named in ``--models`` (all without it); None, said on stderr, for an unknown name."""
    models = list(pool.models)
    if not spec:
        return models
    wanted = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = sorted(set(wanted) - {m.name for m in models})
    if unknown:
        print(f"unknown models {unknown}; the pool has {[m.name for m in models]}", file=sys.stderr)
        return None
    return [m for m in models if m.name in wanted]


def run(args: argparse.Namespace) -> int:
    pool = load_pool(args.pool)
    models = chosen_models(pool, args.models)
    if models is None:
        return 2
    items = load_sets(args.set, args.per_task, args.seed, shuffle=True)
    if args.ids:
        items = only_ids(items, Path(args.ids))
        if items is None:
            return 2
    out = Path(args.out)
    print(f"labelling {len(items)} prompts with {', '.join(m.name for m in models)}", file=sys.stderr, flush=True)

    async def all_models() -> list[dict[str, dict[str, Any]]]:
        return await asyncio.gather(*(label_model(m, items, Path(f"{out}.{m.name}.partial")) for m in models))

    if args.collect:
        results = {m.name: {r["id"]: r for r in read_jsonl(Path(f"{out}.{m.name}.partial"))} for m in models}
        items = [it for it in items if all(it["id"] in res for res in results.values())]
    else:
        results = dict(zip((m.name for m in models), asyncio.run(all_models())))
    recs = records(items, results)
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    for name in results:
        acc = sum(r["outcomes"][name] for r in recs) / max(1, len(recs))
        print(f"{name}: accuracy {acc:.3f} on {len(recs)} prompts", flush=True)
    print(f"wrote {out}")
    return 0
