"""Admission control: shed early, by priority, when the eligible models are saturated, and
by queueing delay, when they would keep the request waiting longer than it may.

Each model's capacity is what its replicas hold at once (running plus queued). A request of a
given priority class is admitted to a model only while that model's in-flight count is below
its class's share of the capacity, so low-priority traffic is shed first and high-priority
traffic keeps headroom. When no eligible model admits the request, the caller gets a
``Retry-After`` from the expected time for one queue slot to free up.

Queueing delay is bounded too: a model admits a request only while the wait the router
predicted for it there (``Prediction.wait_ms``, from the work already on the model) is within
the pool's maximum queue wait and, when it would have to wait at all, while its expected first
token (``Prediction.first_token_ms``: that wait plus its own prefill) is within its latency
budget. Expected, not at the budget's quantile: the quantile's uplift is learned on answered
requests and, under overload, would refuse requests the model can serve in time. A request no
model can take within these is refused at once (``queue_wait_exceeded``) rather than left to
wait out its deadline, with a ``Retry-After`` of the time until the nearest model is back within
them. A request that would not wait is never shed for its budget: it gets the closest model,
best effort, as before. Admitted requests are never shed for load later (the gateway only cuts
one off at its hard limit, the budget plus the pool's overrun, which admission checks on the
first token at the quantile of the queue's learned misprediction); a request whose model failed
before its first token fails over only to a model it can still wait for within what is left of
its bound (:func:`still_within_wait`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from router.errors import OverloadedError
from router.types import Budget, Decision, Prediction, RouteReason


class Priority(str, Enum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


SHARE = {Priority.HIGH: 1.0, Priority.NORMAL: 0.85, Priority.LOW: 0.5}


def effective_priority(granted: Priority, asked: Priority | None) -> Priority:
    """A request runs at its key's priority, or lower when it asks for less; asking never raises it."""
    return granted if asked is None else min(asked, granted, key=lambda p: SHARE[p])


@dataclass(frozen=True)
class Capacity:
    slots: int  # requests served at once across replicas
    queue: int  # requests that may wait across replicas

    @property
    def total(self) -> int:
        return self.slots + self.queue


def slot_limit(cap: Capacity, priority: Priority) -> int:
    """How many requests a model may hold in flight while it still admits one of ``priority``."""
    return max(1, int(cap.total * SHARE[priority]))


def admits(in_flight: int, cap: Capacity, priority: Priority) -> bool:
    return in_flight < slot_limit(cap, priority)


def saturated(order: Sequence[str], capacity: Mapping[str, Capacity], priority: Priority,
              service_ms: Mapping[str, float]) -> OverloadedError:
    """The error for a request no model of ``order`` admits, with the expected wait for one slot."""
    waits = [service_ms.get(m, 1000.0) / max(1, capacity[m].slots) for m in order] or [1000.0]
    return OverloadedError(
        f"every eligible model is saturated for {priority.value}-priority requests; retry later",
        retry_after_s=max(1.0, min(waits) / 1000.0),
    )


def admit(order: Sequence[str], in_flight: Mapping[str, int], capacity: Mapping[str, Capacity],
          priority: Priority, service_ms: Mapping[str, float]) -> str:
    """The first model of ``order`` (the router's preference) that admits the request.

    Raises OverloadedError with a retry hint when none does.
    """
    for model in order:
        if admits(in_flight.get(model, 0), capacity[model], priority):
            return model
    raise saturated(order, capacity, priority, service_ms)


def admission_order(decision: Decision) -> tuple[str, ...]:
    """Where admission may send a routed request, in the router's preference: its model, then
    (unless pinned) the other candidates that fit the context, in the decision's ``preference``
    where the router ranked them (the value rule), else cheapest first; while the decision meets
    its budgets, only the others that meet them too."""
    order = [decision.model]
    if decision.reason is not RouteReason.PINNED:
        rank = {m: i for i, m in enumerate(decision.preference)}
        rest = sorted((c for c in decision.candidates if c.model != decision.model and c.fits_context
                       and (c.feasible or not decision.budget_met)),
                      key=lambda c: (rank.get(c.model, len(rank)), c.cost_usd, c.model))
        order += [c.model for c in rest]
    return tuple(order)


def redirected(decision: Decision, chosen: str) -> Decision:
    """The decision for the model admission chose: the router's own when it had room, else the
    same route moved to ``chosen``, its budgets judged on ``chosen``'s own prediction."""
    if chosen == decision.model:
        return decision
    pred = next(c for c in decision.candidates if c.model == chosen)
    unmet = tuple(name for name, ok in zip(("latency", "quality", "cost"),
                                           (pred.fits_latency, pred.fits_quality, pred.fits_cost)) if not ok)
    return replace(decision, model=chosen, prediction=pred, budget_met=pred.feasible, unmet=unmet,
                   explanation=f"{decision.model} is saturated; {chosen} has room")


@dataclass(frozen=True)
class WaitBound:
    """What queueing may cost a request: while it would have to wait for a slot, its expected first
    token within its latency budget, and its wait within the pool's maximum queue wait. Either
    limit may be absent. ``hard_ms`` (the budget plus the pool's overrun, where the gateway cuts a
    request off): the first token at the quantile of the queue's live misprediction
    (``Prediction.first_token_hi_ms``), and for a ``whole`` answer its decode too, within it."""

    budget_ms: float | None = None
    max_wait_ms: float | None = None
    hard_ms: float | None = None
    whole: bool = False

    def excess_ms(self, pred: Prediction, waited_ms: float = 0.0) -> float:
        """How far past its limits queueing for ``pred``'s model takes a request that has already
        waited ``waited_ms``; at most 0 when within them."""
        over = [-math.inf]
        if self.max_wait_ms is not None:
            over.append(waited_ms + pred.wait_ms - self.max_wait_ms)
        if self.budget_ms is not None and pred.wait_ms > 0:  # no queue, no shedding: best effort as ever
            over.append(waited_ms + pred.first_token_ms - self.budget_ms)
            if self.hard_ms is not None:
                decode = max(0.0, pred.latency_ms - pred.ttft_ms) if self.whole else 0.0
                over.append(waited_ms + max(pred.first_token_hi_ms, pred.first_token_ms) + decode - self.hard_ms)
        return max(over)


def wait_bound(budget: Budget, max_queue_wait_ms: float | None, overrun_ms: float | None = None,
               whole: bool = False) -> WaitBound | None:
    """The request's limits on queueing: its latency budget (plus the pool's overrun, if any: the
    hard limit) and the pool's maximum queue wait; ``whole``: the answer is not streamed."""
    if budget.max_latency_ms is None and max_queue_wait_ms is None:
        return None
    hard = None if overrun_ms is None or budget.max_latency_ms is None else budget.max_latency_ms + overrun_ms
    return WaitBound(budget.max_latency_ms, max_queue_wait_ms, hard, whole)


def _prediction(decision: Decision, model: str) -> Prediction:
    if model == decision.model:
        return decision.prediction
    return next(c for c in decision.candidates if c.model == model)


def within_wait(decision: Decision, order: Sequence[str], bound: WaitBound | None) -> tuple[str, ...]:
    """The models of ``order`` (in that order) the request may queue for within ``bound``.

    Raises OverloadedError (``queue_wait_exceeded``) when there is none, with a ``Retry-After``
    of the time until the nearest of them is back within the bound (at least 1 s).
    """
    if bound is None:
        return tuple(order)
    preds = [_prediction(decision, m) for m in order]
    fits = tuple(p.model for p in preds if bound.excess_ms(p) <= 0)
    if fits or not preds:
        return fits
    # the queue must shrink by the excess (never by more than the whole wait)
    best = min(preds, key=lambda p: min(bound.excess_ms(p), p.wait_ms))
    retry_after_s = max(1.0, min(bound.excess_ms(best), best.wait_ms) / 1000.0)
    if bound.max_wait_ms is not None and best.wait_ms > bound.max_wait_ms:
        why = f"longer than the pool's maximum queue wait ({bound.max_wait_ms / 1000:g}s)"
    else:
        why = (f"so its first token would come after about {best.first_token_ms / 1000:.1f}s, past its latency budget "
               f"({(bound.budget_ms or 0) / 1000:g}s)")
    raise OverloadedError(
        f"every eligible model would keep this request waiting about {best.wait_ms / 1000:.1f}s for a slot, "
        f"{why}; retry later", retry_after_s=retry_after_s, code="queue_wait_exceeded")


def still_within_wait(decision: Decision, bound: WaitBound | None, waited_ms: float) -> bool:
    """Whether a request that has waited ``waited_ms`` already (its first model failed) may still
    queue for ``decision``'s model within its bound."""
    return bound is None or bound.excess_ms(decision.prediction, waited_ms) <= 0
