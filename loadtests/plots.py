"""PNG plots of a report: scored budget-met requests per USD over load, latency over load, goodput
over load, cost against budgets met, measured accuracy per class against its floor, and gateway
overhead over concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"tiergate": "tab:green", "always-smallest": "tab:blue", "always-largest": "tab:red",
          "random": "tab:gray"}


def _by_policy(sweep: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for s in sweep:
        if "skipped" not in s:
            out.setdefault(s["policy"], []).append(s)
    for runs in out.values():
        runs.sort(key=lambda s: s["level"])
    return out


def met_per_usd_over_load(sweep: list[dict[str, Any]], path: Path) -> Path:
    """The headline: requests meeting every budget (quality: scored correct) per USD, per policy."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for policy, runs in _by_policy(sweep).items():
        x = [s["level"] for s in runs]
        y = [s["budget_met_rate"] * s["requests"] / s["cost_usd"] if s["cost_usd"] else 0.0 for s in runs]
        lw = 2.2 if policy == "tiergate" else 1.2
        ax.plot(x, y, marker="o", lw=lw, color=COLORS.get(policy), label=policy)
        ax2.plot(x, [s["budget_met_rate"] * 1000 for s in runs], marker="o", lw=lw, color=COLORS.get(policy),
                 label=policy)
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("budget-met requests per USD")
    ax.set_title("scored budget-met requests per USD (higher is better)")
    ax2.set_xlabel("offered load (requests/s)")
    ax2.set_ylabel("budget-met requests per 1,000 requests")
    ax2.set_ylim(0, 1050)
    ax2.set_title("scored budget-met requests per 1,000 requests")
    for a in (ax, ax2):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_by_class(sweep: list[dict[str, Any]], path: Path) -> Path:
    """Measured accuracy of each labelled class per policy at the lowest rate, with the class's floor."""
    runs = [s for s in sweep if "skipped" not in s]
    level = min((s["level"] for s in runs), default=0)
    runs = [s for s in runs if s["level"] == level]
    classes = sorted({k for s in runs for k, c in s["per_class"].items() if c.get("accuracy") is not None})
    fig, ax = plt.subplots(figsize=(max(6.5, 1.8 * len(classes) + 2), 4.2))
    width = 0.8 / max(1, len(runs))
    for j, s in enumerate(runs):
        ys = [(s["per_class"].get(k) or {}).get("accuracy") or 0.0 for k in classes]
        ax.bar([i + j * width for i in range(len(classes))], [y * 100 for y in ys], width,
               color=COLORS.get(s["policy"]), label=s["policy"])
    for i, k in enumerate(classes):
        floor = next((s["per_class"][k].get("min_quality") for s in runs if k in s["per_class"]), None)
        if floor is not None:
            ax.hlines(floor * 100, i - width / 2, i + 0.8 - width / 2, colors="black", linestyles="--", lw=1)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))], classes)
    ax.set_ylabel("answers correct (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"accuracy against gold per class at {level:g} req/s (dashed: the class's quality floor)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_over_load(sweep: list[dict[str, Any]], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title in ((axes[0], "e2e_ms", "end-to-end latency"), (axes[1], "ttft_ms", "time to first token")):
        for policy, runs in _by_policy(sweep).items():
            x = [s["level"] for s in runs]
            for q, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
                y = [s[metric][q] for s in runs]
                ax.plot(x, y, style, marker="o", ms=3, color=COLORS.get(policy), label=f"{policy} {q}")
        ax.set_xlabel("offered load (requests/s, Poisson)")
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def goodput_over_load(sweep: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    top = 0.0
    for policy, runs in _by_policy(sweep).items():
        x = [s["level"] for s in runs]
        ax.plot(x, [s["goodput_rps"] for s in runs], marker="o", color=COLORS.get(policy), label=policy)
        top = max(top, *x)
    ax.plot([0, top], [0, top], color="black", lw=0.7, alpha=0.4, label="offered load")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("goodput (requests meeting every budget / s)\nquality: scored answers")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost_vs_budget_met(sweep: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    for policy, runs in _by_policy(sweep).items():
        x = [s["cost_per_1k_requests_usd"] for s in runs]
        y = [s["budget_met_rate"] * 100 for s in runs]
        ax.plot(x, y, marker="o", ls="-", lw=0.8, color=COLORS.get(policy), label=policy)
        for xi, yi, s in zip(x, y, runs):
            ax.annotate(f"{s['level']:g}/s", (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel("cost per 1,000 requests (USD)")
    ax.set_ylabel("requests meeting every budget (%, quality scored)")
    ax.set_title("cost against budgets met (up and left is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def overhead(result: dict[str, Any], path: Path) -> Path:
    levels = result["levels"]
    x = [lv["concurrency"] for lv in levels]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for tier, color in (("gateway-inprocess", "tab:orange"), ("gateway-http", "tab:purple")):
        for q, style in (("p50", "-"), ("p99", "--")):
            y = [lv["overhead"][tier]["added_e2e_ms"][q] for lv in levels]
            ax.plot(x, y, style, marker="o", color=color, label=f"{tier} {q}")
        ax2.plot(x, [lv["overhead"][tier]["throughput_ratio"] for lv in levels], marker="o", color=color, label=tier)
    ax.axhline(0, color="black", lw=0.7)
    ax.set_xlabel("concurrency (closed loop)")
    ax.set_ylabel("added end-to-end latency vs engine (ms)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    ax2.axhline(1, color="black", lw=0.7)
    ax2.set_xlabel("concurrency (closed loop)")
    ax2.set_ylabel("throughput ratio (gateway / engine)")
    ax2.legend(fontsize=8)
    ax2.grid(True, alpha=0.3)
    fig.suptitle(f"gateway overhead on {result['model']} (max_tokens {result['max_tokens']}, greedy)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
