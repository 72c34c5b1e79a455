"""Shape engine chunks into OpenAI response bodies and server-sent events.

What is known only once the answer has ended (its cost, whether its budgets were met) is read from
the call's frozen :class:`~serve.call.Outcome`; before that (a stream's headers) it is the
prediction."""

from __future__ import annotations

import json
from typing import Any

from serve.engines.base import Chunk, TokenLogprob, ToolCall
from serve.call import Call, Outcome


def _finish(reason: str | None) -> str | None:
    return {"cancelled": "stop", "error": "stop"}.get(reason or "", reason) if reason else None


def _chat_logprobs(lps: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [
        {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode("utf-8")),
         "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))} for t, v in lp.top]}
        for lp in lps
    ]}


def _completion_logprobs(lps: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    offsets, pos = [], offset
    for lp in lps:
        offsets.append(pos)
        pos += len(lp.token)
    return {"tokens": [lp.token for lp in lps], "token_logprobs": [lp.logprob for lp in lps],
            "top_logprobs": [dict(lp.top) for lp in lps], "text_offset": offsets}


def _tool_calls(calls: list[ToolCall] | tuple[ToolCall, ...], streamed: bool = False) -> list[dict[str, Any]]:
    return [{**({"index": c.index} if streamed else {}), "id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def _ended(call: Call) -> Outcome:
    if call.outcome is None:
        raise RuntimeError(f"{call.request_id}: the answer's figures were asked for before its run ended")
    return call.outcome


def usage(call: Call) -> dict[str, int]:
    o = _ended(call)
    return {"prompt_tokens": o.prompt_tokens, "completion_tokens": o.completion_tokens,
            "total_tokens": o.prompt_tokens + o.completion_tokens}


def tiergate_info(call: Call) -> dict[str, Any]:
    """Our extension of the response body: the route, its predictions and the actual cost."""
    o = _ended(call)
    p = o.decision.prediction
    return {
        "model": o.model, "route_reason": o.decision.reason.value,
        "explanation": o.decision.explanation, "predicted_latency_ms": round(p.latency_ms, 1),
        "predicted_quality": round(p.quality, 4), "cost_usd": o.cost_usd,
        "latency_ms": None if o.e2e_s is None else round(o.e2e_s * 1000, 1),  # what budget_met judged
        "budget_met": o.budget.met if o.answered else False,
        "unmet": list(o.decision.unmet),
        "cascade": ({"escalated_from": o.cascade_from or None, "confidence": o.cascade_confidence}
                    if call.cascade else None),
        "candidates": [
            {"model": c.model, "predicted_latency_ms": round(c.latency_ms, 1),
             "predicted_quality": round(c.quality, 4), "predicted_cost_usd": c.cost_usd, "feasible": c.feasible}
            for c in o.decision.candidates
        ],
    }


def decision_headers(call: Call, *, final: bool) -> dict[str, str]:
    """``x-tiergate-*`` headers. Before the answer exists (streaming) cost and budget are predicted."""
    p = call.decision.prediction
    cost = _ended(call).cost_usd if final else p.cost_usd
    met = _ended(call).budget.met if final else call.decision.budget_met
    return {
        "x-tiergate-model": call.model,
        "x-tiergate-route-reason": call.decision.reason.value,
        "x-tiergate-predicted-latency-ms": f"{p.latency_ms:.1f}",
        "x-tiergate-predicted-quality": f"{p.quality:.4f}",
        "x-tiergate-cost-usd": f"{cost:.10f}",
        "x-tiergate-budget-met": "true" if met else "false",
        "x-tiergate-request-id": call.request_id,
        **({"x-tiergate-failover": ",".join(call.failovers)} if call.failovers else {}),
        **_cascade_header(call),
        **_quality_class_header(call),
    }


def _quality_class_header(call: Call) -> dict[str, str]:
    """The request class whose measured accuracy was the predicted quality, when one was."""
    qclass = call.route_request.quality_class if call.route_request is not None else None
    return {"x-tiergate-quality-class": qclass} if qclass else {}


def _cascade_header(call: Call) -> dict[str, str]:
    """Whether the cascade kept the cheap answer; known before a stream's first chunk is sent."""
    if not call.cascade or call.status != 200:
        return {}
    if call.decision.escalate_to is not None:  # still the cheap model's decision: its answer was kept
        return {"x-tiergate-cascade": "kept"}
    cheap = call.cascade_from or (call.failovers[0] if call.failovers else "")
    return {"x-tiergate-cascade": f"escalated-from={cheap}"}


def full_body(call: Call, chunks: list[Chunk]) -> dict[str, Any]:
    text = "".join(c.text for c in chunks)
    lps = [lp for c in chunks for lp in c.logprobs]
    finish = _finish(call.finish_reason)
    if call.endpoint == "chat":
        want = call.generation.sampling.logprobs
        calls = [t for c in chunks for t in c.tool_calls]
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = _tool_calls(calls)
        choice: dict[str, Any] = {"index": 0, "message": message,
                                  "logprobs": _chat_logprobs(lps) if want else None, "finish_reason": finish}
        obj = "chat.completion"
    else:
        want = call.generation.sampling.logprobs
        choice = {"index": 0, "text": text, "logprobs": _completion_logprobs(lps) if want else None,
                  "finish_reason": finish}
        obj = "text_completion"
    return {"id": call.request_id, "object": obj, "created": call.created, "model": call.model,
            "choices": [choice], "usage": usage(call), "tiergate": tiergate_info(call)}


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def stream_event(call: Call, chunk: Chunk, first: bool) -> dict[str, Any] | None:
    """One SSE chunk body, or None when the chunk carries nothing to send."""
    finish = _finish(chunk.finish_reason)
    if not chunk.text and not chunk.tool_calls and finish is None and not first:
        return None
    want = call.generation.sampling.logprobs
    lps = list(chunk.logprobs)
    if call.endpoint == "chat":
        delta: dict[str, Any] = {"content": chunk.text} if chunk.text or not first else {"content": ""}
        if first:
            delta["role"] = "assistant"
        if chunk.tool_calls:
            delta["tool_calls"] = _tool_calls(chunk.tool_calls, streamed=True)
        choice: dict[str, Any] = {"index": 0, "delta": delta,
                                  "logprobs": _chat_logprobs(lps) if want and lps else None,
                                  "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": chunk.text,
                  "logprobs": _completion_logprobs(lps) if want and lps else None, "finish_reason": finish}
        obj = "text_completion"
    return {"id": call.request_id, "object": obj, "created": call.created, "model": call.model,
            "choices": [choice]}


def usage_event(call: Call) -> dict[str, Any]:
    obj = "chat.completion.chunk" if call.endpoint == "chat" else "text_completion"
    return {"id": call.request_id, "object": obj, "created": call.created, "model": call.model,
            "choices": [], "usage": usage(call), "tiergate": tiergate_info(call)}
