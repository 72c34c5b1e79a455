"""What one request came to (:class:`~serve.call.Outcome`): the request path's last stage, built once its run ends.

``Gateway.run`` builds one :class:`Outcome` when a request's run ends (answered, failed, refused
after admission, or cut off by the client) and every observer reads that: the telemetry record,
the response's final headers and ``tiergate`` object, the trace, the brittleness checks and the
key's spend. So the cost and whether the budgets were met are judged once, and nothing an observer
sees can change under it.
"""

from __future__ import annotations

from router import Price
from router.outcome import BudgetOutcome, judge_budget
from serve.call import Call, Outcome
from serve.telemetry.records import RequestRecord
from serve.telemetry.structured import output_checks


def conclude(call: Call, price: Price, priciest: Price) -> Outcome:
    """The call's outcome, once its run has ended: ``price`` is the answering model's."""
    cost = price.cost(call.prompt_tokens, call.completion_tokens) + call.cascade_cost_usd
    e2e_ms = None if call.e2e_s is None else call.e2e_s * 1000
    budget = judge_budget(call.budget, call.decision.prediction, e2e_ms, cost) if call.status == 200 else BudgetOutcome()
    return Outcome(
        request_id=call.request_id, endpoint=call.endpoint, requested_model=call.requested_model,
        route_class=call.route_class, key_name=call.key_name, stream=call.stream, decision=call.decision,
        decision_s=call.decision_s, generation=call.generation, route_request=call.route_request, status=call.status,
        error_type=call.error_type, finish_reason=call.finish_reason, prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens, ttft_s=call.ttft_s, e2e_s=call.e2e_s, text=call.text,
        tool_calls=tuple(call.tool_calls), mean_logprob=call.mean_logprob, failovers=tuple(call.failovers),
        cascade_from=call.cascade_from, cascade_confidence=call.cascade_confidence, cost_usd=cost,
        baseline_cost_usd=priciest.cost(call.prompt_tokens, call.completion_tokens), budget=budget)


def request_record(outcome: Outcome, *, with_prompt_text: bool) -> RequestRecord:
    """The telemetry deployment's view of an outcome (the prompt text only when drift or the recorder needs it)."""
    o = outcome
    return RequestRecord(
        endpoint=o.endpoint, requested_model=o.requested_model, model=o.model, route_reason=o.decision.reason.value,
        status=o.status, error_type=o.error_type, stream=o.stream, route_class=o.route_class,
        prompt_tokens=o.prompt_tokens, completion_tokens=o.completion_tokens, ttft_s=o.ttft_s, e2e_s=o.e2e_s,
        cost_usd=o.cost_usd, baseline_cost_usd=o.baseline_cost_usd, predicted_quality=o.decision.prediction.quality,
        predicted_latency_ms=o.decision.prediction.latency_ms, budget_latency_met=o.budget.latency,
        budget_quality_met=o.budget.quality, budget_cost_met=o.budget.cost, finish_reason=o.finish_reason,
        mean_logprob=o.mean_logprob, **output_checks(o.generation, o.text, list(o.tool_calls), answered=o.answered),
        decision_s=o.decision_s, key_name=o.key_name, failovers=o.failovers,
        prompt_text=o.route_request.prompt if with_prompt_text and o.route_request else None,
    )
