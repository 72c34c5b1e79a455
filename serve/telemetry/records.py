"""The compact per-request record the ingress sends to the telemetry deployment.

It carries no prompt or completion text (privacy by default): only sizes, timings, the
routing decision and output-health signals. ``prompt_embedding`` is a small float vector
(the router's sentence embedding) used only for embedding drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestRecord:
    endpoint: str  # "chat" | "completions"
    requested_model: str  # what the caller asked for ("auto" or a pool model)
    model: str  # what answered ("" when nothing did)
    route_reason: str  # router.types.RouteReason value, or "none"
    status: int  # HTTP status sent to the caller
    error_type: str = ""
    stream: bool = False
    key_name: str = ""
    route_class: str = ""  # coarse task/route class for drift and brittleness breakdowns
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    e2e_s: float | None = None
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0  # what the most expensive model would have cost
    predicted_quality: float | None = None
    predicted_latency_ms: float | None = None
    budget_latency_met: bool | None = None  # measured against the caller's budget
    budget_quality_met: bool | None = None  # predicted (quality has no live ground truth)
    budget_cost_met: bool | None = None
    finish_reason: str = ""
    mean_logprob: float | None = None
    empty_output: bool = False
    refused: bool = False
    structured_output: str = ""  # serve.telemetry.structured: valid | unparsable | schema_invalid | "" (not judged)
    output_format: str = ""  # what the answer had to be: json | tool_call | "" (free text)
    decision_s: float | None = None
    failovers: tuple[str, ...] = ()  # models that failed before this one answered
    prompt_embedding: tuple[float, ...] = field(default=(), repr=False)
    # In memory only, and only when embedding drift or the recorder needs it: the telemetry
    # deployment embeds it and drops it; it is never logged or written unless the recorder's
    # include_prompt_text is set.
    prompt_text: str | None = field(default=None, repr=False, compare=False)
