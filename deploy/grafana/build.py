"""Generate tiergate's Grafana dashboards with grafana-foundation-sdk.

    python deploy/grafana/build.py            # writes deploy/grafana/dashboards/*.json
    python deploy/grafana/build.py --check    # fails if the committed JSON is stale

Every panel has a unit and reads the ``${datasource}`` variable; queries filter on the
``$job`` and ``$model`` variables, never on an instance.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

OUT = Path(__file__).resolve().parent / "dashboards"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'job=~"$job"'
MSEL = 'job=~"$job", model=~"$model"'
RI = "$__rate_interval"


def q(expr: str, legend: str = "") -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).datasource(DS)
    return target.legend_format(legend) if legend else target


def ratio(part: str, whole: str, window: str, by: str = "") -> str:
    """``part / whole`` of two counters' rates; 0 rather than no data while ``part`` has no series
    yet (e.g. a model that never agreed with the shadow model, a gateway without errors)."""
    agg = f"sum by ({by}) " if by else "sum "
    return (f"({agg}(rate({part}[{window}])) or {agg}(rate({whole}[{window}])) * 0) "
            f"/ {agg}(rate({whole}[{window}]))")


def ts(title: str, unit: str, *targets: prometheus.Dataquery, desc: str = "", span: int = 12,
       stack: bool = False) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DS).span(span).height(8)
    if desc:
        panel = panel.description(desc)
    if stack:
        from grafana_foundation_sdk.builders.common import StackingConfig
        from grafana_foundation_sdk.models.common import StackingMode

        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(30)
    for i, t in enumerate(targets):
        panel = panel.with_target(t.ref_id(chr(ord("A") + i)))
    return panel


def st(title: str, unit: str, target: prometheus.Dataquery, desc: str = "") -> stat.Panel:
    panel = stat.Panel().title(title).unit(unit).datasource(DS).span(6).height(4).with_target(target.ref_id("A"))
    return panel.description(desc) if desc else panel


def base(uid: str, title: str, *, model_metric: str = "tiergate_requests_total") -> dash.Dashboard:
    datasource = dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
    job = (dash.QueryVariable("job").label("Job").datasource(DS).query("label_values(tiergate_model_ready, job)")
           .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*"))
    model = (dash.QueryVariable("model").label("Model").datasource(DS)
             .query(f'label_values({model_metric}{{{SEL}}}, model)')
             .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*"))
    return (dash.Dashboard(title).uid(uid).tags(["tiergate"]).refresh("30s").time("now-6h", "now")
            .timezone("browser").with_variable(datasource).with_variable(job).with_variable(model))


def quantiles(metric: str, title: str, unit: str = "s") -> timeseries.Panel:
    targets = [q(f"histogram_quantile({p}, sum by (model, le) (rate({metric}_bucket{{{MSEL}}}[{RI}])))",
                 f"p{int(p * 100)} {{{{model}}}}") for p in (0.5, 0.9, 0.99)]
    return ts(title, unit, *targets)


# ============================================================================ overview
def overview() -> dash.Dashboard:
    d = base("tiergate-overview", "tiergate / Overview")
    d = d.with_row(dash.Row("Now"))
    d = d.with_panel(st("Requests per second", "reqps", q(f"sum(rate(tiergate_requests_total{{{MSEL}}}[{RI}]))")))
    d = d.with_panel(st("Error ratio", "percentunit",
                        q(ratio(f'tiergate_requests_total{{{MSEL}, status=~"[45].."}}',
                                f"tiergate_requests_total{{{MSEL}}}", RI))))
    d = d.with_panel(st("Savings against always-largest (1h)", "percentunit",
                        q(f"1 - sum(increase(tiergate_cost_usd_total{{{SEL}}}[1h])) "
                          f"/ sum(increase(tiergate_baseline_cost_usd_total{{{SEL}}}[1h]))"),
                        desc="1 - cost / what the same requests would have cost on the most expensive model."))
    d = d.with_panel(st("Budget met (1h)", "percentunit",
                        q(f'sum(increase(tiergate_budget_total{{{MSEL}, budget="all", outcome="met"}}[1h])) '
                          f'/ sum(increase(tiergate_budget_total{{{MSEL}, budget="all"}}[1h]))')))
    d = d.with_row(dash.Row("Traffic and routing"))
    d = d.with_panel(ts("Routing mix: requests by model", "reqps",
                        q(f"sum by (model) (rate(tiergate_requests_total{{{MSEL}}}[{RI}]))", "{{model}}"),
                        stack=True))
    d = d.with_panel(ts("Route reasons", "reqps",
                        q(f"sum by (route_reason) (rate(tiergate_requests_total{{{MSEL}}}[{RI}]))",
                          "{{route_reason}}"), stack=True))
    d = d.with_panel(ts("Requests by status", "reqps",
                        q(f"sum by (status) (rate(tiergate_requests_total{{{MSEL}}}[{RI}]))", "{{status}}")))
    d = d.with_panel(ts("Requested vs answering model", "reqps",
                        q(f"sum by (requested_model, model) (rate(tiergate_requests_total{{{MSEL}}}[{RI}]))",
                          "{{requested_model}} -> {{model}}")))
    d = d.with_row(dash.Row("Cost"))
    d = d.with_panel(ts("Cost vs always-largest baseline", "currencyUSD",
                        q(f"sum(increase(tiergate_cost_usd_total{{{SEL}}}[1h]))", "routed (per hour)"),
                        q(f"sum(increase(tiergate_baseline_cost_usd_total{{{SEL}}}[1h]))",
                          "always-largest (per hour)")))
    d = d.with_panel(ts("Cost by model (per hour)", "currencyUSD",
                        q(f"sum by (model) (increase(tiergate_cost_usd_total{{{MSEL}}}[1h]))", "{{model}}"),
                        stack=True))
    d = d.with_panel(ts("Tokens per second", "short",
                        q(f"sum by (model, kind) (rate(tiergate_tokens_total{{{MSEL}}}[{RI}]))",
                          "{{model}} {{kind}}")))
    d = d.with_panel(ts("Savings ratio (recorded, 1h)", "percentunit",
                        q(f"tiergate:savings:ratio_rate1h{{{SEL}}}", "{{job}}")))
    d = d.with_row(dash.Row("Spend and budgets"))
    d = d.with_panel(ts("Spend by key (per hour)", "currencyUSD",
                        q(f"sum by (key) (increase(tiergate_spend_usd_total{{{SEL}}}[1h]))", "{{key}}"),
                        desc="True cost charged to each API key, from usage (streams and cascades included).",
                        stack=True))
    d = d.with_panel(ts("Spend by model and route class (per hour)", "currencyUSD",
                        q(f"sum by (model, route_class) (increase(tiergate_spend_usd_total{{{MSEL}}}[1h]))",
                          "{{model}} {{route_class}}"), stack=True))
    d = d.with_panel(ts("Running savings against always-largest", "currencyUSD",
                        q(f"sum by (key) (tiergate_savings_usd{{{SEL}}})", "{{key}}"),
                        q(f"sum(tiergate_savings_usd{{{SEL}}})", "all keys"),
                        desc="What the same requests would have cost on the most expensive model minus what they "
                             "cost, since the telemetry deployment started."))
    d = d.with_panel(ts("Budget used this period", "percentunit",
                        q(f"tiergate_spend_period_usd{{{SEL}}} / tiergate_spend_budget_usd{{{SEL}}}",
                          "{{kind}} {{name}} ({{period}})"),
                        desc="Spent (in flight at its maximum) over the budget; at 100% requests get 429 "
                             "insufficient_quota until the reset."))
    d = d.with_panel(ts("Spend pace: ahead of even pace", "percentunit",
                        q(f"tiergate_spend_pace_ahead_ratio{{{SEL}}}", "{{kind}} {{name}}"),
                        desc="Fraction of the budget spent beyond even pace through the period; above 0 "
                             "routing lowers the pool's default quality floor (route reason budget_paced)."))
    d = d.with_panel(ts("Operator spend: shadow and probe calls (per hour)", "currencyUSD",
                        q(f"sum(increase(tiergate_shadow_cost_usd_total{{{SEL}}}[1h]))", "shadow"),
                        q(f"sum(increase(tiergate_probe_cost_usd_total{{{SEL}}}[1h]))", "probe"),
                        desc="Brittleness checks are the operator's spend, never charged to a key."))
    d = d.with_row(dash.Row("Budgets and health"))
    d = d.with_panel(ts("Budget met rate by budget", "percentunit",
                        q(f'sum by (budget) (rate(tiergate_budget_total{{{MSEL}, outcome="met"}}[{RI}])) '
                          f"/ sum by (budget) (rate(tiergate_budget_total{{{MSEL}}}[{RI}]))", "{{budget}}")))
    d = d.with_panel(ts("Budget SLO: missed ratio", "percentunit",
                        q(f"tiergate:budget_missed:ratio_rate5m{{{SEL}}}", "5m"),
                        q(f"tiergate:budget_missed:ratio_rate1h{{{SEL}}}", "1h"),
                        q(f"tiergate:budget_missed:ratio_rate1d{{{SEL}}}", "1d"),
                        desc="SLO: 95 % of requests meet their budget (error budget 5 %)."))
    d = d.with_panel(ts("Models ready", "bool",
                        q(f"tiergate_model_ready{{{MSEL}}}", "{{model}}"),
                        q(f"tiergate_circuit_open{{{MSEL}}}", "circuit open {{model}}")))
    d = d.with_panel(ts("In flight and failovers", "short",
                        q(f"sum by (model) (tiergate_requests_in_flight{{{MSEL}}})", "in flight {{model}}"),
                        q(f"sum by (model) (rate(tiergate_request_errors_total{{{MSEL}}}[{RI}]))",
                          "errors/s {{model}}")))
    return d


# ============================================================================ latency
def latency() -> dash.Dashboard:
    d = base("tiergate-latency", "tiergate / Latency")
    d = d.with_row(dash.Row("Gateway-measured latency per model"))
    d = d.with_panel(quantiles("tiergate_time_to_first_token_seconds", "Time to first token (p50/p90/p99)"))
    d = d.with_panel(quantiles("tiergate_time_per_output_token_seconds", "Time per output token (p50/p90/p99)"))
    d = d.with_panel(quantiles("tiergate_e2e_latency_seconds", "End-to-end latency (p50/p90/p99)"))
    d = d.with_panel(ts("Predicted vs measured p90 latency", "s",
                        q(f"histogram_quantile(0.9, sum by (model, le) "
                          f"(rate(tiergate_predicted_latency_seconds_bucket{{{MSEL}}}[{RI}])))", "predicted {{model}}"),
                        q(f"histogram_quantile(0.9, sum by (model, le) "
                          f"(rate(tiergate_e2e_latency_seconds_bucket{{{MSEL}}}[{RI}])))", "measured {{model}}")))
    d = d.with_panel(ts("Routing decision time (p50/p99)", "s",
                        q(f"histogram_quantile(0.5, sum by (le) (rate(tiergate_routing_decision_seconds_bucket"
                          f"{{{SEL}}}[{RI}])))", "p50"),
                        q(f"histogram_quantile(0.99, sum by (le) (rate(tiergate_routing_decision_seconds_bucket"
                          f"{{{SEL}}}[{RI}])))", "p99")))
    d = d.with_panel(ts("Recorded p99 (5m)", "s",
                        q(f"tiergate:e2e_latency_seconds:p99_5m{{{MSEL}}}", "e2e {{model}}"),
                        q(f"tiergate:time_to_first_token_seconds:p99_5m{{{MSEL}}}", "ttft {{model}}")))
    return d


# ============================================================================ vLLM engines
def _both(native: str, ray: str, agg: str) -> str:
    """vLLM's own spelling (``vllm:``) or the one Ray's metrics agent exports (``ray_vllm_``)."""
    return f"({agg}({native}) or {agg}({ray}))"


def engines() -> dash.Dashboard:
    d = base("tiergate-vllm", "tiergate / vLLM engines")
    d = d.with_row(dash.Row("vLLM engines (both vllm: and ray_vllm_ spellings)"))
    d = d.with_panel(ts("Requests running", "short",
                        q(_both("vllm:num_requests_running", "ray_vllm_num_requests_running", "sum by (model_name) "),
                          "{{model_name}}")))
    d = d.with_panel(ts("Requests waiting", "short",
                        q(_both("vllm:num_requests_waiting", "ray_vllm_num_requests_waiting", "sum by (model_name) "),
                          "{{model_name}}")))
    d = d.with_panel(ts("KV cache usage", "percentunit",
                        q(_both("vllm:kv_cache_usage_perc", "ray_vllm_kv_cache_usage_perc", "max by (model_name) "),
                          "{{model_name}}")))
    for title, native, ray in (
            ("vLLM time to first token p99", "vllm:time_to_first_token_seconds_bucket",
             "ray_vllm_time_to_first_token_seconds_bucket"),
            ("vLLM inter-token latency p99", "vllm:inter_token_latency_seconds_bucket",
             "ray_vllm_inter_token_latency_seconds_bucket"),
            ("vLLM end-to-end latency p99", "vllm:e2e_request_latency_seconds_bucket",
             "ray_vllm_e2e_request_latency_seconds_bucket")):
        d = d.with_panel(ts(title, "s", q(
            f"histogram_quantile(0.99, sum by (model_name, le) (rate({native}[{RI}])) "
            f"or sum by (model_name, le) (rate({ray}[{RI}])))", "{{model_name}}")))
    d = d.with_panel(ts("vLLM generated tokens per second", "short",
                        q(_both(f"rate(vllm:generation_tokens_total[{RI}])",
                                f"rate(ray_vllm_generation_tokens_total[{RI}])", "sum by (model_name) "),
                          "{{model_name}}")))
    return d


# ============================================================================ drift
def drift() -> dash.Dashboard:
    d = base("tiergate-drift", "tiergate / Drift")
    window = (dash.QueryVariable("window").label("Window").datasource(DS)
              .query(f"label_values(tiergate_drift_score{{{SEL}}}, window)")
              .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*"))
    d = d.with_variable(window)
    wsel = f'{SEL}, window=~"$window"'
    d = d.with_row(dash.Row("Drift of live traffic from the reference profile"))
    d = d.with_panel(st("Pairs above threshold", "short",
                        q(f"count(tiergate_drift_score{{{wsel}}} > tiergate_drift_threshold{{{wsel}}}) or vector(0)"),
                        desc="(feature, method, window) whose last closed window scored above its threshold."))
    d = d.with_panel(st("Reference size", "short", q(f"max(tiergate_drift_reference_records{{{SEL}}})")))
    d = d.with_panel(st("Requests in last 15m window", "short",
                        q(f'max(tiergate_drift_window_samples{{{SEL}, window=~"$window"}})')))
    d = d.with_panel(st("Windows skipped (too few requests, 1d)", "short",
                        q(f'sum(increase(tiergate_drift_windows_total{{{wsel}, outcome="skipped"}}[1d]))')))
    d = d.with_panel(ts("Score / threshold (1 = at threshold)", "short",
                        q(f"tiergate_drift_score{{{wsel}}} / tiergate_drift_threshold{{{wsel}}}",
                          "{{feature}} {{method}} {{window}}"),
                        desc="Above 1 means the window drifted; alerts fire after two consecutive 15m windows.",
                        span=24))
    for feature, title in (("prompt_tokens", "Prompt length"), ("output_tokens", "Output length"),
                           ("route_class", "Route class mix"), ("predicted_quality", "Predicted quality"),
                           ("mean_logprob", "Mean token logprob"), ("finish_reason", "Finish reasons"),
                           ("prompt_embedding", "Prompt topics (embedding centroid)")):
        fsel = f'{wsel}, feature="{feature}"'
        d = d.with_panel(ts(f"{title}: score and threshold", "short",
                            q(f"tiergate_drift_score{{{fsel}}}", "score {{method}} {{window}}"),
                            q(f"tiergate_drift_threshold{{{fsel}}}", "threshold {{method}} {{window}}"), span=8))
    d = d.with_panel(ts("Windows closed", "short",
                        q(f"sum by (window, outcome) (increase(tiergate_drift_windows_total{{{wsel}}}[1h]))",
                          "{{window}} {{outcome}}"), span=12))
    return d


# ============================================================================ brittleness
def brittleness() -> dash.Dashboard:
    d = base("tiergate-brittleness", "tiergate / Brittleness", model_metric="tiergate_output_health_total")
    d = d.with_row(dash.Row("Shadow comparison with the strongest model"))
    agree = f'outcome=~"agree|disagree"'
    d = d.with_panel(ts("Shadow agreement by model", "percentunit",
                        q(ratio(f'tiergate_shadow_requests_total{{{MSEL}, outcome="agree"}}',
                                f"tiergate_shadow_requests_total{{{MSEL}, {agree}}}", "1h", "model"),
                          "{{model}}"), desc="SLO: 90 % of shadow comparisons agree."))
    d = d.with_panel(ts("Shadow outcomes", "short",
                        q(f"sum by (model, outcome) (increase(tiergate_shadow_requests_total{{{MSEL}}}[1h]))",
                          "{{model}} {{outcome}}"), desc="Per hour, caps included (rate_capped, cost_capped, busy)."))
    d = d.with_panel(ts("Shadow agreement by route class", "percentunit",
                        q(ratio(f'tiergate_shadow_requests_total{{{MSEL}, outcome="agree"}}',
                                f"tiergate_shadow_requests_total{{{MSEL}, {agree}}}", "1h", "route_class"),
                          "{{route_class}}")))
    d = d.with_panel(ts("Shadow disagreement SLO ratio", "percentunit",
                        q(f"tiergate:shadow_disagreement:ratio_rate1h{{{MSEL}}}", "1h {{model}}"),
                        q(f"tiergate:shadow_disagreement:ratio_rate1d{{{MSEL}}}", "1d {{model}}")))
    d = d.with_row(dash.Row("Perturbation probes"))
    d = d.with_panel(ts("Probe flip rate by model", "percentunit",
                        q(f"tiergate:probe_flip:ratio_rate1h{{{MSEL}}}", "1h {{model}}"),
                        q(f"tiergate:probe_flip:ratio_rate7d{{{MSEL}}}", "baseline 7d {{model}}")))
    d = d.with_panel(ts("Probe flips by perturbation", "percentunit",
                        q(ratio(f'tiergate_probe_requests_total{{{MSEL}, outcome="flip"}}',
                                f'tiergate_probe_requests_total{{{MSEL}, outcome=~"flip|stable"}}', "1h",
                                "model, perturbation"), "{{model}} {{perturbation}}")))
    d = d.with_row(dash.Row("Calibration of the quality predictor"))
    d = d.with_panel(ts("Expected calibration error (1d)", "percentunit",
                        q(f"tiergate:calibration_ece:1d{{{MSEL}}}", "{{model}}")))
    d = d.with_panel(ts("Reliability: agreement vs confidence by bin (1d)", "percentunit",
                        q(f"sum by (model, bin) (increase(tiergate_calibration_agreements_total{{{MSEL}}}[1d])) "
                          f"/ sum by (model, bin) (increase(tiergate_calibration_requests_total{{{MSEL}}}[1d]))",
                          "agreement {{model}} {{bin}}"),
                        q(f"sum by (model, bin) (increase(tiergate_calibration_confidence_total{{{MSEL}}}[1d])) "
                          f"/ sum by (model, bin) (increase(tiergate_calibration_requests_total{{{MSEL}}}[1d]))",
                          "confidence {{model}} {{bin}}")))
    d = d.with_row(dash.Row("Output health (all traffic)"))
    d = d.with_panel(ts("Unhealthy answers by condition", "percentunit",
                        q(f'sum by (model, condition) (rate(tiergate_output_health_total{{{MSEL}, condition!="ok"}}'
                          f"[{RI}])) / ignoring(condition) group_left sum by (model) "
                          f"(rate(tiergate_output_health_total{{{MSEL}}}[{RI}]))", "{{model}} {{condition}}")))
    d = d.with_panel(ts("Mean token logprob (median)", "short",
                        q(f"histogram_quantile(0.5, sum by (model, le) (rate(tiergate_output_mean_logprob_bucket"
                          f"{{{MSEL}}}[{RI}])))", "{{model}}")))
    d = d.with_panel(ts("Finish reasons", "short",
                        q(f"sum by (model, finish_reason) (rate(tiergate_finish_reason_total{{{MSEL}}}[{RI}]))",
                          "{{model}} {{finish_reason}}"), stack=True))
    d = d.with_panel(ts("Cost of shadow and probe calls (per hour)", "currencyUSD",
                        q(f"sum by (model) (increase(tiergate_shadow_cost_usd_total{{{SEL}}}[1h]))", "shadow {{model}}"),
                        q(f"sum by (model) (increase(tiergate_probe_cost_usd_total{{{MSEL}}}[1h]))", "probe {{model}}")))
    return d


DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "tiergate-overview": overview, "tiergate-latency": latency, "tiergate-drift": drift,
    "tiergate-brittleness": brittleness, "tiergate-vllm": engines,
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON instead of writing")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for name in DASHBOARDS:
        path, text = OUT / f"{name}.json", render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run python deploy/grafana/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
