"""The one place where tiergate errors become HTTP statuses and OpenAI-style error bodies."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from router import errors as E
from serve.api.schemas import error_body

# most specific first: the first isinstance match wins
_STATUS: tuple[tuple[type[E.TiergateError], int, str], ...] = (
    (E.RequestTooLargeError, 413, "invalid_request_error"),
    (E.ContextLengthError, 400, "invalid_request_error"),
    (E.InvalidRequestError, 400, "invalid_request_error"),
    (E.AuthenticationError, 401, "authentication_error"),
    (E.PermissionDeniedError, 403, "permission_error"),
    (E.UnknownModelError, 404, "invalid_request_error"),
    (E.BudgetInfeasibleError, 422, "budget_error"),
    (E.BudgetExhaustedError, 429, "insufficient_quota"),
    (E.RateLimitError, 429, "rate_limit_error"),
    (E.EngineNotReadyError, 503, "service_unavailable"),
    (E.OverloadedError, 503, "service_unavailable"),
    (E.StoreUnavailableError, 503, "service_unavailable"),
    (E.DeadlineExceededError, 504, "timeout_error"),
    (E.EngineError, 502, "engine_error"),
    (E.ConfigError, 500, "server_error"),
    (E.TiergateError, 500, "server_error"),
)


class HttpError:
    """An error ready to send: status, OpenAI body and extra headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return str(self.body["error"]["type"])


def from_exception(err: BaseException) -> HttpError:
    if isinstance(err, ValidationError):
        return from_validation(err)
    if isinstance(err, E.TiergateError):
        status, type_ = 500, "server_error"
        for cls, st, ty in _STATUS:
            if isinstance(err, cls):
                status, type_ = st, ty
                break
        extra: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if isinstance(err, E.BudgetInfeasibleError):
            extra["unmet"] = [
                {"budget": u.budget, "requested": u.requested, "best_achievable": u.best_achievable,
                 "best_model": u.best_model} for u in err.unmet
            ]
        if isinstance(err, E.BudgetExhaustedError):
            extra["resets_at"] = err.resets_at
        retry = getattr(err, "retry_after_s", None)
        if retry is not None:
            headers["retry-after"] = str(max(1, math.ceil(retry)))
        return HttpError(status, error_body(err.message, type_, err.param, err.code, **extra), headers)
    return HttpError(500, error_body("internal error", "server_error", None, "internal_error"))


def from_validation(err: ValidationError) -> HttpError:
    first = err.errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "missing":
        msg = f"missing required parameter: {param}"
    else:
        msg = f"invalid value for {param}: {msg}" if param else msg
    more = len(err.errors()) - 1
    if more:
        msg += f" (and {more} more error{'s' if more > 1 else ''})"
    return HttpError(400, error_body(msg, "invalid_request_error", param, "invalid_value"))
