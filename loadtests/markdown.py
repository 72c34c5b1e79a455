"""Render a report (the dict written to report.json) as Markdown."""

from __future__ import annotations

from typing import Any


def _ms(d: dict[str, Any] | None, q: str) -> str:
    v = (d or {}).get(q)
    return "–" if v is None else f"{v:,.0f}"


def _usd(v: float | None) -> str:
    return "–" if v is None else f"{v:.5f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.0f}%"


def _mix(mix: dict[str, int]) -> str:
    total = sum(mix.values()) or 1
    return ", ".join(f"{m} {n / total:.0%}" for m, n in mix.items()) or "–"


def _scenario(r: dict[str, Any]) -> list[str]:
    s = r["scenario"]
    lines = [f"Scenario **{s['name']}**: {s['description']}. Arrivals: {s['arrival']['process']} "
             f"(cv {s['arrival']['cv']:g}).", "",
             "| class | share | endpoint | max_tokens | budget |", "|---|---|---|---|---|"]
    for c in s["classes"]:
        budget = ", ".join(f"{k} {v:g}" if not isinstance(v, bool) else k for k, v in c["budget"].items()) or "none"
        lines.append(f"| {c['name']} | {c['share']:.0%} | {c['endpoint']}{' (stream)' if c['stream'] else ''} "
                     f"| {c['max_tokens']} | {budget} |")
    prices = ", ".join(f"{m}: ${p['input_per_mtok']:g} in / ${p['output_per_mtok']:g} out per 1M tokens"
                       for m, p in r["meta"]["prices"].items())
    return lines + ["", f"Pool prices: {prices}.", ""]


def _sweep(r: dict[str, Any]) -> list[str]:
    lines = ["| rate (req/s) | policy | budgets met | latency / quality / cost met | goodput (req/s) "
             "| out tok/s | E2E p50 / p90 / p99 (ms) | TTFT p50 / p99 (ms) | TPOT p50 (ms) | cost / 1k req (USD) "
             "| cost / 1k met (USD) | routing mix | outcomes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sorted(r["sweep"], key=lambda s: (s["level"], s["policy"])):
        if "skipped" in s:
            lines.append(f"| {s['level']:g} | {s['policy']} | skipped: {s['skipped']} |" + " |" * 10)
            continue
        lines.append(
            f"| {s['level']:g} | {s['policy']} | **{_pct(s['budget_met_rate'])}** | {_pct(s['latency_met_rate'])} / "
            f"{_pct(s['quality_met_rate'])} / {_pct(s['cost_met_rate'])} | {s['goodput_rps']:.2f} | "
            f"{s['output_tokens_per_s']:.1f} | {_ms(s['e2e_ms'], 'p50')} / {_ms(s['e2e_ms'], 'p90')} / "
            f"{_ms(s['e2e_ms'], 'p99')} | {_ms(s['ttft_ms'], 'p50')} / {_ms(s['ttft_ms'], 'p99')} | "
            f"{_ms(s['tpot_ms'], 'p50')} | {_usd(s['cost_per_1k_requests_usd'])} | "
            f"{_usd(s['cost_per_1k_budget_met_usd'])} | {_mix(s['routing_mix'])} | "
            f"{', '.join(f'{k} {v}' for k, v in s['outcomes'].items())} |")
    return lines + [""]


def _verdicts(r: dict[str, Any]) -> list[str]:
    lines = ["| rate (req/s) | tiergate: budget-met requests per USD | fixed policies | more per USD than every "
             "fixed policy | higher budget-met rate than every fixed policy |", "|---|---|---|---|---|"]
    for v in r["verdicts"]:
        fixed = ", ".join(f"{p} {x:,.0f}" for p, x in v["fixed_met_per_usd"].items())
        lines.append(f"| {v['rate']:g} | **{v['router_met_per_usd']:,.0f}** | {fixed} | "
                     f"{'yes' if v['more_met_per_usd_than_every_fixed'] else 'no'} | "
                     f"{'yes' if v['higher_met_rate_than_every_fixed'] else 'no'} |")
    return lines + [""]


def _per_class(r: dict[str, Any]) -> list[str]:
    """Per class and policy at the lowest rate: share meeting every budget and cost per 1k requests."""
    runs = [s for s in r["sweep"] if "skipped" not in s and s["level"] == min(r["meta"]["rates"])]
    if not runs:
        return []
    policies = [s["policy"] for s in sorted(runs, key=lambda s: r["meta"]["policies"].index(s["policy"]))]
    by = {s["policy"]: s for s in runs}
    lines = [f"At {min(r['meta']['rates']):g} req/s; each cell: share meeting every budget, cost per 1,000 requests "
             "(USD), the models that answered.", "",
             "| class | " + " | ".join(policies) + " |", "|---|" + "---|" * len(policies)]
    for klass in sorted(by[policies[0]]["per_class"]):
        cells = []
        for p in policies:
            c = by[p]["per_class"].get(klass)
            cells.append("–" if not c else f"{_pct(c['budget_met_rate'])}, {_usd(c['cost_per_1k_requests_usd'])}, "
                                           f"{_mix(c['routing_mix'])}")
        lines.append(f"| {klass} | " + " | ".join(cells) + " |")
    return lines + [""]


def _capacity(r: dict[str, Any]) -> list[str]:
    lines = ["| policy | highest rate with >= 99% meeting every budget | highest rate with >= 99% within the "
             "latency budget |", "|---|---|---|"]
    for p in r["meta"]["policies"]:
        a, b = r["capacity_all_budgets_99"].get(p), r["capacity_latency_99"].get(p)
        lines.append(f"| {p} | {'none tested' if a is None else f'{a:g} req/s'} | "
                     f"{'none tested' if b is None else f'{b:g} req/s'} |")
    return lines + ["", f"Tested rates: {', '.join(f'{x:g}' for x in r['meta']['rates'])} req/s, "
                        f"{r['meta']['requests_per_rate']} requests each (so 99% means none missed).", ""]


def _overhead(o: dict[str, Any]) -> list[str]:
    lines = [f"Model **{o['model']}**, greedy, max_tokens {o['max_tokens']}, {o['requests_per_level']} requests per "
             "tier per level, closed loop.", "",
             "| concurrency | tier | req/s | TTFT p50 / p99 (ms) | E2E p50 / p99 (ms) | added TTFT p50 / p99 (ms) "
             "| added E2E p50 / p99 (ms) | throughput ratio | same tokens as engine |",
             "|---|---|---|---|---|---|---|---|---|"]
    for lv in o["levels"]:
        for tier, t in lv["tiers"].items():
            ov = lv["overhead"].get(tier)
            added_t = "–" if not ov else f"{_ms(ov['added_ttft_ms'], 'p50')} / {_ms(ov['added_ttft_ms'], 'p99')}"
            added_e = "–" if not ov else f"{_ms(ov['added_e2e_ms'], 'p50')} / {_ms(ov['added_e2e_ms'], 'p99')}"
            ratio = "1 (baseline)" if not ov else f"{ov['throughput_ratio']:.2f}"
            lines.append(f"| {lv['concurrency']} | {tier} | {t['requests_per_s']:.2f} | {_ms(t['ttft_ms'], 'p50')} / "
                         f"{_ms(t['ttft_ms'], 'p99')} | {_ms(t['e2e_ms'], 'p50')} / {_ms(t['e2e_ms'], 'p99')} | "
                         f"{added_t} | {added_e} | {ratio} | {'yes' if lv['same_tokens'][tier] else 'NO'} |")
    return lines + [""]


def render(r: dict[str, Any], pngs: list[str]) -> str:
    m = r["meta"]
    out = [f"# tiergate benchmark report: {m['scenario']}", "",
           f"Gateway {m['gateway']}, pool `{m['pool']}`, commit {m['git_commit']}, {m['cpu_count']} CPUs "
           f"(load average {m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end), "
           f"{m['duration_s']:.0f} s of load." + (f" Pool: {m['pool_note']}." if m.get("pool_note") else ""),
           "", "## Scenario", ""]
    out += _scenario(r)
    out += ["## Budgets met per unit cost", "", "A request meets its budget when it is answered and meets every "
            "budget its class sets: latency on the client's end-to-end time, cost on the returned usage times the "
            "pool's prices, quality on the gateway's predicted quality for the model that answered.", ""]
    out += _verdicts(r)
    out += ["## Per class", ""] + _per_class(r)
    out += ["## Load sweep", ""] + _sweep(r) + ["## Highest rate within budget", ""] + _capacity(r)
    if r.get("overhead"):
        out += ["## Gateway overhead", ""] + _overhead(r["overhead"])
    out += ["## Plots", ""] + [f"![{p}]({p})" for p in pngs] + [""]
    if r["problems"]:
        out += ["## Problems (lost, timed out, or failed without a cause)", ""] + [f"- {p}" for p in r["problems"]]
    else:
        out += ["No request was lost, timed out, or failed without a cause."]
    return "\n".join(out) + "\n"
