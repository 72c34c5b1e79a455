"""Frozen value types that go into and come out of the router.

The router never sees HTTP, Ray or config files: ``serve/`` builds these from its own
objects and reads the :class:`Decision` back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class Budget:
    """What the caller will accept. ``None`` means unconstrained."""

    max_latency_ms: float | None = None
    min_quality: float | None = None
    max_cost_usd: float | None = None
    strict: bool = False
    # What an acceptable answer is worth to the caller, in USD. Set: among the models meeting every
    # budget, the router takes the one of highest expected value (this times P(acceptable), less the
    # predicted cost) instead of the cheapest. Not a limit: nothing is refused or judged on it.
    answer_value_usd: float | None = None

    def __post_init__(self) -> None:
        from router.errors import InvalidRequestError

        for name in ("max_latency_ms", "max_cost_usd", "answer_value_usd"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidRequestError(f"{name} must be > 0, got {value}", param=f"routing.{name}")
        if self.min_quality is not None and not 0.0 <= self.min_quality <= 1.0:
            raise InvalidRequestError(
                f"min_quality must be in [0, 1], got {self.min_quality}", param="routing.min_quality"
            )


@dataclass(frozen=True)
class Price:
    """Price of a model in USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, output_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True)
class LatencyPrior:
    """Latency a model is expected to have before any live observation."""

    ttft_ms: float
    tpot_ms: float
    prefill_ms_per_token: float = 0.0


@dataclass(frozen=True)
class ModelCard:
    """Static facts about one pool model that the router uses."""

    name: str
    price: Price
    prior_quality: float
    context_length: int
    latency_prior: LatencyPrior
    concurrency: int = 1  # requests one replica serves at the same time
    replicas: int = 1
    capabilities: frozenset[str] = frozenset()  # e.g. "tools", "json_schema"
    # the share of its prior speed a replica is sure of when its node is saturated (its CPUs over the
    # threads its engine runs; 1 with a device of its own): a queued request's hard limit assumes no better
    guaranteed_speed: float = 1.0


@dataclass(frozen=True)
class ModelLoad:
    """Live load on one model, as the serving layer sees it now.

    Two views of one queue. ``in_flight``: the requests the gateway has admitted to the model and
    not finished, on every ingress replica (including those still on their way to a replica).
    ``running`` and ``queued``: what the model's replicas last reported their engines doing, summed
    over replicas (including requests that did not come through the gateway); ``age_s`` is how old
    the oldest report is, None when no replica has reported. ``ttft_ms`` and ``tpot_ms`` are the
    replicas' recent time to first token (their queue included) and time per output token;
    ``drain_ms`` how long the model takes, at present, to finish one more request while busy (its
    replicas' busy time per finished request, combined); ``work_ms`` the work its replicas hold: each
    request's remaining service (its prompt and ``max_tokens`` at the pool's priors, scaled by how much
    slower than that the replica runs now), summed over requests and replicas; ``slowdown`` that
    factor (the slowest replica's): how much longer than the pool's priors the model takes now.
    ``arriving_ms``: this ingress's own requests on the model, newest admission first, each one's
    expected service (None where unknown): the newest are those still on their way to a replica,
    in no report yet, and are priced by their own prompts rather than the mean.
    """

    in_flight: int = 0
    queued: int = 0
    healthy: bool = True
    running: int = 0
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    age_s: float | None = None
    drain_ms: float | None = None
    work_ms: float | None = None
    slowdown: float | None = None
    arriving_ms: tuple[float | None, ...] = ()

    @property
    def ahead(self) -> int:
        """Requests a new one would find on the model: the larger of the two views."""
        return max(self.in_flight, self.running + self.queued)


@dataclass(frozen=True)
class RouteRequest:
    """One request as the router sees it."""

    prompt: str
    prompt_tokens: int
    max_tokens: int
    budget: Budget = field(default_factory=Budget)
    pinned_model: str | None = None
    task: str | None = None
    allowed_models: frozenset[str] | None = None  # None: every pool model (an API key may narrow it)
    requires: frozenset[str] = frozenset()  # capabilities the answering model must have
    quality_class: str | None = None  # the quality scores are the models' measured accuracy on this class


@dataclass(frozen=True)
class Prediction:
    """What the router expects of one model for one request."""

    model: str
    ttft_ms: float
    latency_ms: float
    quality: float
    cost_usd: float
    fits_latency: bool
    fits_quality: bool
    fits_cost: bool
    fits_context: bool = True
    wait_ms: float = 0.0  # the expected queueing delay behind the requests already on the model
    first_token_ms: float = 0.0  # the expected time to the first token: that wait plus the prompt's prefill
    first_token_hi_ms: float = 0.0  # the same at the quantile of the queue's live misprediction
    service_ms: float = 0.0  # its own expected time on a slot once it runs: its prefill and expected output

    @property
    def feasible(self) -> bool:
        return self.fits_latency and self.fits_quality and self.fits_cost and self.fits_context


class RouteReason(str, Enum):
    """Why a model was picked; stable strings for headers and metric labels."""

    PINNED = "pinned"
    CHEAPEST_FEASIBLE = "cheapest_feasible"
    BEST_VALUE = "best_value"  # the request (or the pool) put a value on an acceptable answer
    BEST_EFFORT = "best_effort"
    CASCADE = "cascade"
    FALLBACK = "fallback"
    BUDGET_PACED = "budget_paced"  # the key is ahead of its spend pace: the pool's default floor was lowered


@dataclass(frozen=True)
class Decision:
    """The router's answer: a model, why, and what it predicted for every candidate."""

    model: str
    reason: RouteReason
    explanation: str
    prediction: Prediction
    budget_met: bool
    unmet: tuple[str, ...] = ()
    candidates: tuple[Prediction, ...] = ()
    escalate_to: str | None = None
    escalate_below_confidence: float | None = None
    # the cheap model escalates so many of its calibrated answers that its attempt costs more than it
    # saves: the cascade goes to ``escalate_to`` without trying it
    escalate_first: bool = False
    # the candidates in the router's order of preference, when it ranked them by more than cost (the value
    # rule): admission tries them in this order when the chosen model has no room; empty: cheapest first
    preference: tuple[str, ...] = ()
