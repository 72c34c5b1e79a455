"""Scenario files: the traffic mix a load run sends, parsed once into frozen models.

A scenario names request classes (a share of the traffic, an endpoint, prompts, max_tokens
and the budgets that class asks for), the arrival process, and the default load levels of
the report. ``plan`` turns it into a concrete, seeded list of requests, so every policy in a
report sees exactly the same requests in the same order at the same times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loadtests.arrivals import PROCESSES, arrival_times

HEADER_NAMES = {"max_latency_ms": "x-tiergate-max-latency-ms", "min_quality": "x-tiergate-min-quality",
                "max_cost_usd": "x-tiergate-max-cost-usd", "strict": "x-tiergate-strict"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetSpec(_Frozen):
    max_latency_ms: float | None = Field(default=None, gt=0)
    min_quality: float | None = Field(default=None, ge=0, le=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    strict: bool = False

    def routing(self) -> dict[str, Any]:
        out = self.model_dump(exclude_none=True)
        if not self.strict:
            out.pop("strict")
        return out


class RequestClass(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    weight: float = Field(gt=0, description="relative share of the traffic")
    endpoint: Literal["chat", "completions"] = "chat"
    stream: bool = True
    max_tokens: int = Field(ge=1, le=4096)
    temperature: float = Field(default=0.7, ge=0, le=2)
    system: str | None = None
    budget: BudgetSpec = BudgetSpec()
    budget_via: Literal["body", "headers"] = "body"
    prompts: tuple[str, ...] = Field(min_length=1)


class ArrivalSpec(_Frozen):
    process: str = "poisson"
    cv: float = Field(default=1.0, gt=0, description="coefficient of variation of the gaps (gamma)")

    @model_validator(mode="after")
    def _known(self) -> "ArrivalSpec":
        if self.process not in PROCESSES:
            raise ValueError(f"unknown arrival process {self.process!r}; valid: {', '.join(sorted(PROCESSES))}")
        return self


class LoadSpec(_Frozen):
    """The report's default load levels for this scenario."""

    rates: tuple[float, ...] = Field(default=(0.5, 1.0), min_length=1, description="open-loop requests/s")
    requests_per_rate: int = Field(default=40, ge=1)
    concurrency: tuple[int, ...] = Field(default=(1, 2, 4), min_length=1, description="closed-loop levels")
    requests_per_concurrency: int = Field(default=16, ge=1)
    timeout_s: float = Field(default=120, gt=0, description="client-side limit per request")

    @model_validator(mode="after")
    def _positive(self) -> "LoadSpec":
        if any(r <= 0 for r in self.rates) or any(c < 1 for c in self.concurrency):
            raise ValueError("rates must be > 0 and concurrency levels >= 1")
        return self


class Scenario(_Frozen):
    name: str
    description: str = ""
    seed: int = 0
    arrival: ArrivalSpec = ArrivalSpec()
    load: LoadSpec = LoadSpec()
    classes: tuple[RequestClass, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "Scenario":
        names = [c.name for c in self.classes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"request class names must be unique; repeated: {', '.join(dupes)}")
        return self

    def klass(self, name: str) -> RequestClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"no request class {name!r}; valid: {', '.join(c.name for c in self.classes)}")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file; errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read scenario {path}: {err}") from None
    try:
        return Scenario.model_validate(raw)
    except ValidationError as err:
        raise ValueError(f"invalid scenario {path}:\n{err}") from None


@dataclass(frozen=True)
class PlannedRequest:
    """One request of a run, before a policy fills in the model."""

    index: int
    klass: str
    endpoint: str
    at_s: float  # open-loop send time, from the start of the run
    body: dict[str, Any]
    headers: dict[str, str]
    budget: BudgetSpec


def _body(c: RequestClass, prompt: str, seed: int) -> dict[str, Any]:
    body: dict[str, Any] = {"max_tokens": c.max_tokens, "temperature": c.temperature, "seed": seed,
                            "stream": c.stream}
    if c.stream:
        body["stream_options"] = {"include_usage": True}
    if c.endpoint == "chat":
        msgs = [{"role": "system", "content": c.system}] if c.system else []
        body["messages"] = msgs + [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if c.budget_via == "body" and c.budget.routing():
        body["routing"] = c.budget.routing()
    return body


def _headers(c: RequestClass) -> dict[str, str]:
    if c.budget_via != "headers":
        return {}
    return {HEADER_NAMES[k]: str(v).lower() if isinstance(v, bool) else f"{v:g}"
            for k, v in c.budget.routing().items()}


def class_counts(scenario: Scenario, n: int) -> np.ndarray:
    """Class indices for ``n`` requests in proportion to the weights (largest remainder), so
    that even a short run carries the scenario's mix rather than a lucky or unlucky draw."""
    weights = np.array([c.weight for c in scenario.classes], dtype=float)
    exact = weights / weights.sum() * n
    counts = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    return np.repeat(np.arange(len(weights)), counts)


def plan(scenario: Scenario, n: int, rate: float | None, seed: int | None = None) -> list[PlannedRequest]:
    """``n`` requests in the class mix, shuffled; ``rate`` sets open-loop send times (None: all at 0)."""
    rng = np.random.default_rng(scenario.seed if seed is None else seed)
    picks = rng.permutation(class_counts(scenario, n)) if n else np.zeros(0, dtype=int)
    times = (arrival_times(scenario.arrival.process, rate, n, rng, scenario.arrival.cv)
             if rate is not None else np.zeros(n))
    out = []
    for i, k in enumerate(picks):
        c = scenario.classes[int(k)]
        prompt = c.prompts[int(rng.integers(len(c.prompts)))]
        out.append(PlannedRequest(index=i, klass=c.name, endpoint=c.endpoint, at_s=float(times[i]),
                                  body=_body(c, prompt, int(rng.integers(1 << 31))), headers=_headers(c),
                                  budget=c.budget))
    return out
