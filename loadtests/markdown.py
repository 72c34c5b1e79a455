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


def _source(c: dict[str, Any]) -> str:
    lab = c.get("labelled")
    if not lab:
        return f"{c['prompts']} fixed prompts (not scored)"
    kinds = ", ".join(f"{k} {n}" for k, n in lab["kinds"].items())
    where = " under shared_dir" if lab.get("root") == "shared" else ""
    return f"{lab['items']} items of `{lab['file']}`{where}: {kinds}"


def _scenario(r: dict[str, Any]) -> list[str]:
    s = r["scenario"]
    lines = [f"Scenario **{s['name']}**: {s['description']}. Arrivals: {s['arrival']['process']} "
             f"(cv {s['arrival']['cv']:g}).", "",
             "| class | share | prompts | endpoint | max_tokens | budget |", "|---|---|---|---|---|---|"]
    for c in s["classes"]:
        budget = ", ".join(f"{k} {v:g}" if not isinstance(v, bool) else k for k, v in c["budget"].items()) or "none"
        lines.append(f"| {c['name']} | {c['share']:.0%} | {_source(c)} | {c['endpoint']}"
                     f"{' (stream)' if c['stream'] else ''} | {c['max_tokens'] or 'by answer kind'} | {budget} |")
    prices = ", ".join(f"{m}: ${p['input_per_mtok']:g} in / ${p['output_per_mtok']:g} out per 1M tokens"
                       for m, p in r["meta"]["prices"].items())
    return lines + ["", f"Pool prices: {prices}.", ""]


def _sweep(r: dict[str, Any]) -> list[str]:
    lines = ["| rate (req/s) | policy | budgets met | latency / quality / cost met | accuracy | goodput (req/s) "
             "| out tok/s | E2E p50 / p90 / p99 (ms) | TTFT p50 / p99 (ms) | TPOT p50 (ms) | cost / 1k req (USD) "
             "| cost / 1k met (USD) | routing mix | outcomes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sorted(r["sweep"], key=lambda s: (s["level"], s["policy"])):
        if "skipped" in s:
            lines.append(f"| {s['level']:g} | {s['policy']} | skipped: {s['skipped']} |" + " |" * 11)
            continue
        lines.append(
            f"| {s['level']:g} | {s['policy']} | **{_pct(s['budget_met_rate'])}** | {_pct(s['latency_met_rate'])} / "
            f"{_pct(s['quality_met_rate'])} / {_pct(s['cost_met_rate'])} | {_pct(s.get('accuracy'))} | "
            f"{s['goodput_rps']:.2f} | "
            f"{s['output_tokens_per_s']:.1f} | {_ms(s['e2e_ms'], 'p50')} / {_ms(s['e2e_ms'], 'p90')} / "
            f"{_ms(s['e2e_ms'], 'p99')} | {_ms(s['ttft_ms'], 'p50')} / {_ms(s['ttft_ms'], 'p99')} | "
            f"{_ms(s['tpot_ms'], 'p50')} | {_usd(s['cost_per_1k_requests_usd'])} | "
            f"{_usd(s['cost_per_1k_budget_met_usd'])} | {_mix(s['routing_mix'])} | "
            f"{', '.join(f'{k} {v}' for k, v in s['outcomes'].items())} |")
    return lines + [""]


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def _headline(r: dict[str, Any]) -> list[str]:
    """Scored budget-met requests per USD and per 1,000 requests, per rate and policy."""
    lines = ["| rate (req/s) | policy | budget-met requests per USD | budget-met per 1,000 requests | accuracy "
             "| cost / 1k req (USD) |", "|---|---|---|---|---|---|"]
    order = r["meta"]["policies"]
    for s in sorted(r["sweep"], key=lambda s: (s["level"], order.index(s["policy"]) if s["policy"] in order else 99)):
        if "skipped" in s:
            lines.append(f"| {s['level']:g} | {s['policy']} | skipped: {s['skipped']} | | | |")
            continue
        per_usd = s["budget_met_rate"] * s["requests"] / s["cost_usd"] if s["cost_usd"] else None
        bold = "**" if s["policy"] == "tiergate" else ""
        lines.append(f"| {s['level']:g} | {s['policy']} | {bold}{_num(per_usd)}{bold} | "
                     f"{_num(s['budget_met_rate'] * 1000)} | {_pct(s.get('accuracy'))} | "
                     f"{_usd(s['cost_per_1k_requests_usd'])} |")
    return lines + [""]


def _rates(xs: list[float]) -> str:
    return ", ".join(f"{x:g}" for x in xs)


def _verdicts(r: dict[str, Any]) -> list[str]:
    lines = ["| rate (req/s) | tiergate: budget-met requests per USD | fixed policies | more per USD than every "
             "fixed policy | higher budget-met rate than every fixed policy |", "|---|---|---|---|---|"]
    for v in r["verdicts"]:
        fixed = ", ".join(f"{p} {x:,.0f}" for p, x in v["fixed_met_per_usd"].items())
        if v.get("skipped_fixed"):
            fixed += f" ({', '.join(v['skipped_fixed'])} skipped: saturated)"
        lines.append(f"| {v['rate']:g} | **{v['router_met_per_usd']:,.0f}** | {fixed} | "
                     f"{'yes' if v['more_met_per_usd_than_every_fixed'] else 'no'} | "
                     f"{'yes' if v['higher_met_rate_than_every_fixed'] else 'no'} |")
    beats = [v["rate"] for v in r["verdicts"] if v["more_met_per_usd_than_every_fixed"]]
    not_beats = [v["rate"] for v in r["verdicts"] if not v["more_met_per_usd_than_every_fixed"]]
    if beats:
        verdict = f"**tiergate beats every fixed policy on scored budget-met requests per USD at {_rates(beats)} req/s"
        verdict += f"; not at {_rates(not_beats)} req/s.**" if not_beats else " (every compared rate).**"
    else:
        verdict = "**tiergate beats every fixed policy on scored budget-met requests per USD at no tested rate.**"
    return lines + ["", verdict, ""]


def _floor(c: dict[str, Any]) -> str:
    if c.get("accuracy") is None:
        return ""
    text = f", accuracy {_pct(c['accuracy'])}"
    if c.get("min_quality") is not None:
        text += f" (floor {c['min_quality']:g} {'met' if c['floor_met'] else 'NOT met'})"
    return text


def _per_class(r: dict[str, Any]) -> list[str]:
    """Per class and policy at the lowest rate: share meeting every budget, measured accuracy against the
    class's floor, cost per 1k requests, and the models that answered."""
    runs = [s for s in r["sweep"] if "skipped" not in s and s["level"] == min(r["meta"]["rates"])]
    if not runs:
        return []
    policies = [s["policy"] for s in sorted(runs, key=lambda s: r["meta"]["policies"].index(s["policy"]))]
    by = {s["policy"]: s for s in runs}
    lines = [f"At {min(r['meta']['rates']):g} req/s; each cell: share meeting every budget, measured accuracy "
             "against gold (with the class's quality floor: met when accuracy >= min_quality), cost per 1,000 "
             "requests (USD), the models that answered.", "",
             "| class | " + " | ".join(policies) + " |", "|---|" + "---|" * len(policies)]
    for klass in sorted(by[policies[0]]["per_class"]):
        cells = []
        for p in policies:
            c = by[p]["per_class"].get(klass)
            cells.append("–" if not c else f"{_pct(c['budget_met_rate'])}{_floor(c)}, "
                                           f"{_usd(c['cost_per_1k_requests_usd'])}, {_mix(c['routing_mix'])}")
        lines.append(f"| {klass} | " + " | ".join(cells) + " |")
    return lines + [""]


def _pooled(r: dict[str, Any]) -> list[str]:
    """Measured accuracy per policy and labelled class over every rate, against the class's floor."""
    pooled = r.get("accuracy_pooled") or {}
    if not pooled:
        return []
    policies = [p for p in r["meta"]["policies"] if p in pooled]
    classes = sorted({k for p in policies for k in pooled[p]})
    lines = ["Every rate pooled (new items at each rate; a request without an answer counts as wrong). Each cell: "
             "correct / requests (distinct items), and for a class with a quality floor whether the measured "
             "accuracy reached it.", "",
             "| class | floor | " + " | ".join(policies) + " |", "|---|---|" + "---|" * len(policies)]
    for k in classes:
        floor = next((pooled[p][k]["min_quality"] for p in policies if k in pooled[p]), None)
        cells = []
        for p in policies:
            c = pooled[p].get(k)
            if not c:
                cells.append("–")
                continue
            verdict = "" if c["floor_met"] is None else (" met" if c["floor_met"] else " **not met**")
            n = c["distinct_items"]
            cells.append(f"{_pct(c['accuracy'])} ({c['correct']}/{c['requests']}, {n} item{'' if n == 1 else 's'})"
                         f"{verdict}")
        lines.append(f"| {k} | {'–' if floor is None else f'{floor:g}'} | " + " | ".join(cells) + " |")
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
    out += ["## Scored budget-met requests per unit cost", "", "A request meets its budget when it is answered and "
            "meets every budget its class sets: latency on the client's end-to-end time, cost on the returned usage "
            "times the pool's prices, quality on the answer itself: scored against the labelled item's gold answer "
            "(`serve.evaluation.scorer.score_item`), a quality budget is met when the answer is correct. The "
            "gateway's predicted quality is kept in `requests.jsonl` and decides nothing. Budget-met requests per "
            "USD divide the requests meeting every budget by the run's whole spend.", ""]
    out += _headline(r) + _verdicts(r)
    out += ["## Per class", ""] + _per_class(r)
    if _pooled(r):
        out += ["## Accuracy against each class's quality floor", ""] + _pooled(r)
    out += ["## Load sweep", ""] + _sweep(r) + ["## Highest rate within budget", ""] + _capacity(r)
    if r.get("overhead"):
        out += ["## Gateway overhead", ""] + _overhead(r["overhead"])
    out += ["## Plots", ""] + [f"![{p}]({p})" for p in pngs] + [""]
    if r["problems"]:
        out += ["## Problems (lost, timed out, or failed without a cause)", ""] + [f"- {p}" for p in r["problems"]]
    else:
        out += ["No request was lost, timed out, or failed without a cause."]
    return "\n".join(out) + "\n"
