"""``tiergate eval``: a live evaluation of a running gateway on labelled prompts, scored against gold.

    tiergate eval --base-url http://127.0.0.1:8000 --set deploy/eval/heldout.jsonl \\
        --floors 0.5,0.7,0.8 --cascade-floors 0.5 --out loadtests/results/eval-cpu-default

Every request is real HTTP through the official ``openai`` client, at bounded concurrency, sent as a
product would (:func:`~serve.evaluation.scorer.product_prompt`). Variants, each over the whole workload:
every pool model pinned by name, a uniform random mix, the router (``model: "auto"``) at each quality
floor and at each answer value (``routing.answer_value_usd``, the value rule), and the same with
``routing.cascade``. Each answer is scored against gold.
Per variant: accuracy, cost per 1,000 requests (the gateway's actual ``x-tiergate-cost-usd``), latency
p50/p99 as the client saw it, the routing mix and, for routed variants, calibration (predicted
P(acceptable) of the answering model against the scored outcome, per bin, with ECE). Beside them: the
cost-accuracy curve, its area against the random-mix frontier, and the headline comparison with
always-largest. Writes ``eval.json``, ``eval.md`` and ``cost_accuracy.png`` to ``--out``.
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

from serve.evaluation.label import MAX_TOKENS, load_sets
from serve.evaluation.labelled import heldout_tasks
from serve.evaluation.metrics import Answer, area_under, frontier_accuracy, random_mix_frontier, summarize
from serve.evaluation.scorer import product_prompt, score_item, scoring_kind

NEAR_LARGEST = 0.98  # the headline: the cheapest routed variant with this share of always-largest's accuracy


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a running gateway's answers against gold, per routing variant",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--api-key", default="unused")
    p.add_argument("--set", action="append", default=[],
                   help="labelled JSONL file, optionally FILE:N for at most N prompts per task (repeatable)")
    p.add_argument("--per-task", type=int, default=0, help="at most N prompts per task, seeded (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="", help="a split file (deploy/eval/split.json): only its held-out tasks")
    p.add_argument("--floors", default="0.3,0.5,0.7", help="router quality floors (min_quality)")
    p.add_argument("--cascade-floors", default="", help="floors also run with routing.cascade true")
    p.add_argument("--values", default="", help="answer values in USD (routing.answer_value_usd, the value rule)")
    p.add_argument("--cascade-values", default="", help="answer values also run with routing.cascade true")
    p.add_argument("--variants", default="", help="only these variants (comma-separated names)")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--timeout", type=float, default=300.0, help="client timeout per request, seconds")
    p.add_argument("--cv", type=int, default=0, metavar="K",
                   help="leave-tasks-out live: deal the tasks into K folds; route each fold on a profile fitted on "
                        "--train without its tasks, written over the profile the gateway watches (restored after)")
    p.add_argument("--train", action="append", default=[], metavar="FILE",
                   help="with --cv: labelled outcomes (`tiergate label` records) to fit each fold's profile on")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--rerender", action="store_true",
                   help="send nothing: recompute the figures from the answers in OUT/eval.json")
    p.set_defaults(func=run)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def variants(models: list[str], floors: list[float], cascade_floors: list[float], values: list[float] = (),
             cascade_values: list[float] = ()) -> dict[str, dict[str, Any]]:
    """name -> how to send: the ``model`` field and the ``routing`` object (None for pinned)."""
    out: dict[str, dict[str, Any]] = {f"pinned:{m}": {"model": m, "routing": None} for m in models}
    out["random"] = {"model": "random", "routing": None}
    for f in floors:
        out[f"router@{f:g}"] = {"model": "auto", "routing": {"min_quality": f, "cascade": False}}
    for f in cascade_floors:
        out[f"cascade@{f:g}"] = {"model": "auto", "routing": {"min_quality": f, "cascade": True}}
    for v in values:
        out[f"value@{v:g}"] = {"model": "auto", "routing": {"answer_value_usd": v, "cascade": False}}
    for v in cascade_values:
        out[f"value-cascade@{v:g}"] = {"model": "auto", "routing": {"answer_value_usd": v, "cascade": True}}
    return out


def routed(name: str) -> bool:
    """A variant the router chose the model for (not a pinned model, not the random mix)."""
    return not name.startswith(("pinned:", "random"))


async def _ask(client: Any, item: dict[str, Any], model: str, routing: dict[str, Any] | None) -> Answer:
    extra = {"routing": routing} if routing else None
    t0 = time.perf_counter()
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": product_prompt(item)}],
            max_tokens=MAX_TOKENS[scoring_kind(item)], temperature=0.0, seed=0, extra_body=extra)
    except Exception as err:  # noqa: BLE001 - an unanswered request counts as wrong, and is reported
        print(f"{item['id']} on {model}: {type(err).__name__}: {err}", file=sys.stderr)
        return Answer(item["id"], item["task"], False, 0.0, "", 0.0, time.perf_counter() - t0, None)
    latency = time.perf_counter() - t0
    body = raw.parse()
    h = raw.headers
    reply = body.choices[0].message.content or ""
    predicted = h.get("x-tiergate-predicted-quality")
    return Answer(item["id"], item["task"], True, score_item(item, reply), h.get("x-tiergate-model", body.model),
                  float(h.get("x-tiergate-cost-usd", "0")), latency,
                  float(predicted) if predicted is not None else None,
                  h.get("x-tiergate-route-reason", ""), h.get("x-tiergate-cascade", ""))


async def run_variant(client: Any, items: list[dict[str, Any]], spec: dict[str, Any], models: list[str],
                      concurrency: int, seed: int, label: str) -> list[Answer]:
    from tqdm import tqdm

    rng = random.Random(seed)
    chosen = [rng.choice(models) if spec["model"] == "random" else spec["model"] for _ in items]
    sem = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(items), desc=label, file=sys.stderr, mininterval=2.0)

    async def one(item: dict[str, Any], model: str) -> Answer:
        async with sem:
            ans = await _ask(client, item, model, spec["routing"])
        bar.update(1)
        return ans

    try:
        return list(await asyncio.gather(*(one(it, m) for it, m in zip(items, chosen))))
    finally:
        bar.close()


def compare(results: dict[str, dict[str, Any]], models: list[str]) -> dict[str, Any]:
    """The cost-accuracy curve, its area, and each routed variant against always-largest and random."""
    fixed = {m: (results[f"pinned:{m}"]["cost_per_1k_usd"], results[f"pinned:{m}"]["accuracy"]) for m in models}
    largest = max(models, key=lambda m: fixed[m][0])
    frontier = random_mix_frontier(fixed)
    lo, hi = min(c for c, _ in fixed.values()), max(c for c, _ in fixed.values())
    by_router = {n: (r["cost_per_1k_usd"], r["accuracy"]) for n, r in results.items() if routed(n)}
    rows = {}
    for name, (c, a) in by_router.items():
        mix_acc = frontier_accuracy(frontier, c)
        rows[name] = {"accuracy_vs_largest": round(a / fixed[largest][1], 4) if fixed[largest][1] else None,
                      "cost_vs_largest": round(c / fixed[largest][0], 4) if fixed[largest][0] else None,
                      "random_mix_accuracy_at_same_cost": round(mix_acc, 4),
                      "beats_random_mix": a > mix_acc}
    near = [(r["cost_vs_largest"], n) for n, r in rows.items()
            if r["accuracy_vs_largest"] is not None and r["accuracy_vs_largest"] >= NEAR_LARGEST]
    return {"largest": largest, "random_mix_frontier": frontier, "variants": rows,
            "cheapest_near_largest": min(near)[1] if near else None,
            "area": {"router": round(area_under(list(by_router.values()) + list(fixed.values()), lo, hi), 4),
                     "random_mix": round(area_under(frontier, lo, hi), 4), "cost_range_per_1k": [lo, hi]}}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Live evaluation: {report['gateway']}", "",
             f"{report['prompts']} prompts from {', '.join(report['sets'])} ({len(report['tasks'])} tasks); "
             f"answers scored against gold. Cost is the gateway's actual cost per 1,000 requests.", ""]
    if report.get("cv"):
        cv = report["cv"]
        lines += [f"Leave-tasks-out live ({cv['folds']} folds, seed {cv['seed']}): each fold's prompts were routed on a "
                  f"profile fitted on {', '.join(cv['train'])} without that fold's tasks (profiles kept in "
                  "profiles/); pinned models and the random mix were sent once.", "",
                  "| fold | prompts | tasks | trained on | profile sha256 |", "|---|---|---|---|---|"]
        lines += [f"| {f['fold']} | {f['prompts']} | {len(f['tasks'])} | {f['trained_on']} | {f['profile_sha256'][:12]} |"
                  for f in cv["per_fold"]]
        lines.append("")
    lines += ["| variant | accuracy | cost / 1k req (USD) | vs largest: accuracy | vs largest: cost | random mix at "
              "same cost | p50 ms | p99 ms | ECE | mix |", "|---|---|---|---|---|---|---|---|---|---|"]
    cmp = report["comparison"]["variants"]
    for name, r in report["variants"].items():
        c = cmp.get(name, {})
        lat = r["latency_ms"] or {}
        lines.append(f"| {name} | {r['accuracy']:.3f} | {r['cost_per_1k_usd']:.5f} | "
                     f"{c.get('accuracy_vs_largest', '')} | {c.get('cost_vs_largest', '')} | "
                     f"{c.get('random_mix_accuracy_at_same_cost', '')} | {lat.get('p50', '')} | {lat.get('p99', '')} | "
                     f"{r.get('ece', '')} | {', '.join(f'{k}: {v}' for k, v in r['mix'].items())} |")
    a = report["comparison"]["area"]
    near = report["comparison"].get("cheapest_near_largest")
    if near is not None:
        r = cmp[near]
        lines += ["", f"Cheapest routed variant with at least {NEAR_LARGEST:.0%} of always-largest's accuracy: **{near}**, "
                  f"{r['accuracy_vs_largest']:.1%} of its accuracy at {r['cost_vs_largest']:.1%} of its cost "
                  f"({'above' if r['beats_random_mix'] else 'not above'} the random mix of equal cost)."]
    else:
        lines += ["", f"No routed variant reached {NEAR_LARGEST:.0%} of always-largest's accuracy."]
    lines += ["", f"Area under the cost-accuracy curve over the fixed models' cost range: router {a['router']}, "
              f"random mix {a['random_mix']}.", ""]
    if report.get("ece_routed") is not None:
        lines += [f"Live calibration over every routed answer (every variant but the pinned and random ones): ECE "
                  f"{report['ece_routed']}.", "", "| bin | n | predicted | measured |", "|---|---|---|---|"]
        lines += [f"| {b['bin']} | {b['n']} | {b['predicted']} | {b['measured']} |" for b in report["calibration_routed"]]
        lines.append("")
    for name, r in report["variants"].items():
        if r.get("calibration"):
            lines += [f"Calibration of {name} (ECE {r['ece']}):", "", "| bin | n | predicted | measured |",
                      "|---|---|---|---|"]
            lines += [f"| {b['bin']} | {b['n']} | {b['predicted']} | {b['measured']} |" for b in r["calibration"]]
            lines.append("")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    fr = report["comparison"]["random_mix_frontier"]
    ax.plot([c for c, _ in fr], [a for _, a in fr], "--", color="grey", label="random mixes (frontier)")
    for name, r in report["variants"].items():
        marker = "s" if name.startswith("pinned") else ("^" if "cascade" in name else
                                                         "D" if name.startswith("value") else "o")
        ax.scatter(r["cost_per_1k_usd"], r["accuracy"], marker=marker)
        ax.annotate(name.replace("pinned:", ""), (r["cost_per_1k_usd"], r["accuracy"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("cost per 1,000 requests (USD)")
    ax.set_ylabel("accuracy (scored against gold)")
    ax.set_title("tiergate: cost vs accuracy, live")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


async def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import openai

    items = load_sets(args.set, args.per_task, args.seed)
    if getattr(args, "cv", 0) and not args.train:
        raise SystemExit("tiergate eval --cv needs --train FILE: the labelled outcomes each fold's profile is fitted on")
    if getattr(args, "split", ""):
        held = heldout_tasks(args.split)
        items = [it for it in items if it["task"] in held]
        if not items:
            raise SystemExit(f"no prompt of {args.set} is in a held-out task of {args.split}")
    client = openai.AsyncOpenAI(base_url=f"{args.base_url.rstrip('/')}/v1", api_key=args.api_key,
                                timeout=args.timeout, max_retries=0)
    listed = await client.models.list()
    models = [m.id for m in listed.data if m.id != "auto"]
    specs = variants(models, _floats(args.floors), _floats(args.cascade_floors), _floats(getattr(args, "values", "")),
                     _floats(getattr(args, "cascade_values", "")))
    if args.variants:
        keep = {v.strip() for v in args.variants.split(",")}
        unknown = sorted(keep - set(specs))
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; valid: {', '.join(specs)}")
        specs = {k: v for k, v in specs.items() if k in keep or k.startswith("pinned:")}

    async def send(chosen: list[dict[str, Any]], label: str, spec: dict[str, Any]) -> list[Answer]:
        got = await run_variant(client, chosen, spec, models, args.concurrency, args.seed, label)
        print(f"{label}: accuracy {sum(a.correct for a in got) / len(got):.3f}", file=sys.stderr, flush=True)
        return got

    cv = None
    try:
        if getattr(args, "cv", 0):
            from serve.evaluation.live_cv import evaluate_folds

            got, cv = await evaluate_folds(args.base_url, args.api_key, items, specs, routed, send,
                                           train=args.train, folds=args.cv, seed=args.seed, out=Path(args.out))
        else:
            got = {name: await send(items, name, spec) for name, spec in specs.items()}
    finally:
        await client.close()
    return {"gateway": args.base_url, "sets": args.set, "prompts": len(items),
            "tasks": sorted({it["task"] for it in items}), "models": models,
            **({"cv": cv} if cv else {}), "answers": {n: [a.__dict__ for a in g] for n, g in got.items()}}


def rerender(report: dict[str, Any]) -> dict[str, Any]:
    """The report's figures, computed from its answers (after a run, or again from a stored eval.json)."""
    answers = {n: [Answer(**a) for a in got] for n, got in report["answers"].items()}
    results = {n: summarize(got) for n, got in answers.items()}
    by_router = summarize([a for n, got in answers.items() if routed(n) for a in got])
    return {**report, "variants": results, "comparison": compare(results, report["models"]),
            "calibration_routed": by_router.get("calibration"), "ece_routed": by_router.get("ece")}


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.rerender:
        report = rerender(json.loads((out / "eval.json").read_text()))
    elif not args.set:
        raise SystemExit("tiergate eval: --set FILE is needed (or --rerender)")
    else:
        report = rerender(asyncio.run(evaluate(args)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "eval.md").write_text(markdown(report))
    plot(report, out / "cost_accuracy.png")
    print(markdown(report))
    return 0
