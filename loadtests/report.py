"""The standard benchmark report: tiergate's router against fixed policies, and gateway overhead.

    python -m loadtests.report --out out/report

starts the gateway on the embedded CPU pool (or uses ``--base-url``), runs the scenario's
open-loop load sweep once per policy per rate (every policy gets the same seeded requests
at the same times; the policy order rotates from rate to rate), scores every answer of a
labelled class against gold (a quality budget is met by a correct answer), compares scored
budget-met requests per USD of tiergate's router with each fixed policy at each rate, finds the
highest rate at which each policy keeps 99% of requests within budget, measures the gateway's
overhead against the engine in-process over a concurrency sweep, and writes report.json,
report.md, requests.jsonl and PNG plots to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtests import plots
from loadtests.client import pool_prices
from loadtests.gateway_proc import GatewayProcess
from loadtests.labelled import kinds
from loadtests.markdown import render
from loadtests.overhead import run_overhead
from loadtests.policies import POLICIES, make_policy
from loadtests.runner import http_client, run_open
from loadtests.scenario import Scenario, load_scenario, plan
from loadtests.summary import summarize

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OVERLOADED = 0.75  # below this latency-met rate a policy is past its knee: its higher rates are skipped


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.report", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/report", help="output folder")
    p.add_argument("--pool", default=str(ROOT / "deploy" / "pools" / "cpu-default.yaml"))
    p.add_argument("--scenario", default=str(HERE / "scenarios" / "mixed.yaml"))
    p.add_argument("--shared-dir", help="where the scenario's `root: shared` labelled sets are (default: the "
                                        "scenario's shared_dir, ../shared from the repository)")
    p.add_argument("--base-url", help="use a running gateway instead of starting one (it must serve --pool)")
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, from: " + ", ".join(POLICIES))
    p.add_argument("--rates", help="comma-separated requests/s (default: the scenario's)")
    p.add_argument("--requests-per-rate", type=int, help="default: the scenario's")
    p.add_argument("--overhead-model", help="pool model for the overhead sweep (default: the cheapest)")
    p.add_argument("--overhead-levels", default="1,2,4", help="closed-loop concurrency levels")
    p.add_argument("--overhead-requests", type=int, default=12, help="requests per tier per level")
    p.add_argument("--overhead-max-tokens", type=int, default=16)
    p.add_argument("--skip-overhead", action="store_true")
    return p


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def capacity(sweep: list[dict[str, Any]], key: str, target: float = 0.99) -> dict[str, float | None]:
    """Per policy, the highest tested rate up to which every tested rate kept ``key`` >= target."""
    out: dict[str, float | None] = {}
    for policy in dict.fromkeys(s["policy"] for s in sweep):
        best = None
        for s in sorted((s for s in sweep if s["policy"] == policy), key=lambda s: s["level"]):
            if "skipped" in s or (s[key] or 0) < target:
                break
            best = s["level"]
        out[policy] = best
    return out


def _per_usd(s: dict[str, Any]) -> float:
    """Budget-met requests per USD of the run's whole spend (0 for a run that spent nothing)."""
    return (s["budget_met_rate"] * s["requests"]) / s["cost_usd"] if s["cost_usd"] else 0.0


def verdicts(sweep: list[dict[str, Any]], router: str = "tiergate") -> list[dict[str, Any]]:
    """Per rate: does the router meet more budgets (quality: scored answers) per dollar, and more
    budgets per 1,000 requests, than each fixed policy that ran at that rate?"""
    out = []
    for rate in sorted({s["level"] for s in sweep}):
        runs = {s["policy"]: s for s in sweep if s["level"] == rate and "skipped" not in s}
        if router not in runs:
            continue
        mine = runs[router]
        others = {p: s for p, s in runs.items() if p != router}
        if not others:  # every fixed policy was past its knee already: nothing to compare
            continue
        out.append({
            "rate": rate,
            "router_met_per_usd": round(_per_usd(mine), 1),
            "fixed_met_per_usd": {p: round(_per_usd(s), 1) for p, s in others.items()},
            "router_met_per_1k": round(mine["budget_met_rate"] * 1000, 1),
            "fixed_met_per_1k": {p: round(s["budget_met_rate"] * 1000, 1) for p, s in others.items()},
            "skipped_fixed": sorted(s["policy"] for s in sweep if s["level"] == rate and "skipped" in s
                                    and s["policy"] != router),
            "more_met_per_usd_than_every_fixed": all(_per_usd(mine) > _per_usd(s) for s in others.values()),
            "higher_met_rate_than_every_fixed": all(mine["budget_met_rate"] > s["budget_met_rate"]
                                                   for s in others.values()),
        })
    return out


def beats_at(verdict_rows: list[dict[str, Any]]) -> list[float]:
    """The rates at which the router got more scored budget-met requests per USD than every fixed policy."""
    return [v["rate"] for v in verdict_rows if v["more_met_per_usd_than_every_fixed"]]


async def _warm(client: Any, scenario: Scenario, prices: dict[str, Any]) -> None:
    """A few unmeasured requests per model, so caches are warm and the router has seen each model."""
    reqs = plan(scenario, 2, None, seed=scenario.seed + 1)
    for model in [*prices, "auto"]:
        for req in reqs:
            body = {**req.body, "model": model, "max_tokens": min(8, req.body["max_tokens"])}
            path = "/v1/chat/completions" if req.endpoint == "chat" else "/v1/completions"
            await client.post(path, json=body, timeout=120)


async def run_report(args: argparse.Namespace, base_url: str, out: Path) -> dict[str, Any]:
    scenario = load_scenario(args.scenario, args.shared_dir)
    rates = _floats(args.rates) if args.rates else list(scenario.load.rates)
    n = args.requests_per_rate or scenario.load.requests_per_rate
    names = [p.strip() for p in args.policies.split(",") if p.strip()]
    sweep: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    started = time.time()
    load_start = os.getloadavg()
    async with http_client(base_url) as client:
        prices = await pool_prices(client)
        policies = {name: make_policy(name, prices, scenario.seed) for name in names}
        await _warm(client, scenario, prices)
        saturated: dict[str, float] = {}
        for i, rate in enumerate(sorted(rates)):
            reqs = plan(scenario, n, rate, item_offset=i * n)  # new labelled items at each rate
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                if name in saturated:
                    sweep.append({"policy": name, "level": rate, "skipped": f"saturated at {saturated[name]:g} req/s"})
                    continue
                t = time.perf_counter()
                run = await run_open(client, reqs, rate, name, policies[name], prices, scenario.load.timeout_s)
                summary = summarize(run, scenario.floors())
                sweep.append(summary)
                records += [{"rate": rate, **r.as_dict()} for r in run.results]
                print(f"  {rate:g} req/s {name:16s} met {summary['budget_met_rate']:.0%} "
                      f"({summary['budget_met_per_usd']} per USD, accuracy {summary['accuracy']}) "
                      f"goodput {summary['goodput_rps']:.2f}/s e2e p50 {summary['e2e_ms']['p50']} "
                      f"p99 {summary['e2e_ms']['p99']} ms mix {summary['routing_mix']} "
                      f"({time.perf_counter() - t:.0f}s)", flush=True)
                if (summary["latency_met_rate"] or 0) < OVERLOADED:
                    saturated[name] = rate
        overhead = None
        if not args.skip_overhead:
            model = args.overhead_model or min(prices, key=lambda m: (prices[m].output_per_mtok, m))
            levels = [int(x) for x in _floats(args.overhead_levels)]
            print(f"  overhead sweep on {model}, concurrency {levels}", flush=True)
            overhead = await run_overhead(args.pool, model, client, prices, levels, args.overhead_requests,
                                          args.overhead_max_tokens)
    report = {
        "meta": {
            "scenario": scenario.name, "scenario_file": _rel(args.scenario), "pool": _rel(args.pool),
            "gateway": base_url, "policies": names, "rates": sorted(rates), "requests_per_rate": n,
            "started_unix": round(started), "duration_s": round(time.time() - started, 1),
            "cpu_count": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "git_commit": _git_commit(), "prices": {m: vars(p) for m, p in prices.items()},
        },
        "scenario": _scenario_digest(scenario),
        "sweep": sweep,
        "capacity_all_budgets_99": capacity(sweep, "budget_met_rate"),
        "capacity_latency_99": capacity(sweep, "latency_met_rate"),
        "verdicts": verdicts(sweep),
        "overhead": overhead,
        "floors_per_class": floors_table(sweep),
        "accuracy_pooled": pooled_accuracy(records, scenario.floors()),
        "problems": problems_from(records),
    }
    report["beats_every_fixed_per_usd_at"] = beats_at(report["verdicts"])
    (out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return report


def pooled_accuracy(records: list[dict[str, Any]], floors: dict[str, float | None]) -> dict[str, Any]:
    """Per policy and labelled class, over every rate it ran: scored answers against gold (unanswered
    requests count as wrong), and whether the accuracy reached the class's quality floor."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if not r.get("item_id"):
            continue
        c = out.setdefault(r["policy"], {}).setdefault(r["klass"], {"requests": 0, "correct": 0, "items": set()})
        c["requests"] += 1
        c["correct"] += r.get("score") == 1.0
        c["items"].add(r["item_id"])
    for classes in out.values():
        for klass, c in classes.items():
            floor = floors.get(klass)
            c["distinct_items"] = len(c.pop("items"))
            c["accuracy"] = round(c["correct"] / c["requests"], 4)
            c["min_quality"] = floor
            c["floor_met"] = None if floor is None else c["accuracy"] >= floor
    return out


def floors_table(sweep: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run and class with a quality floor: measured accuracy against the floor."""
    return [{"rate": s["level"], "policy": s["policy"], "class": k, "min_quality": c["min_quality"],
             "accuracy": c["accuracy"], "floor_met": c["floor_met"], "requests": c["requests"]}
            for s in sweep if "skipped" not in s for k, c in s["per_class"].items() if c.get("min_quality") is not None]


def problems_from(records: list[dict[str, Any]]) -> list[str]:
    return [f"{r['rate']:g}/s {r['policy']} #{r['index']} {r['klass']}: {r['outcome']} (HTTP {r['status']}) "
            f"{r['error']}" for r in records if r["outcome"] in ("failed", "lost", "timeout")]


def _scenario_digest(s: Scenario) -> dict[str, Any]:
    total = sum(c.weight for c in s.classes)
    return {"name": s.name, "description": s.description, "arrival": s.arrival.model_dump(),
            "classes": [{"name": c.name, "share": round(c.weight / total, 3), "endpoint": c.endpoint,
                         "stream": c.stream, "max_tokens": c.max_tokens, "budget": c.budget.routing(),
                         "temperature": c.temperature, "prompts": len(c.prompts) or len(s.items(c)),
                         "labelled": None if c.labelled is None else {
                             "file": c.labelled.file, "root": c.labelled.root,
                             "path": _rel(str(c.labelled.path(s.shared_dir))), "items": c.labelled.items,
                             "kinds": kinds(s.items(c))}}
                        for c in s.classes]}


def _rel(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write(report: dict[str, Any], out: Path) -> list[Path]:
    (out / "report.json").write_text(json.dumps(report, indent=2))
    pngs = [plots.met_per_usd_over_load(report["sweep"], out / "met_per_usd_over_load.png"),
            plots.latency_over_load(report["sweep"], out / "latency_over_load.png"),
            plots.goodput_over_load(report["sweep"], out / "goodput_over_load.png"),
            plots.cost_vs_budget_met(report["sweep"], out / "cost_vs_budget_met.png"),
            plots.accuracy_by_class(report["sweep"], out / "accuracy_by_class.png")]
    if report["overhead"]:
        pngs.append(plots.overhead(report["overhead"], out / "overhead.png"))
    (out / "report.md").write_text(render(report, [p.name for p in pngs]))
    return [out / "report.json", out / "report.md", *pngs]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gateway = None
    try:
        if args.base_url:
            base_url = args.base_url.rstrip("/")
        else:
            gateway = GatewayProcess(args.pool, log_path=out / "gateway.log")
            print(f"starting tiergate serve on {gateway.base_url} (log: {out / 'gateway.log'})", flush=True)
            base_url = gateway.start()
            print(f"gateway ready after {time.perf_counter() - t0:.0f}s", flush=True)
        report = asyncio.run(run_report(args, base_url, out))
    finally:
        if gateway is not None:
            gateway.stop()
    report["meta"]["total_s"] = round(time.perf_counter() - t0, 1)
    for path in write(report, out):
        print(f"wrote {path}")
    for v in report["verdicts"]:
        print(f"at {v['rate']:g} req/s: tiergate {v['router_met_per_usd']} scored budget-met requests per USD vs "
              f"{v['fixed_met_per_usd']}; more per USD than every fixed policy: "
              f"{v['more_met_per_usd_than_every_fixed']}")
    print(f"tiergate beats every fixed policy per USD at: {report['beats_every_fixed_per_usd_at'] or 'no rate'}")
    for line in report["problems"]:
        print("problem:", line, file=sys.stderr)
    print(f"total {report['meta']['total_s']:.0f}s")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
