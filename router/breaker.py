"""Per-model circuit breakers: stop sending traffic to a model that keeps failing.

closed --(failure_threshold consecutive failures)--> open --(reset_timeout_s)--> half-open
half-open lets one probe request through: success closes the circuit, failure re-opens it.
Written by hand (about 60 lines): the maintained breaker libraries are synchronous or tied to
one async framework, and this one must be pure and take an injected clock for tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    reset_timeout_s: float = 10.0


class _Breaker:
    __slots__ = ("state", "failures", "opened_at", "probing")

    def __init__(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False


class CircuitBreakers:
    def __init__(self, models: Iterable[str], policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self._b = {m: _Breaker() for m in models}

    def state(self, model: str) -> BreakerState:
        b = self._b[model]
        if b.state is BreakerState.OPEN and self.clock() - b.opened_at >= self.policy.reset_timeout_s:
            b.state, b.probing = BreakerState.HALF_OPEN, False
        return b.state

    def allows(self, model: str) -> bool:
        """Whether a request may go to ``model`` now (half-open: one probe at a time)."""
        state = self.state(model)
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and not self._b[model].probing

    def on_attempt(self, model: str) -> None:
        if self.state(model) is BreakerState.HALF_OPEN:
            self._b[model].probing = True

    def on_success(self, model: str) -> None:
        b = self._b[model]
        b.state, b.failures, b.probing = BreakerState.CLOSED, 0, False

    def on_failure(self, model: str) -> None:
        b = self._b[model]
        b.failures += 1
        b.probing = False
        if b.state is BreakerState.HALF_OPEN or b.failures >= self.policy.failure_threshold:
            b.state, b.opened_at = BreakerState.OPEN, self.clock()

    def on_abandoned(self, model: str) -> None:
        """An attempt ended neither well nor badly (the client left, the budget ran out): a half-open
        circuit's probe slot is free again."""
        self._b[model].probing = False

    def states(self) -> dict[str, BreakerState]:
        return {m: self.state(m) for m in self._b}
