"""One request's state on its way through the gateway: the decision it was routed on, what it asked
the model for, and what has come back so far (tokens, timings, text, tool calls). When its run ends,
the gateway freezes it into one :class:`Outcome` (``Call.outcome``, built by serve/outcome.py); observers read
that, never the call."""

from __future__ import annotations

from dataclasses import dataclass, field

from router import Budget, Decision, RouteRequest
from router.admission import Priority
from router.outcome import BudgetOutcome
from serve.engines.base import GenerationRequest, ToolCall


@dataclass
class Call:
    """One routed request on its way to a model."""

    request_id: str
    endpoint: str
    requested_model: str
    decision: Decision
    generation: GenerationRequest
    budget: Budget
    stream: bool
    include_usage: bool
    created: int
    started: float
    deadline: float
    decision_s: float
    answer_by: float | None = None  # the latency budget plus the pool's overrun: answered or refused by then
    route_request: RouteRequest | None = None
    quality: dict[str, float] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    key_name: str = ""
    failovers: list[str] = field(default_factory=list)
    reserved: bool = False  # admission already counted this call in its model's in-flight
    cascade: bool = False
    cascade_from: str = ""  # the cheap model whose answer was not confident enough
    cascade_confidence: float | None = None
    cascade_cost_usd: float = 0.0
    route_class: str = ""
    # filled in while running
    ttft_s: float | None = None
    e2e_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    logprob_sum: float = 0.0
    logprob_n: int = 0
    text_parts: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    status: int = 200
    error_type: str = ""
    outcome: Outcome | None = None  # set once, when the run ends

    @property
    def model(self) -> str:
        return self.decision.model

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def mean_logprob(self) -> float | None:
        """The answer's mean token log-probability (the cascade's confidence), None without logprobs."""
        return self.logprob_sum / self.logprob_n if self.logprob_n else None


@dataclass(frozen=True)
class Outcome:
    request_id: str
    endpoint: str
    requested_model: str
    route_class: str
    key_name: str
    stream: bool
    decision: Decision  # the decision the answering model ran on (after any failover or escalation)
    decision_s: float
    generation: GenerationRequest
    route_request: RouteRequest | None
    status: int  # 200, or the HTTP status its error maps to; 499 when the client left
    error_type: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    e2e_s: float | None
    text: str
    tool_calls: tuple[ToolCall, ...]
    mean_logprob: float | None
    failovers: tuple[str, ...]
    cascade_from: str
    cascade_confidence: float | None
    cost_usd: float  # the answering model's tokens at its prices, plus a refused cheap answer's
    baseline_cost_usd: float  # the same tokens at the priciest model's prices
    budget: BudgetOutcome  # judged only for an answered request (all None otherwise)

    @property
    def model(self) -> str:
        return self.decision.model

    @property
    def answered(self) -> bool:
        return self.status == 200
