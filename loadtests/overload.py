"""The overload run (by hand): mixed open-loop traffic at twice the pool's sustainable rate.

    .venv/bin/python -m loadtests.overload --out loadtests/results/overload
    .venv/bin/python -m loadtests.overload --sustainable 1.5 --out /tmp/overload   # skip the search

It starts ``tiergate serve`` on the pool, measures the sustainable rate (each of ``--probe-rates``
for ``--probe-s`` seconds, lowest first: the highest rate at which every request was answered
within its class's latency budget and none was refused), then sends the overload scenario
(``loadtests/scenarios/overload.yaml``) at twice that rate for ``--duration`` seconds while it
samples the memory (RSS) of every process of the gateway's Ray instance, and writes
``report.json``, ``report.md``, ``rss.png`` and ``requests.jsonl`` to ``--out``.

The verdicts of issue #16's "Done when":

- **waits**: every request got its answer, or a 503, within its class's latency budget plus
  :data:`MARGIN_S`. The answer is what the client waits for: the status and headers, which for
  a stream come with its first token and otherwise with the whole answer. While a request would
  queue, the gateway admits it only if its predicted first token is within the budget; the margin
  covers the prediction's error and, for a whole answer, the tokens after the first.
- **fast 503s**: every 503 arrived within :data:`FAST_503_S` of sending, with ``Retry-After``.
  A request admitted on a prediction that turned out wrong is cut off by the pool's
  ``limits.budget_overrun_ms`` (503 ``latency_budget_exceeded``, by construction at its budget plus
  that overrun, within the margin): these cut-offs are counted apart from the refusals at admission,
  with their own latency, and the verdict names both.
- **memory flat**: after ``--warmup-s``, no process's RSS grew by more than
  :data:`FLAT_MB` MB or :data:`FLAT_SHARE` of its size (whichever is larger) from the first
  :data:`WINDOW_S` seconds after warm-up to the last ones.

The machine's load average is recorded at the start, every sample and the end: on a shared
2-core machine other work moves every latency figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.client import RequestResult, pool_prices
from loadtests.gateway_proc import GatewayProcess
from loadtests.policies import make_policy
from loadtests.runner import Run, http_client, run_open
from loadtests.scenario import Scenario, load_scenario, plan
from loadtests.summary import percentile

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "loadtests" / "scenarios" / "overload.yaml"
POOL = ROOT / "deploy" / "pools" / "cpu-default.yaml"
MARGIN_S = 5.0
FAST_503_S = 0.1
FLAT_MB = 20.0
FLAT_SHARE = 0.05
WINDOW_S = 30.0
CUT_OFF = "service_unavailable/latency_budget_exceeded"  # an admitted request cut at budget + overrun


# ----------------------------------------------------------------------------- waits and 503s
def waited_s(r: RequestResult) -> float | None:
    """How long the client waited for its answer or refusal: until the status and headers came."""
    return r.headers_s if r.headers_s is not None else None


def figures(results: Sequence[RequestResult], scenario: Scenario, margin_s: float = MARGIN_S,
            fast_s: float = FAST_503_S) -> dict[str, Any]:
    """Counts by outcome and status, the 503s' latency and Retry-After, and each wait against its budget."""
    budgets = {c.name: c.budget.max_latency_ms for c in scenario.classes}
    refused = [r for r in results if r.status == 503]
    cut = [r for r in refused if r.error.startswith(CUT_OFF)]
    shed = [r for r in refused if not r.error.startswith(CUT_OFF)]
    shed_s = np.array([r.e2e_s for r in shed if r.e2e_s is not None], dtype=float)
    late: list[dict[str, Any]] = []
    worst: dict[str, Any] | None = None
    unanswered = [r for r in results if r.outcome in ("timeout", "lost")]
    for r in results:
        budget_ms, waited = budgets.get(r.klass), waited_s(r)
        if budget_ms is None or waited is None:
            continue
        over_s = waited - budget_ms / 1000
        if worst is None or over_s > worst["over_budget_s"]:
            worst = {"index": r.index, "class": r.klass, "status": r.status, "model": r.model,
                     "waited_s": round(waited, 3), "budget_s": budget_ms / 1000, "over_budget_s": round(over_s, 3)}
        if over_s > margin_s:
            late.append({"index": r.index, "class": r.klass, "status": r.status, "waited_s": round(waited, 3),
                         "budget_s": budget_ms / 1000})
    slow_503 = [r.index for r in shed if r.e2e_s is None or r.e2e_s > fast_s]
    no_retry = [r.index for r in refused if not r.retry_after]
    over = np.array([waited_s(r) - budgets[r.klass] / 1000 for r in results
                     if budgets.get(r.klass) is not None and waited_s(r) is not None and r.status != 503])

    def pct(xs: np.ndarray, q: float) -> float | None:
        return round(percentile(xs, q) * 1000, 1) if xs.size else None

    return {
        "requests": len(results),
        "outcomes": dict(sorted(Counter(r.outcome for r in results).items())),
        "statuses": {str(k): v for k, v in sorted(Counter(r.status for r in results).items())},
        "shed_codes": dict(Counter(r.error.split(":")[0] for r in refused)),
        "cut_off": [{"index": r.index, "class": r.klass, "model": r.model,
                     "waited_s": None if waited_s(r) is None else round(waited_s(r), 3),
                     "budget_s": (budgets.get(r.klass) or 0) / 1000} for r in cut],
        "shed_latency_ms": {"p50": pct(shed_s, 50), "p99": pct(shed_s, 99),
                            "max": round(float(shed_s.max()) * 1000, 1) if shed_s.size else None},
        "shed_with_retry_after": len(refused) - len(no_retry),
        "answered_over_budget_ms": {"p50": pct(over, 50), "p99": pct(over, 99),
                                    "max": round(float(over.max()) * 1000, 1) if over.size else None,
                                    "count_over_budget": int((over > 0).sum())},
        "worst_wait": worst,
        "margin_s": margin_s,
        "late": late,
        "unanswered": [r.index for r in unanswered],
        "verdict_waits": not late and not unanswered,
        "verdict_fast_503": not slow_503 and not no_retry and not cut,
        "slow_503": slow_503,
        "shed_without_retry_after": no_retry,
    }


def sustained(results: Sequence[RequestResult], scenario: Scenario) -> bool:
    """Every request answered within its budget (no margin), none refused, lost or failed."""
    budgets = {c.name: c.budget.max_latency_ms for c in scenario.classes}
    for r in results:
        if r.outcome not in ("ok", "dropped"):
            return False
        budget, waited = budgets.get(r.klass), waited_s(r)
        if budget is not None and (waited is None or waited * 1000 > budget):
            return False
    return True


# ----------------------------------------------------------------------------- memory
_METHOD = re.compile(r"\.[a-z_]+$")  # Ray retitles a worker with the method it runs: ray::Actor.method


def _name(proc: Any) -> str:
    try:
        cmd = proc.cmdline()
    except Exception:  # noqa: BLE001 - gone, or not ours to read
        return proc.name()
    if cmd and cmd[0].startswith("ray::"):
        return _METHOD.sub("", cmd[0])
    if "serve.cli" in " ".join(cmd):
        return "tiergate serve (driver)"
    return " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd[:2]))[:60] if cmd else proc.name()


@dataclass
class RssSampler:
    """The RSS of a process and all its descendants (a local Ray instance: GCS, raylet, workers),
    each named once by its longest title (Ray shortens and retitles its workers as they work)."""

    pid: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)

    def sample(self, t_s: float) -> None:
        import psutil

        root = psutil.Process(self.pid)
        rss: dict[str, float] = {}
        for p in [root, *root.children(recursive=True)]:
            try:
                name, mb = _name(p), p.memory_info().rss / 2**20
            except psutil.Error:
                continue
            if len(name) > len(self.names.get(p.pid, "")):
                self.names[p.pid] = name
            rss[str(p.pid)] = round(mb, 1)
        self.samples.append({"t_s": round(t_s, 1), "load_avg_1m": round(os.getloadavg()[0], 2), "rss_mb": rss})

    def named(self) -> list[dict[str, Any]]:
        """The samples with each process as "name [pid]"."""
        return [{**s, "rss_mb": {f"{self.names.get(int(pid), '?')} [{pid}]": mb for pid, mb in s["rss_mb"].items()}}
                for s in self.samples]

    async def run(self, every_s: float, t0: float) -> None:
        while True:
            self.sample(time.perf_counter() - t0)
            await asyncio.sleep(every_s)


def memory(samples: Sequence[dict[str, Any]], warmup_s: float, end_s: float, window_s: float = WINDOW_S
           ) -> dict[str, Any]:
    """Each process's RSS at the start and end of the run after warm-up (means over ``window_s``)."""
    early = [s for s in samples if warmup_s <= s["t_s"] < warmup_s + window_s]
    late = [s for s in samples if end_s - window_s <= s["t_s"] <= end_s]
    out: dict[str, Any] = {}
    for name in sorted({n for s in samples for n in s["rss_mb"]}):
        a = [s["rss_mb"][name] for s in early if name in s["rss_mb"]]
        b = [s["rss_mb"][name] for s in late if name in s["rss_mb"]]
        peak = max(s["rss_mb"].get(name, 0.0) for s in samples)
        if not a or not b:
            out[name] = {"peak_mb": peak, "flat": None, "why": "not alive through the whole run"}
            continue
        start, end = sum(a) / len(a), sum(b) / len(b)
        growth = end - start
        out[name] = {"after_warmup_mb": round(start, 1), "end_mb": round(end, 1), "growth_mb": round(growth, 1),
                     "peak_mb": peak, "flat": growth <= max(FLAT_MB, FLAT_SHARE * start)}
    return out


# ----------------------------------------------------------------------------- the run
async def _open(base_url: str, scenario: Scenario, rate: float, seconds: float, seed: int) -> Run:
    n = max(1, round(rate * seconds))
    reqs = plan(scenario, n, rate, seed=seed)
    async with http_client(base_url, connections=1024) as client:
        prices = await pool_prices(client)
        return await run_open(client, reqs, rate, "tiergate", make_policy("tiergate", prices, scenario.seed),
                              prices, scenario.load.timeout_s)


async def find_sustainable(base_url: str, scenario: Scenario, rates: Sequence[float], seconds: float,
                           log: list[dict[str, Any]]) -> float:
    best = 0.0
    for i, rate in enumerate(sorted(rates)):
        run = await _open(base_url, scenario, rate, seconds, seed=scenario.seed + 1 + i)
        ok = sustained(run.results, scenario)
        f = figures(run.results, scenario)
        log.append({"rate": rate, "seconds": seconds, "sustained": ok, "outcomes": f["outcomes"],
                    "statuses": f["statuses"], "worst_wait": f["worst_wait"],
                    "load_avg_1m": round(os.getloadavg()[0], 2)})
        print(f"probe {rate:g} req/s: {'sustained' if ok else 'not sustained'} {f['statuses']} "
              f"worst wait {f['worst_wait']}", flush=True)
        await asyncio.sleep(20)  # let the queues drain before the next probe
        if not ok:
            break
        best = rate
    if best == 0.0:
        raise SystemExit(f"no probe rate was sustained: {log}")
    return best


async def overload(base_url: str, pid: int | None, scenario: Scenario, rate: float, seconds: float,
                   rss_every_s: float) -> tuple[Run, list[dict[str, Any]]]:
    sampler = RssSampler(pid) if pid is not None else None
    t0 = time.perf_counter()
    task = asyncio.create_task(sampler.run(rss_every_s, t0)) if sampler else None
    try:
        run = await _open(base_url, scenario, rate, seconds, seed=scenario.seed)
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if sampler is not None:
        sampler.sample(time.perf_counter() - t0)
    return run, sampler.named() if sampler else []


def plot_rss(samples: Sequence[dict[str, Any]], warmup_s: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    names = sorted({n for s in samples for n in s["rss_mb"]},
                   key=lambda n: -max(s["rss_mb"].get(n, 0) for s in samples))
    for name in names:
        pts = [(s["t_s"], s["rss_mb"][name]) for s in samples if name in s["rss_mb"]]
        if max(v for _, v in pts) < 30:
            continue  # helpers of a few MB would only crowd the legend
        ax.plot([t for t, _ in pts], [v for _, v in pts], lw=1.2, label=name[:60])
    ax.axvline(warmup_s, color="gray", ls="--", lw=1)
    ax.text(warmup_s, ax.get_ylim()[1] * 0.98, " warm-up ends", va="top", fontsize=8, color="gray")
    ax.set_xlabel("time since the overload run started (s)")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("Memory of each process of the gateway's Ray instance under overload")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(report: dict[str, Any]) -> str:
    f, m = report["figures"], report["memory"]
    lines = [f"# Overload run: {report['rate']:g} req/s for {report['duration_s']:g} s", "",
             f"Scenario `{report['scenario']}` on pool `{report['pool']}`; sustainable rate "
             f"{report['sustainable_rate']:g} req/s ({report['sustainable_source']}), overload at "
             f"{report['rate'] / report['sustainable_rate']:.1f}x. Load average (1 min) at start "
             f"{report['load_avg_start']}, end {report['load_avg_end']}, during "
             f"{report['load_avg_during']['min']}-{report['load_avg_during']['max']} (2 cores, shared).", ""]
    if report["probes"]:
        lines += ["| probe rate (req/s) | sustained | statuses | worst wait over budget (s) |", "|---|---|---|---|"]
        for p in report["probes"]:
            w = p["worst_wait"] or {}
            lines.append(f"| {p['rate']:g} | {p['sustained']} | {p['statuses']} | {w.get('over_budget_s')} |")
        lines.append("")
    lines += [
        "| figure | value |", "|---|---|",
        f"| requests | {f['requests']} |",
        f"| outcomes | {f['outcomes']} |",
        f"| HTTP statuses | {f['statuses']} |",
        f"| 503 codes | {f['shed_codes']} |",
        f"| 503 at admission: latency p50 / p99 / max (ms) | {f['shed_latency_ms']['p50']} / "
        f"{f['shed_latency_ms']['p99']} / {f['shed_latency_ms']['max']} |",
        f"| admitted, then cut off at budget + overrun (503 latency_budget_exceeded) | {len(f['cut_off'])} "
        f"{f['cut_off'][:5] if f['cut_off'] else ''} |",
        f"| 503s with Retry-After | {f['shed_with_retry_after']} of {f['statuses'].get('503', 0)} |",
        f"| answered: wait minus budget p50 / p99 / max (ms) | {f['answered_over_budget_ms']['p50']} / "
        f"{f['answered_over_budget_ms']['p99']} / {f['answered_over_budget_ms']['max']} "
        f"({f['answered_over_budget_ms']['count_over_budget']} over budget) |",
        f"| worst wait | {f['worst_wait']} |",
        f"| waits within budget + {f['margin_s']:g} s | {'yes' if f['verdict_waits'] else 'NO'} "
        f"({len(f['late'])} late, {len(f['unanswered'])} unanswered) |",
        f"| every 503 within {FAST_503_S * 1000:g} ms with Retry-After | {'yes' if f['verdict_fast_503'] else 'NO'} "
        f"({len(f['slow_503'])} slower, {len(f['cut_off'])} cut off) |",
        f"| memory flat after {report['warmup_s']:g} s warm-up | "
        f"{'yes' if report['verdict_memory'] else 'NO'} |", "",
        "| process | RSS after warm-up (MiB) | at end (MiB) | growth (MiB) | flat |", "|---|---|---|---|---|"]
    for name, v in m.items():
        if v.get("flat") is None:
            lines.append(f"| {name} | - | - | - | {v['why']} (peak {v['peak_mb']}) |")
        elif v["peak_mb"] >= 30:
            lines.append(f"| {name} | {v['after_warmup_mb']} | {v['end_mb']} | {v['growth_mb']} | {v['flat']} |")
    lines += ["", "Processes under 30 MiB are in report.json only. ![RSS over time](rss.png)", ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.overload", description=__doc__.splitlines()[0])
    p.add_argument("--pool", default=str(POOL))
    p.add_argument("--scenario", default=str(SCENARIO))
    p.add_argument("--base-url", help="a running gateway instead of starting one (no memory figures)")
    p.add_argument("--sustainable", type=float, help="the sustainable rate (req/s); else measured")
    p.add_argument("--probe-rates", default="1.0,1.5,2.0,2.5")
    p.add_argument("--probe-s", type=float, default=60.0)
    p.add_argument("--factor", type=float, default=2.0, help="overload rate = factor x sustainable rate")
    p.add_argument("--duration", type=float, default=180.0)
    p.add_argument("--warmup-s", type=float, default=30.0)
    p.add_argument("--rss-every-s", type=float, default=5.0)
    p.add_argument("--out", required=True)
    return p


async def main_async(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario(args.scenario)
    load_start = round(os.getloadavg()[0], 2)
    log = Path("/tmp") / f"overload-gateway-{os.getpid()}.log"
    gw = None if args.base_url else GatewayProcess(args.pool, log_path=log)
    base = args.base_url or gw.start()
    try:
        probes: list[dict[str, Any]] = []
        if args.sustainable:
            sustainable, source = args.sustainable, "given"
        else:
            sustainable = await find_sustainable(base, scenario, [float(x) for x in args.probe_rates.split(",")],
                                                 args.probe_s, probes)
            source = f"measured: highest of {args.probe_rates} req/s sustained for {args.probe_s:g} s each"
        rate = args.factor * sustainable
        print(f"overload: {rate:g} req/s for {args.duration:g} s", flush=True)
        pid = gw.proc.pid if gw is not None and gw.proc is not None else None
        run, samples = await overload(base, pid, scenario, rate, args.duration, args.rss_every_s)
    finally:
        if gw is not None:
            gw.stop()
    f = figures(run.results, scenario)
    mem = memory(samples, args.warmup_s, args.duration) if samples else {}
    loads = [s["load_avg_1m"] for s in samples] or [load_start]
    report = {"scenario": Path(args.scenario).name, "pool": Path(args.pool).name, "rate": rate,
              "sustainable_rate": sustainable, "sustainable_source": source, "factor": args.factor,
              "duration_s": args.duration, "wall_s": round(run.wall_s, 1), "warmup_s": args.warmup_s,
              "load_avg_start": load_start, "load_avg_end": round(os.getloadavg()[0], 2),
              "load_avg_during": {"min": min(loads), "max": max(loads)}, "probes": probes, "figures": f,
              "memory": mem, "verdict_memory": bool(mem) and all(v["flat"] is not False for v in mem.values()),
              "rss_samples": samples}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "requests.jsonl").write_text("".join(json.dumps(r.as_dict()) + "\n" for r in run.results))
    if samples:
        plot_rss(samples, args.warmup_s, out / "rss.png")
    (out / "report.md").write_text(render(report))
    print(render(report))
    return 0 if f["verdict_waits"] and f["verdict_fast_503"] and report["verdict_memory"] else 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
