"""The one exception tree of tiergate.

Everything tiergate raises on purpose derives from :class:`TiergateError`. Only ``serve/``
turns these into HTTP statuses (see ``serve/api/errors.py``); the router and the engines
raise them without knowing about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class TiergateError(Exception):
    """Base of every error tiergate raises on purpose."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def __reduce__(self):  # keep errors picklable across Ray process boundaries
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[TiergateError], state: dict[str, Any]) -> TiergateError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ConfigError(TiergateError):
    """A configuration file or value is invalid."""


class RegistryError(ConfigError):
    """An unknown name was looked up in a registry; the message lists the valid names."""


class ProfileError(ConfigError):
    """A quality profile is missing, unreadable, or does not match the pool."""


class InvalidRequestError(TiergateError):
    """The caller sent a request that cannot be served as it is (HTTP 400)."""


class RequestTooLargeError(InvalidRequestError):
    """The request body is larger than the gateway accepts (HTTP 413)."""


class ContextLengthError(InvalidRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""


class UnknownModelError(TiergateError):
    """The caller named a model the pool does not have (HTTP 404)."""


@dataclass(frozen=True)
class UnmetBudget:
    """One budget the router could not meet, with the best value any model achieves."""

    budget: str
    requested: float
    best_achievable: float
    best_model: str


class BudgetInfeasibleError(TiergateError):
    """A strict request whose budgets no model can meet (HTTP 422)."""

    def __init__(self, message: str, unmet: tuple[UnmetBudget, ...] = ()) -> None:
        super().__init__(message, param="routing", code="budget_infeasible")
        self.unmet = unmet


class AuthenticationError(TiergateError):
    """No valid API key (HTTP 401)."""


class PermissionDeniedError(TiergateError):
    """The key may not use this model or endpoint (HTTP 403)."""


class RateLimitError(TiergateError):
    """A quota or admission limit was hit (HTTP 429); ``retry_after_s`` tells when to retry."""

    def __init__(self, message: str, *, retry_after_s: float, code: str = "rate_limit_exceeded") -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class BudgetExhaustedError(RateLimitError):
    """A key's (or its team's) spend budget cannot pay for the request before the period resets
    (HTTP 429, ``insufficient_quota`` as OpenAI names it); ``resets_at`` is the reset, ISO 8601."""

    def __init__(self, message: str, *, retry_after_s: float, resets_at: str) -> None:
        super().__init__(message, retry_after_s=retry_after_s, code="insufficient_quota")
        self.resets_at = resets_at


class OverloadedError(TiergateError):
    """Every eligible model is saturated, or would keep the request waiting too long (HTTP 503 with
    ``Retry-After``); ``code`` says which: ``overloaded`` or ``queue_wait_exceeded``."""

    def __init__(self, message: str, *, retry_after_s: float, code: str = "overloaded") -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class LatencyBudgetExceededError(OverloadedError):
    """An admitted request had no answer (a stream: no first token) by its latency budget plus the
    pool's stated overrun: cancelled and refused (HTTP 503 with ``Retry-After``), not left waiting."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s, code="latency_budget_exceeded")


class EngineError(TiergateError):
    """An engine failed to start or to generate (HTTP 502 when it reaches the caller)."""


class EngineNotReadyError(EngineError):
    """The engine has not finished loading its model."""


class DeadlineExceededError(TiergateError):
    """The request ran past its deadline and was cancelled (HTTP 504)."""


class StoreUnavailableError(TiergateError):
    """The shared state store (quotas, in-flight leases, spend) could not be reached (HTTP 503)."""

    retry_after_s = 1.0
