"""Sampling with rate, cost and concurrency caps for shadow and probe calls.

:class:`BudgetedSampler` first draws with probability ``rate``; a drawn request then needs a
token from a request-rate bucket, its estimated cost from a USD bucket, and a free in-flight
slot. The ingress makes the draw itself (:func:`draw`) and asks the telemetry deployment, which
holds the caps, only about the drawn requests (a Ray call per answered request was ~10% of its
CPU). The token buckets are hand-written (a dozen lines; they take explicit ``now`` values so
tests need no clock).
"""

from __future__ import annotations

import random
import threading
from collections import deque

from pydantic import BaseModel, ConfigDict, Field

SAMPLED = "sampled"
UNSAMPLED = "unsampled"
RATE_CAPPED = "rate_capped"
COST_CAPPED = "cost_capped"
BUSY = "busy"


class SamplerConfig(BaseModel):
    """How much extra traffic shadow or probe calls may add."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=0.02, ge=0.0, le=1.0, description="fraction of eligible requests drawn")
    max_per_minute: float = Field(default=30.0, ge=0.0, description="drawn calls allowed per minute (sustained)")
    burst: int = Field(default=5, ge=1, description="calls allowed at once above the sustained rate")
    max_cost_usd_per_hour: float | None = Field(default=1.0, ge=0.0, description="None = no cost cap")
    max_in_flight: int = Field(default=2, ge=1)
    slot_timeout_s: float = Field(default=300.0, gt=0, description="an in-flight slot never released (its caller "
                                  "died) is freed after this long")


class TokenBucket:
    """``capacity`` tokens, refilled at ``per_second``; ``take`` fails rather than waits."""

    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        self.capacity, self.per_second = capacity, per_second
        self.tokens, self.stamp = capacity, now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_second)
            self.stamp = now

    def can_take(self, amount: float, now: float) -> bool:
        self._refill(now)
        return self.tokens >= amount

    def take(self, amount: float, now: float) -> bool:
        if not self.can_take(amount, now):
            return False
        self.tokens -= amount
        return True


def draw(rng: random.Random, config: SamplerConfig) -> bool:
    """The rate draw alone, for a caller that asks for the caps only when it is drawn (``decide(drawn=True)``)."""
    return config.rate > 0 and rng.random() < config.rate


class BudgetedSampler:
    """Decides whether one request gets an extra (shadow or probe) call; thread-safe."""

    def __init__(self, config: SamplerConfig, *, seed: int = 0, now: float = 0.0) -> None:
        self.config = config
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rate = TokenBucket(config.burst, config.max_per_minute / 60.0, now)
        hourly = config.max_cost_usd_per_hour
        self._cost = None if hourly is None else TokenBucket(hourly, hourly / 3600.0, now)
        self._slots: deque[float] = deque()  # start times of the calls in flight, oldest first

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    def decide(self, est_cost_usd: float, now: float, *, drawn: bool = False) -> str:
        """One of ``sampled`` (then call :meth:`done` when the call ends), ``unsampled``,
        ``rate_capped``, ``cost_capped`` or ``busy``. ``drawn``: the caller already drew this request
        with probability ``rate`` (:func:`draw`), so only the caps are checked here."""
        with self._lock:
            if not drawn and not draw(self._rng, self.config):
                return UNSAMPLED
            while self._slots and now - self._slots[0] > self.config.slot_timeout_s:
                self._slots.popleft()  # its caller never reported back
            if len(self._slots) >= self.config.max_in_flight:
                return BUSY
            if not self._rate.can_take(1.0, now):
                return RATE_CAPPED
            if self._cost is not None and not self._cost.can_take(est_cost_usd, now):
                return COST_CAPPED
            self._rate.take(1.0, now)
            if self._cost is not None:
                self._cost.take(est_cost_usd, now)
            self._slots.append(now)
            return SAMPLED

    def done(self) -> None:
        with self._lock:
            if self._slots:
                self._slots.popleft()
