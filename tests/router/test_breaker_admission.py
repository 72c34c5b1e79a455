"""Circuit breakers and admission control (pure policies, injected clock)."""

from __future__ import annotations

import pytest

from router.admission import Capacity, Priority, admit, admits
from router.breaker import BreakerPolicy, BreakerState, CircuitBreakers
from router.errors import OverloadedError


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_threshold_probes_and_closes():
    clock = Clock()
    b = CircuitBreakers(["m"], BreakerPolicy(failure_threshold=3, reset_timeout_s=10), clock)
    for _ in range(2):
        b.on_failure("m")
    assert b.allows("m") and b.state("m") is BreakerState.CLOSED
    b.on_failure("m")
    assert b.state("m") is BreakerState.OPEN and not b.allows("m")
    clock.t = 9.9
    assert not b.allows("m")
    clock.t = 10.0
    assert b.state("m") is BreakerState.HALF_OPEN and b.allows("m")
    b.on_attempt("m")
    assert not b.allows("m")  # one probe at a time
    b.on_success("m")
    assert b.state("m") is BreakerState.CLOSED and b.allows("m")


def test_failed_probe_reopens():
    clock = Clock()
    b = CircuitBreakers(["m"], BreakerPolicy(failure_threshold=1, reset_timeout_s=5), clock)
    b.on_failure("m")
    clock.t = 5
    b.on_attempt("m")
    b.on_failure("m")
    assert b.state("m") is BreakerState.OPEN
    clock.t = 9
    assert not b.allows("m")


def test_success_resets_failure_count():
    b = CircuitBreakers(["m"], BreakerPolicy(failure_threshold=2), Clock())
    b.on_failure("m")
    b.on_success("m")
    b.on_failure("m")
    assert b.state("m") is BreakerState.CLOSED


def test_admission_shares_by_priority():
    cap = Capacity(slots=4, queue=6)  # 10 in total
    assert admits(4, cap, Priority.LOW) and not admits(5, cap, Priority.LOW)
    assert admits(7, cap, Priority.NORMAL) and not admits(9, cap, Priority.NORMAL)
    assert admits(9, cap, Priority.HIGH) and not admits(10, cap, Priority.HIGH)


def test_admit_moves_to_next_model_then_sheds_with_retry_after():
    caps = {"a": Capacity(1, 1), "b": Capacity(1, 1)}
    assert admit(["a", "b"], {"a": 2, "b": 0}, caps, Priority.HIGH, {}) == "b"
    with pytest.raises(OverloadedError) as exc:
        admit(["a", "b"], {"a": 2, "b": 2}, caps, Priority.HIGH, {"a": 4000, "b": 3000})
    assert exc.value.retry_after_s == pytest.approx(3.0)


def test_a_request_may_lower_its_priority_but_never_raise_it():
    from router.admission import effective_priority

    assert effective_priority(Priority.NORMAL, None) is Priority.NORMAL
    assert effective_priority(Priority.NORMAL, Priority.LOW) is Priority.LOW
    assert effective_priority(Priority.NORMAL, Priority.HIGH) is Priority.NORMAL
    assert effective_priority(Priority.LOW, Priority.HIGH) is Priority.LOW
    assert effective_priority(Priority.HIGH, Priority.NORMAL) is Priority.NORMAL
