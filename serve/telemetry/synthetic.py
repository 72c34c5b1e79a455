"""Seeded synthetic traffic: prompts on chosen topics and the RequestRecords they would produce.

Used to exercise drift, dashboards and alert rules without a model in the loop (tests, the
metrics demo target, load-free dashboard checks). Distributions are explicit parameters so
that a test can draw traffic "like the reference" or deliberately shifted (other prompt
lengths, other topics). Prompt text is produced only to be embedded; records never carry it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from serve.telemetry.records import RequestRecord

TOPICS: dict[str, tuple[str, ...]] = {
    "cooking": ("How long should I bake {x} in the oven?", "What spices go well with {x}?",
                "Give me a quick recipe that uses {x}.", "Can I freeze leftover {x}?"),
    "coding": ("How do I reverse a {x} in Python?", "Why does my {x} throw a null pointer exception?",
               "Write a unit test for a function that sorts a {x}.", "What is the time complexity of searching a {x}?"),
    "law": ("Is a verbal {x} legally binding?", "What are my rights if my landlord breaks the {x}?",
            "How do I contest a {x} in court?", "Who is liable when a {x} is breached?"),
    "medicine": ("What are the early symptoms of {x}?", "Which tests diagnose {x}?",
                 "How is {x} usually treated in adults?", "Is {x} contagious?"),
}
FILLERS: dict[str, tuple[str, ...]] = {
    "cooking": ("salmon", "sourdough bread", "lasagna", "roasted vegetables", "banana muffins", "chicken thighs"),
    "coding": ("linked list", "hash map", "binary tree", "string", "array", "queue"),
    "law": ("contract", "lease agreement", "parking fine", "warranty", "employment contract", "will"),
    "medicine": ("diabetes", "influenza", "asthma", "migraine", "anemia", "pneumonia"),
}
ROUTE_CLASS = {"cooking": "chat", "coding": "code", "law": "reasoning", "medicine": "reasoning"}
KEYS = ("team-a", "team-b")  # the API key names the traffic comes from


@dataclass(frozen=True)
class TrafficShape:
    """What the traffic looks like: topics and their weights, prompt and answer lengths."""

    topics: tuple[str, ...] = ("cooking", "coding")
    prompt_tokens_mean: float = 40.0
    output_tokens_mean: float = 60.0
    max_tokens: int = 128
    models: tuple[str, ...] = ("small", "large")
    model_weights: tuple[float, ...] = (0.7, 0.3)
    error_rate: float = 0.02
    miss_rate: float = 0.05  # requests whose latency budget is missed
    refusal_rate: float = 0.02  # answers that refuse


def prompts(shape: TrafficShape, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``n`` (topic, prompt text) pairs drawn from the shape's topics."""
    out = []
    for _ in range(n):
        topic = shape.topics[int(rng.integers(len(shape.topics)))]
        template = TOPICS[topic][int(rng.integers(len(TOPICS[topic])))]
        out.append((topic, template.format(x=FILLERS[topic][int(rng.integers(len(FILLERS[topic])))])))
    return out


def records(shape: TrafficShape, n: int, *, seed: int = 0,
            embed: Callable[[Sequence[str]], np.ndarray] | None = None) -> list[RequestRecord]:
    """``n`` records drawn from ``shape``; ``embed`` (texts -> matrix) fills ``prompt_embedding``."""
    rng = np.random.default_rng(seed)
    drawn = prompts(shape, n, rng)
    vectors = None
    if embed is not None:  # embed each distinct prompt once
        distinct = sorted({p for _, p in drawn})
        table = dict(zip(distinct, embed(distinct), strict=True))
        vectors = [table[p] for _, p in drawn]
    weights = np.asarray(shape.model_weights) / np.sum(shape.model_weights)
    out = []
    for i, (topic, _) in enumerate(drawn):
        model = shape.models[int(rng.choice(len(shape.models), p=weights))]
        failed = rng.random() < shape.error_rate
        prompt_tokens = max(1, int(rng.poisson(shape.prompt_tokens_mean)))
        completion = 0 if failed else min(shape.max_tokens, max(1, int(rng.poisson(shape.output_tokens_mean))))
        truncated = completion >= shape.max_tokens
        ttft = float(rng.gamma(4.0, 0.02)) + prompt_tokens * 0.0008
        e2e = ttft + completion * float(rng.gamma(6.0, 0.004))
        large = model == shape.models[-1]
        cost = (prompt_tokens * (0.05 if large else 0.02) + completion * (0.15 if large else 0.06)) / 1e6
        out.append(RequestRecord(
            endpoint="chat", requested_model="auto", model="" if failed else model, key_name=KEYS[i % len(KEYS)],
            route_reason="cheapest_feasible" if not large else "best_effort",
            status=503 if failed else 200, error_type="engine_unavailable" if failed else "",
            route_class=ROUTE_CLASS[topic], prompt_tokens=prompt_tokens, completion_tokens=completion,
            ttft_s=None if failed else ttft, e2e_s=None if failed else e2e,
            cost_usd=0.0 if failed else cost,
            baseline_cost_usd=0.0 if failed else (prompt_tokens * 0.05 + completion * 0.15) / 1e6,
            predicted_quality=float(rng.beta(6, 3) if large else rng.beta(4, 4)),
            predicted_latency_ms=e2e * 1000 * float(rng.uniform(0.8, 1.2)),
            budget_latency_met=bool(rng.random() >= shape.miss_rate), budget_quality_met=True,
            budget_cost_met=True, finish_reason="" if failed else ("length" if truncated else "stop"),
            mean_logprob=None if failed else float(-rng.gamma(2.0, 0.4)),
            empty_output=completion == 0 and not failed,
            refused=not failed and rng.random() < shape.refusal_rate, decision_s=float(rng.gamma(2.0, 0.001)),
            prompt_embedding=tuple(float(v) for v in vectors[i]) if vectors is not None else (),
        ))
    return out
