"""``tiergate label-calls``: run a pool's real models on the labelled tool-call and extraction set,
score their answers against gold, write the records, the figures and (optionally) the profile's
class accuracies.

    tiergate label-calls --pool deploy/pools/cpu-default.yaml --set deploy/eval/calls-labelled.jsonl \\
        --out deploy/eval/calls-outcomes.jsonl --markdown deploy/eval/calls-figures.md \\
        --profile deploy/profiles/cpu-default.json

Each item is sent as a product sends it (:func:`~serve.evaluation.calls.request_body`: one user
message with the item's ``tools`` or ``response_format``, greedy), validated by the gateway's own
request schema and turned into an engine request by the gateway's own code, then generated in this
process by the model's engine (no Ray, no HTTP). A model without the capability an item's class
needs (``tools`` for tool calls, ``json_schema`` for extraction) is not asked; its figure for that
class is ``n/a``. Results are appended to ``OUT.<model>.partial`` as they come, so a stopped run
resumes; ``--rescore`` scores the answers recorded in ``OUT`` again, after a correction of the set's
gold. ``--profile`` stores each class's correct rate per model in that quality profile's ``classes``,
which the gateway then predicts for every request of the class.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from router.errors import TiergateError
from router.quality.profile import ClassAccuracy
from serve.api.generation import generation_request
from serve.api.schemas import ChatCompletionRequest
from serve.config import ModelConfig, load_pool
from serve.engines import build_engine
from serve.evaluation.calls import CLASS_OF, KINDS, request_body, score_answer
from serve.evaluation.label import chosen_models
from serve.evaluation.labelled import read_jsonl, read_labelled
from serve.quality_profile import read_profile, write_profile

MAX_TOKENS = 128  # a call or an object of a few fields is under 60 tokens; room for a preamble in "auto"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label-calls", help="score the pool's models on labelled tool-call and extraction prompts",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", required=True)
    p.add_argument("--set", required=True, help="labelled JSONL of tool_call and extraction items")
    p.add_argument("--out", required=True, help="scored records (JSONL)")
    p.add_argument("--models", default="", help="comma-separated subset of the pool's models")
    p.add_argument("--markdown", default="", help="write the figures table here")
    p.add_argument("--profile", default="", help="store the class accuracies in this quality profile")
    p.add_argument("--rescore", action="store_true",
                   help="generate nothing: score the answers recorded in --out again against the set's current "
                        "gold (after a correction of the set), and rewrite it")
    p.set_defaults(func=run)


def capable(model: ModelConfig, item: dict[str, Any]) -> bool:
    return CLASS_OF[item["kind"]] in model.capabilities


async def answer(engine: Any, model: str, item: dict[str, Any]) -> dict[str, Any]:
    """One item through the gateway's request path and ``engine``; the scored result."""
    req = ChatCompletionRequest.model_validate(request_body(item, model, MAX_TOKENS))
    content: list[str] = []
    calls: list[dict[str, str]] = []
    finish, tokens = None, 0
    t0 = time.perf_counter()
    try:
        async for chunk in engine.stream(generation_request(req, MAX_TOKENS)):
            content.append(chunk.text)
            calls.extend({"name": c.name, "arguments": c.arguments} for c in chunk.tool_calls)
            finish = chunk.finish_reason or finish
            tokens = chunk.completion_tokens or tokens
    except TiergateError as err:  # the engine refused the request: no answer, so not valid
        finish = f"error: {err.message}"
    text = "".join(content)
    score = score_answer(item, text, calls)
    return {"id": item["id"], "outcome": score.outcome, "valid": score.valid, "why": score.why,
            "content": text, "tool_calls": calls, "finish_reason": finish, "tokens": tokens,
            "seconds": round(time.perf_counter() - t0, 3)}


async def label_model(model: ModelConfig, items: list[dict[str, Any]], partial: Path,
                      loading: asyncio.Lock | None = None) -> dict[str, dict[str, Any]]:
    """Answer and score every item the model can serve that is not yet in ``partial``. Models that
    run side by side load and unload one at a time under ``loading``: llama.cpp silences its loader
    by pointing the process's stdout and stderr elsewhere and back, and two loads at once left them
    pointing at /dev/null."""
    loading = loading or asyncio.Lock()
    done = {r["id"]: r for r in read_jsonl(partial)} if partial.exists() else {}
    todo = [it for it in items if it["id"] not in done and capable(model, it)]
    if not todo:
        return done
    engine = build_engine(model)
    async with loading:
        await engine.start()
    try:
        with partial.open("a") as fh:
            for n, item in enumerate(todo, start=1):
                result = await answer(engine, model.name, item)
                fh.write(json.dumps(result) + "\n")
                fh.flush()
                done[item["id"]] = result
                if n % 10 == 0 or n == len(todo):
                    print(f"{model.name}: {n}/{len(todo)}", file=sys.stderr, flush=True)
    finally:
        async with loading:
            await engine.stop()
    return done


def rescore(items: list[dict[str, Any]], recs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The answers in earlier records, scored again against ``items``' gold: model -> id -> result."""
    by_id = {it["id"]: it for it in items}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in recs:
        for model, ans in rec["answers"].items():
            if rec["id"] not in by_id:
                continue
            score = score_answer(by_id[rec["id"]], ans["content"] or "", ans["tool_calls"])
            out.setdefault(model, {})[rec["id"]] = {
                "id": rec["id"], "outcome": score.outcome, "valid": score.valid, "why": score.why, **ans,
                "tokens": rec["tokens"][model], "seconds": rec["seconds"][model]}
    return out


def records(items: list[dict[str, Any]], results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One record per item: each asked model's outcome (1/0), validity, reason and answer."""
    out = []
    for item in items:
        per = {name: res[item["id"]] for name, res in results.items() if item["id"] in res}
        out.append({
            "id": item["id"], "task": item["task"], "kind": item["kind"], "class": CLASS_OF[item["kind"]],
            "outcomes": {n: r["outcome"] for n, r in per.items()},
            "valid": {n: r["valid"] for n, r in per.items()},
            "why": {n: r["why"] for n, r in per.items() if r["why"]},
            "answers": {n: {k: r[k] for k in ("content", "tool_calls", "finish_reason")} for n, r in per.items()},
            "tokens": {n: r["tokens"] for n, r in per.items()},
            "seconds": {n: r["seconds"] for n, r in per.items()},
        })
    return out


def figures(recs: list[dict[str, Any]], models: list[str]) -> dict[str, dict[str, dict[str, float] | None]]:
    """Per class, per model: prompts answered, valid rate and correct rate (None: not asked)."""
    out: dict[str, dict[str, dict[str, float] | None]] = {}
    for cls in dict.fromkeys(CLASS_OF[k] for k in KINDS):
        rows = [r for r in recs if r["class"] == cls]
        out[cls] = {}
        for m in models:
            asked = [r for r in rows if m in r["outcomes"]]
            out[cls][m] = None if not asked else {
                "n": len(asked), "valid": round(sum(r["valid"][m] for r in asked) / len(asked), 4),
                "correct": round(sum(r["outcomes"][m] for r in asked) / len(asked), 4)}
    return out


def markdown(figs: dict[str, dict[str, dict[str, float] | None]]) -> str:
    lines = ["| model | class | prompts | valid | correct |", "|---|---|---|---|---|"]
    for cls, per in figs.items():
        for m, f in per.items():
            if f is None:
                lines.append(f"| {m} | {cls} | n/a (no {cls} capability) | | |")
            else:
                lines.append(f"| {m} | {cls} | {f['n']:g} | {f['valid']:.3f} | {f['correct']:.3f} |")
    return "\n".join(lines) + "\n"


def class_accuracies(figs: dict[str, dict[str, dict[str, float] | None]], source: str) -> tuple[ClassAccuracy, ...]:
    out = []
    for cls, per in figs.items():
        measured = {m: f for m, f in per.items() if f is not None}
        if measured:
            out.append(ClassAccuracy(name=cls, accuracy={m: f["correct"] for m, f in measured.items()},
                                     n=int(min(f["n"] for f in measured.values())), source=source))
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    pool = load_pool(args.pool)
    models = chosen_models(pool, args.models)
    if models is None:
        return 2
    items = read_labelled(args.set)
    bad = sorted({it["kind"] for it in items} - set(KINDS))
    if bad:
        print(f"{args.set}: kinds {bad} are not scored here; valid kinds: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    verb = "rescoring" if args.rescore else "labelling"
    print(f"{verb} {len(items)} prompts with {', '.join(m.name for m in models)}", file=sys.stderr, flush=True)

    async def all_models() -> list[dict[str, dict[str, Any]]]:
        loading = asyncio.Lock()
        return await asyncio.gather(*(label_model(m, items, Path(f"{out}.{m.name}.partial"), loading)
                                      for m in models))

    if args.rescore:
        stored = rescore(items, read_jsonl(out))
        results = {m.name: stored.get(m.name, {}) for m in models}
    else:
        results = dict(zip((m.name for m in models), asyncio.run(all_models())))
    recs = records(items, results)
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    figs = figures(recs, [m.name for m in models])
    table = markdown(figs)
    print(table, end="")
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.profile:
        profile = read_profile(args.profile)
        classes = class_accuracies(figs, out.name)
        write_profile(dataclasses.replace(profile, classes=classes), args.profile)
        print(f"stored class accuracies ({', '.join(c.name for c in classes)}) in {args.profile}")
    print(f"wrote {out}")
    return 0
