"""Every PromQL query of the dashboards and rules, with Grafana's variables filled in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.promtool import ROOT, rules

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$job": ".*", "$model": ".*", "$window": ".*"}
# metric names: tiergate_* and recorded tiergate:* series, and vLLM's two spellings
METRIC = re.compile(r"\b((?:tiergate[:_]|vllm:|ray_vllm_)[A-Za-z0-9_:]*)")
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    kind: str  # "panel" | "variable" | "record" | "alert"

    @property
    def metrics(self) -> set[str]:
        return set(METRIC.findall(self.expr))

    @property
    def vllm_only(self) -> bool:
        return bool(self.metrics) and all(m.startswith(("vllm:", "ray_vllm_")) for m in self.metrics)


def fill(expr: str) -> str:
    for var in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(var, VARIABLES[var])
    return expr


def dashboard_queries() -> list[Query]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                m = LABEL_VALUES.match(var["query"])
                assert m, f"{path.name}: variable {var['name']} is not label_values(...)"
                out.append(Query(f"{path.name} variable ${var['name']}", fill(f"group by ({m[2]}) ({m[1]})"),
                                 "variable"))
        for panel in board["panels"]:
            for target in panel.get("targets") or []:
                out.append(Query(f"{path.name} panel {panel['title']!r} {target['refId']}", fill(target["expr"]),
                                 "panel"))
    return out


def rule_queries() -> list[Query]:
    return [Query(r.get("record") or r["alert"], r["expr"], "record" if "record" in r else "alert") for r in rules()]


def all_queries() -> list[Query]:
    return dashboard_queries() + rule_queries()


def panels_without_unit() -> list[str]:
    missing = []
    for path in DASHBOARDS:
        for panel in json.loads(Path(path).read_text())["panels"]:
            if panel["type"] != "row" and not (panel.get("fieldConfig", {}).get("defaults", {}).get("unit")):
                missing.append(f"{path.name}: {panel['title']}")
    return missing
