"""Scenario files: the traffic mix a load run sends, parsed once into frozen models.

A scenario names request classes (a share of the traffic, an endpoint, what to send, max_tokens
and the budgets that class asks for), the arrival process, and the default load levels of
the report. A class sends either fixed ``prompts`` or items of a labelled set (``labelled``),
whose answers are scored against gold; a class with a quality floor must use a labelled set,
since quality is judged on scored answers only. ``plan`` turns a scenario into a concrete,
seeded list of requests, so every policy in a report sees exactly the same requests in the
same order at the same times.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loadtests import labelled
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


class LabelledSpec(_Frozen):
    """Items of a labelled JSONL set, drawn once per scenario (seeded by the scenario's seed and the
    class name); a run cycles through them from a seeded starting point."""

    file: str = Field(min_length=1, description="the labelled set, relative to root")
    root: Literal["repo", "shared"] = Field(default="repo", description="repo: the repository; shared: shared_dir")
    items: int = Field(ge=1, description="how many items to draw")
    exclude: tuple[str, ...] = Field(default=(), description="JSONL files (same root) whose ids are not drawn")

    def path(self, shared_dir: str) -> Path:
        return labelled.resolve(self.file, self.root, shared_dir)

    def excluded(self, shared_dir: str) -> tuple[Path, ...]:
        return tuple(labelled.resolve(f, self.root, shared_dir) for f in self.exclude)


class RequestClass(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    weight: float = Field(gt=0, description="relative share of the traffic")
    endpoint: Literal["chat", "completions"] = "chat"
    stream: bool = True
    max_tokens: int | None = Field(default=None, ge=1, le=4096,
                                   description="required with prompts; labelled items default to their kind's")
    temperature: float = Field(default=0.7, ge=0, le=2)
    system: str | None = None
    budget: BudgetSpec = BudgetSpec()
    budget_via: Literal["body", "headers"] = "body"
    prompts: tuple[str, ...] = ()
    labelled: LabelledSpec | None = None
    drop_after_first: float = Field(default=0.0, ge=0, le=1, description="share of this class's streams the "
                                    "client drops after the first line it reads (seeded per request)")

    @model_validator(mode="after")
    def _source(self) -> "RequestClass":
        if bool(self.prompts) == (self.labelled is not None):
            raise ValueError(f"class {self.name}: give either prompts or labelled (one of them)")
        if self.prompts and self.max_tokens is None:
            raise ValueError(f"class {self.name}: max_tokens is required with prompts")
        if self.drop_after_first and not self.stream:
            raise ValueError(f"class {self.name}: drop_after_first needs stream: true")
        if self.budget.min_quality is not None and self.labelled is None:
            raise ValueError(f"class {self.name}: a quality floor (min_quality) is judged on answers scored "
                             "against gold, so the class must draw labelled items")
        return self


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
    shared_dir: str = Field(default="../shared", description="where root: shared files are; relative to the repo")
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

    def floors(self) -> dict[str, float | None]:
        """Each class's quality floor (min_quality), None where it sets none."""
        return {c.name: c.budget.min_quality for c in self.classes}

    def items(self, klass: RequestClass) -> tuple[labelled.Item, ...]:
        """The labelled items ``klass`` draws (empty for a class with fixed prompts)."""
        spec = klass.labelled
        if spec is None:
            return ()
        return labelled.draw(spec.path(self.shared_dir), spec.items, f"{self.seed}/{klass.name}",
                             spec.excluded(self.shared_dir))


def load_scenario(path: str | Path, shared_dir: str | None = None) -> Scenario:
    """Read and validate a scenario YAML file and draw its labelled items; errors name the file and
    the field. ``shared_dir`` overrides the file's own."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read scenario {path}: {err}") from None
    if shared_dir is not None and isinstance(raw, dict):
        raw = {**raw, "shared_dir": shared_dir}
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as err:
        raise ValueError(f"invalid scenario {path}:\n{err}") from None
    for c in scenario.classes:
        try:
            scenario.items(c)
        except ValueError as err:
            raise ValueError(f"invalid scenario {path}: class {c.name}: {err}") from None
    return scenario


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
    item: Mapping[str, Any] | None = None  # the labelled item sent, scored against its gold answer
    drop: bool = False  # the client hangs up after the first line of the stream


def _body(c: RequestClass, prompt: str, seed: int, max_tokens: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"max_tokens": max_tokens, "temperature": c.temperature, "seed": seed,
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


def plan(scenario: Scenario, n: int, rate: float | None, seed: int | None = None,
         item_offset: int = 0) -> list[PlannedRequest]:
    """``n`` requests in the class mix, shuffled; ``rate`` sets open-loop send times (None: all at 0).

    A labelled class takes its drawn items in turn from a seeded starting point moved on by
    ``item_offset``, so a run repeats an item only after using every other one, and runs with offsets
    ``0, n, 2n, ...`` send different items in the same classes at the same times. A planned request
    carries its item for scoring."""
    rng = np.random.default_rng(scenario.seed if seed is None else seed)
    picks = rng.permutation(class_counts(scenario, n)) if n else np.zeros(0, dtype=int)
    times = (arrival_times(scenario.arrival.process, rate, n, rng, scenario.arrival.cv)
             if rate is not None else np.zeros(n))
    items = {c.name: scenario.items(c) for c in scenario.classes}
    next_item = {c.name: int(rng.integers(len(items[c.name]))) + item_offset for c in scenario.classes
                 if items[c.name]}
    out = []
    for i, k in enumerate(picks):
        c = scenario.classes[int(k)]
        item = None
        if c.labelled is not None:
            pool = items[c.name]
            item = pool[next_item[c.name] % len(pool)]
            next_item[c.name] += 1
            prompt, max_tokens = labelled.request_text(item), c.max_tokens or labelled.max_tokens(item)
        else:
            prompt, max_tokens = c.prompts[int(rng.integers(len(c.prompts)))], c.max_tokens
        out.append(PlannedRequest(index=i, klass=c.name, endpoint=c.endpoint, at_s=float(times[i]),
                                  body=_body(c, prompt, int(rng.integers(1 << 31)), max_tokens),
                                  headers=_headers(c), budget=c.budget, item=item))
    return _drops(scenario, out)


def _drops(scenario: Scenario, reqs: list[PlannedRequest]) -> list[PlannedRequest]:
    """Mark each class's share of streams the client drops: exactly that share (rounded) of the class's
    requests, drawn apart from the plan's own generator, so a scenario without drops plans as before."""
    for c in scenario.classes:
        mine = [r.index for r in reqs if r.klass == c.name]
        if c.drop_after_first and mine:
            draw = random.Random(f"{scenario.seed}/drop/{c.name}")
            for i in draw.sample(mine, round(c.drop_after_first * len(mine))):
                reqs[i] = replace(reqs[i], drop=True)
    return reqs
