"""What a request asks of the router, read from its body and ``x-tiergate-*`` headers: the
budget, the text the quality predictor sees, a coarse traffic class and a prompt-size estimate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from router import Budget
from router.admission import Priority, effective_priority
from router.errors import InvalidRequestError
from serve.api.schemas import ChatCompletionRequest, CompletionRequest, RoutingOptions

BUDGET_HEADERS = {
    "max_latency_ms": "x-tiergate-max-latency-ms",
    "min_quality": "x-tiergate-min-quality",
    "max_cost_usd": "x-tiergate-max-cost-usd",
    "strict": "x-tiergate-strict",
    "answer_value_usd": "x-tiergate-answer-value-usd",
}

def budget_from(routing: RoutingOptions | None, headers: Mapping[str, str]) -> Budget | None:
    """The caller's budget: the body's ``routing`` object wins over ``x-tiergate-*`` headers."""
    values: dict[str, Any] = {}
    for name, header in BUDGET_HEADERS.items():
        raw = headers.get(header)
        if raw is None:
            continue
        if name == "strict":
            if raw.strip().lower() not in ("true", "false", "1", "0"):
                raise InvalidRequestError(f"header {header} must be true or false", param=header)
            values[name] = raw.strip().lower() in ("true", "1")
            continue
        try:
            values[name] = float(raw)
        except ValueError:
            raise InvalidRequestError(f"header {header} must be a number, got {raw[:32]!r}", param=header) from None
    try:
        merged = RoutingOptions.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        header = BUDGET_HEADERS.get(str(first["loc"][0]), "x-tiergate-*")
        raise InvalidRequestError(f"header {header}: {first['msg']}", param=header) from None
    if routing is not None:
        merged = merged.model_copy(update=routing.model_dump(exclude_none=True))
    if not merged.model_dump(exclude_none=True):
        return None
    return Budget(merged.max_latency_ms, merged.min_quality, merged.max_cost_usd, bool(merged.strict),
                  merged.answer_value_usd)


def routing_text(req: ChatCompletionRequest | CompletionRequest) -> str:
    """The text the quality predictor sees: the user turns of a chat, or the prompt."""
    if isinstance(req, CompletionRequest):
        return req.prompt_text()
    users = [m.text() for m in req.messages if m.role == "user"]
    return "\n".join(users) if users else req.messages[-1].text()


def route_class(pinned: bool, asked: Budget | None) -> str:
    """A coarse traffic class from what the caller asked for: pinned, or which budgets it set."""
    if pinned:
        return "pinned"
    if asked is None:
        return "default"
    set_ = [n for n, v in (("latency", asked.max_latency_ms), ("quality", asked.min_quality),
                           ("cost", asked.max_cost_usd), ("value", asked.answer_value_usd)) if v is not None]
    return "+".join(set_) if set_ else "default"


def quality_class(req: ChatCompletionRequest | CompletionRequest) -> str | None:
    """The request class whose measured accuracy predicts this request's quality, or None (the
    prompt is scored): ``tools`` when the model may call one of the request's tools, ``json_schema``
    when the answer is constrained JSON (``json_schema`` or ``json_object``). A tool-result turn
    answered with ``tool_choice: none`` is text, so it has no class."""
    if not isinstance(req, ChatCompletionRequest):
        return None
    if req.uses_tools():
        return "tools"
    if req.response_format is not None and req.response_format.type != "text":
        return "json_schema"
    return None


def estimate_tokens(text: str) -> int:
    """A cheap prompt-size estimate for routing; engines count exactly."""
    return max(1, (len(text.encode("utf-8")) + 3) // 4)


MESSAGE_OVERHEAD_TOKENS = 4  # a chat template's role markers and separators, per message


def prompt_text(req: ChatCompletionRequest | CompletionRequest) -> str:
    """Everything the model reads besides its template: every message of a chat (system prompt,
    earlier turns and tool results included), the calls of earlier assistant turns, and the tool
    definitions and answer schema, which the template writes into the prompt. The quality predictor
    sees :func:`routing_text` instead; cost, latency and token quotas follow this."""
    if isinstance(req, CompletionRequest):
        return req.prompt_text()
    parts = [m.text() for m in req.messages]
    parts += [c.function.name + c.function.arguments for m in req.messages for c in m.tool_calls or ()]
    if req.tools:
        parts += [t.model_dump_json(exclude_none=True) for t in req.tools]
    if req.response_format is not None and req.response_format.type != "text":
        parts.append(req.response_format.model_dump_json(exclude_none=True))
    return "\n".join(p for p in parts if p)


def estimate_prompt_tokens(req: ChatCompletionRequest | CompletionRequest, text: str | None = None) -> int:
    """The request's prompt size for routing (cost and latency predictions): :func:`prompt_text`
    at four bytes a token, plus the template's tokens per message. ``text``: that prompt text, when
    the caller has it already."""
    messages = len(req.messages) if isinstance(req, ChatCompletionRequest) else 0
    return estimate_tokens(prompt_text(req) if text is None else text) + MESSAGE_OVERHEAD_TOKENS * messages


def priority_from(key_priority: Priority, headers: Mapping[str, str]) -> Priority:
    """The key's priority class, as the x-tiergate-priority header asks (``router.admission``: lower only)."""
    raw = headers.get("x-tiergate-priority")
    try:
        asked = None if raw is None else Priority(raw.strip().lower())
    except ValueError:
        raise InvalidRequestError("x-tiergate-priority must be one of high, normal, low",
                                  param="x-tiergate-priority") from None
    return effective_priority(key_priority, asked)
