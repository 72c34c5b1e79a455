"""Overload sheds early: admission bounds the predicted queueing delay, and the latency model reads the
replicas' reported load (pure unit tests on hand-built cards)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from router import Budget, LatencyModel, LatencyPrior, ModelCard, ModelLoad, Observation, Price, RouteRequest, Router
from router.admission import WaitBound, admission_order, still_within_wait, wait_bound, within_wait
from router.errors import OverloadedError


def card(name, price, ttft=100.0, tpot=10.0, prefill=1.0):
    return ModelCard(name=name, price=Price(price, price), prior_quality=0.5, context_length=4096,
                     latency_prior=LatencyPrior(ttft, tpot, prefill))


CARDS = [card("small", 0.1), card("large", 1.0, tpot=20.0)]


def router():
    return Router(CARDS, LatencyModel(CARDS, quantile=0.5), near_equal=None)


def req(budget=Budget()):
    return RouteRequest(prompt="p", prompt_tokens=20, max_tokens=50, budget=budget)


# ----------------------------------------------------------------------------- the load it reads
def test_reported_engine_load_counts_when_the_gateway_saw_less():
    lm = LatencyModel(CARDS, quantile=0.5)
    service = lm.mean_service_ms("small")
    assert lm.predict("small", 20, 50, ModelLoad()).wait_ms == 0
    # requests that did not come through this gateway: only the replica's engine knows them
    assert lm.predict("small", 20, 50, ModelLoad(running=1, queued=2)).wait_ms == pytest.approx(3 * service)
    # requests still on their way to the replica: only the gateway's leases know them
    assert lm.predict("small", 20, 50, ModelLoad(in_flight=4, running=1)).wait_ms == pytest.approx(4 * service)
    assert ModelLoad(in_flight=2, running=1, queued=3).ahead == 4


def test_the_replicas_drain_time_prices_each_request_ahead():
    lm = LatencyModel(CARDS, quantile=0.5)
    # what the replica reports it takes to finish one more request, whatever the priors say
    assert lm.predict("small", 20, 50, ModelLoad(running=1, queued=2, drain_ms=4000)).wait_ms == pytest.approx(12000)
    assert lm.predict("small", 20, 50, ModelLoad(in_flight=0, drain_ms=4000)).wait_ms == 0  # a free slot
    two = ModelCard(name="two", price=Price(1, 1), prior_quality=0.5, context_length=4096,
                    latency_prior=LatencyPrior(100, 10), replicas=2)
    lm2 = LatencyModel([two], quantile=0.5)
    # two replicas (the combined drain is already per finish of either): 3 ahead, 2 slots -> 2 finishes
    assert lm2.predict("two", 20, 50, ModelLoad(in_flight=3, drain_ms=1500)).wait_ms == pytest.approx(3000)


def test_mean_service_time_includes_the_mean_prompt_prefill():
    lm = LatencyModel(CARDS, quantile=0.5)
    for _ in range(40):  # long prompts: 400 tokens at 1 ms each
        lm.observe("small", Observation(prompt_tokens=400, output_tokens=10, ttft_ms=500, e2e_ms=590))
    snap = lm.snapshot()["small"]
    assert snap["prompt_tokens"] == pytest.approx(400, rel=0.01)
    assert lm.mean_service_ms("small") == pytest.approx(snap["ttft0_ms"] + 400 * 1.0 + snap["tpot_ms"] * 10, rel=0.02)


def test_reported_tpot_stands_in_for_the_prior_until_own_observations():
    lm = LatencyModel(CARDS, quantile=0.5)
    prior = lm.predict("small", 20, 50).e2e_ms
    reported = lm.predict("small", 20, 50, ModelLoad(tpot_ms=30.0)).e2e_ms
    assert reported == pytest.approx(prior + 50 * (30.0 - 10.0))
    lm.observe("small", Observation(prompt_tokens=20, output_tokens=11, ttft_ms=120, e2e_ms=220))
    own = lm.predict("small", 20, 50).e2e_ms
    assert lm.predict("small", 20, 50, ModelLoad(tpot_ms=30.0)).e2e_ms == pytest.approx(own)


# ----------------------------------------------------------------------------- the wait bound
def test_the_bound_holds_the_budget_and_the_pool_s_maximum_wait():
    assert wait_bound(Budget(), None) is None
    assert wait_bound(Budget(max_latency_ms=5000), None) == WaitBound(budget_ms=5000)
    assert wait_bound(Budget(max_latency_ms=5000), 2000) == WaitBound(budget_ms=5000, max_wait_ms=2000)
    assert wait_bound(Budget(), 2000) == WaitBound(max_wait_ms=2000)


def test_a_request_that_would_wait_too_long_everywhere_is_shed_at_once():
    r = router()
    loads = {"small": ModelLoad(in_flight=10), "large": ModelLoad(in_flight=10)}
    d = r.decide(req(), loads, {})
    order = admission_order(d)
    waits = {c.model: c.wait_ms for c in d.candidates}
    assert set(order) == {"small", "large"} and min(waits.values()) > 3000
    with pytest.raises(OverloadedError) as exc:
        within_wait(d, order, WaitBound(max_wait_ms=3000))
    err = exc.value
    assert err.code == "queue_wait_exceeded"
    assert err.retry_after_s == pytest.approx((min(waits.values()) - 3000) / 1000)
    assert "longer than the pool's maximum queue wait (3s)" in err.message


def test_the_shed_decision_moves_to_a_model_within_the_bound():
    r = router()
    loads = {"small": ModelLoad(running=1, queued=9)}  # small's queue is long, large is idle
    d = r.decide(req(Budget(max_latency_ms=60000)), loads, {})
    assert d.model == "small"  # still the cheapest meeting the (loose) budget
    assert within_wait(d, admission_order(d), WaitBound(max_wait_ms=2000)) == ("large",)
    assert within_wait(d, admission_order(d), None) == admission_order(d)


def test_the_budget_bounds_the_first_token_of_a_request_that_would_queue():
    r = router()
    pinned = RouteRequest(prompt="p", prompt_tokens=20, max_tokens=50, budget=Budget(max_latency_ms=400),
                          pinned_model="small")
    idle = r.decide(pinned, {}, {})
    assert not idle.budget_met and idle.prediction.first_token_ms < 400 < idle.prediction.latency_ms
    # no queue: never shed for its budget, whatever the budget (best effort, as before)
    assert within_wait(idle, admission_order(idle), WaitBound(budget_ms=1)) == ("small",)
    queued = r.decide(pinned, {"small": ModelLoad(in_flight=6)}, {})
    assert queued.prediction.wait_ms > 400
    with pytest.raises(OverloadedError, match="first token would come after about .*, past its latency budget"):
        within_wait(queued, admission_order(queued), wait_bound(Budget(max_latency_ms=400), None))
    # a short queue whose first token still fits the budget is admitted
    one = r.decide(pinned, {"small": ModelLoad(in_flight=1)}, {})
    roomy = WaitBound(budget_ms=one.prediction.first_token_ms + 1)
    assert 0 < one.prediction.wait_ms and within_wait(one, ("small",), roomy) == ("small",)


def test_the_hard_limit_is_checked_on_the_queue_s_learned_misprediction():
    """Budget + overrun is where the gateway cuts a request off: admission keeps the first token at the
    quantile of how late queued first tokens have come against their prediction (learned live) within
    it, and a whole answer's decode too."""
    lm = LatencyModel(CARDS, quantile=0.5, hard_quantile=0.9)
    r = Router(CARDS, lm, near_equal=None)
    pinned = RouteRequest(prompt="p", prompt_tokens=20, max_tokens=50, budget=Budget(max_latency_ms=10_000),
                          pinned_model="small")
    busy = {"small": ModelLoad(in_flight=6)}
    before = r.decide(pinned, busy, {}).prediction
    # nothing learned yet: a spread of about 30% (sqrt(0.1)) at the hard limit's 90% quantile
    assert 0 < before.wait_ms and before.first_token_hi_ms == pytest.approx(before.first_token_ms * 1.4999, rel=1e-3)
    # by default far out (99%): a cut-off costs the caller its whole wait, a refusal only milliseconds
    default = Router(CARDS, LatencyModel(CARDS, quantile=0.5), near_equal=None).decide(pinned, busy, {}).prediction
    assert default.first_token_hi_ms == pytest.approx(before.first_token_ms * math.exp(2.3263 * math.sqrt(0.1)),
                                                      rel=1e-3)
    with pytest.raises(ValueError, match="hard_quantile"):
        LatencyModel(CARDS, hard_quantile=1.0)
    for late in (1.3, 1.5, 1.4, 1.6, 1.5, 1.4):  # queued first tokens came 30-60% after their prediction
        lm.observe_first_token("small", 1000.0, 1000.0 * late)
    d = r.decide(pinned, busy, {})
    p = d.prediction
    assert p.first_token_hi_ms > 1.4 * p.first_token_ms  # mean ~1.45 plus the spread
    budget = p.first_token_ms + 10  # the expected first token fits the budget...
    assert within_wait(d, ("small",), WaitBound(budget_ms=budget)) == ("small",)
    with pytest.raises(OverloadedError, match="queue_wait|first token"):  # ...but not the hard limit at the quantile
        within_wait(d, ("small",), WaitBound(budget_ms=budget, hard_ms=budget + 0.2 * p.first_token_ms))
    hard = p.first_token_hi_ms + 1
    assert within_wait(d, ("small",), WaitBound(budget_ms=budget, hard_ms=hard)) == ("small",)
    with pytest.raises(OverloadedError):  # a whole answer must also decode within it
        within_wait(d, ("small",), WaitBound(budget_ms=budget, hard_ms=hard, whole=True))
    assert wait_bound(Budget(max_latency_ms=5000), None, 4500, whole=True) == WaitBound(5000, None, 9500, True)
    assert wait_bound(Budget(), 2000, 4500) == WaitBound(max_wait_ms=2000)  # no budget, no hard limit
    idle = r.decide(pinned, {}, {}).prediction  # no queue: never shed, best effort as ever
    assert idle.wait_ms == 0 and WaitBound(budget_ms=1, hard_ms=1, whole=True).excess_ms(idle) < 0


def test_retry_after_is_the_excess_and_at_least_a_second():
    r = router()
    d = r.decide(req(), {"small": ModelLoad(in_flight=1), "large": ModelLoad(in_flight=1)}, {})
    smallest = min(c.wait_ms for c in d.candidates)
    with pytest.raises(OverloadedError) as exc:
        within_wait(d, admission_order(d), WaitBound(max_wait_ms=smallest - 10))
    assert exc.value.retry_after_s == 1.0
    busy = r.decide(req(), {"small": ModelLoad(in_flight=9), "large": ModelLoad(in_flight=9)}, {})
    small = busy.prediction
    with pytest.raises(OverloadedError) as exc:
        within_wait(busy, ("small",), WaitBound(budget_ms=small.first_token_ms - 2500))
    assert exc.value.retry_after_s == pytest.approx(2.5)  # the queue must shrink by 2.5 s


def test_a_failover_queues_only_within_what_is_left_of_the_bound():
    r = router()
    d = r.decide(req(), {"large": ModelLoad(in_flight=2)}, {})
    bound = WaitBound(max_wait_ms=10_000)
    large = r.fallback(req(), {"large": ModelLoad(in_flight=2)}, {}, frozenset({"small"}))
    assert large.model == "large" and 0 < large.prediction.wait_ms < 10_000
    assert still_within_wait(large, bound, waited_ms=10_000 - large.prediction.wait_ms - 1)
    assert not still_within_wait(large, bound, waited_ms=10_000 - large.prediction.wait_ms + 1)
    budget = WaitBound(budget_ms=20_000)  # its first token, counted from when it arrived
    assert still_within_wait(large, budget, waited_ms=20_000 - large.prediction.first_token_ms - 1)
    assert not still_within_wait(large, budget, waited_ms=20_000 - large.prediction.first_token_ms + 1)
    assert still_within_wait(d, None, waited_ms=1e9)


def test_the_replicas_slowdown_scales_the_prompt_s_prefill():
    lm = LatencyModel(CARDS, quantile=0.5)
    base = lm.predict("small", 200, 10)
    slow = lm.predict("small", 200, 10, ModelLoad(slowdown=3.0))
    assert slow.ttft_ms - base.ttft_ms == pytest.approx(2 * 200 * 1.0)  # 200 tokens at 1 ms, 3x
    assert lm.predict("small", 200, 10, ModelLoad(slowdown=0.5)).ttft_ms == pytest.approx(base.ttft_ms)  # never faster


def test_the_work_the_replicas_hold_is_the_wait_when_no_slot_is_free():
    lm = LatencyModel(CARDS, quantile=0.5)
    service = lm.mean_service_ms("small")
    # one short request running, 200 ms left of it: the wait is those 200 ms, not a mean service time
    assert lm.predict("small", 20, 50, ModelLoad(in_flight=1, running=1, work_ms=200)).wait_ms == pytest.approx(200)
    # a free slot: no wait, whatever the work
    assert lm.predict("small", 20, 50, ModelLoad(running=0, work_ms=9000)).wait_ms == 0
    # two more admitted but not at the replica yet: each costs the reported drain, never less than a service time
    load = ModelLoad(in_flight=3, running=1, work_ms=200, drain_ms=50)
    assert lm.predict("small", 20, 50, load).wait_ms == pytest.approx(200 + 2 * service)
    load = ModelLoad(in_flight=3, running=1, work_ms=200, drain_ms=5000)
    assert lm.predict("small", 20, 50, load).wait_ms == pytest.approx(200 + 2 * 5000)


def test_requests_on_their_way_are_priced_by_their_own_prompts_where_this_ingress_knows_them():
    """A burst of long prompts just admitted, in no report yet, costs what those prompts cost, not the mean."""
    lm = LatencyModel(CARDS, quantile=0.5)
    service = lm.mean_service_ms("small")
    long_prompt = lm.predict("small", 3000, 50).service_ms
    assert long_prompt == pytest.approx(100 + 3000 * 1.0 + 10 * lm.expected_output_tokens("small", 50))
    # two on their way (3 in flight, 1 running); the newest two of this ingress's own are theirs
    load = ModelLoad(in_flight=3, running=1, work_ms=200, drain_ms=50, arriving_ms=(long_prompt, long_prompt, 1.0))
    assert lm.predict("small", 20, 50, load).wait_ms == pytest.approx(200 + 2 * long_prompt)
    # one known, one not (another ingress's, or a failover's): the unknown one at the mean
    load = ModelLoad(in_flight=3, running=1, work_ms=200, drain_ms=50, arriving_ms=(long_prompt, None))
    assert lm.predict("small", 20, 50, load).wait_ms == pytest.approx(200 + long_prompt + service)
    # a short prompt on its way costs its own (shorter) service
    short = lm.predict("small", 1, 1).service_ms
    load = ModelLoad(in_flight=2, running=1, work_ms=200, arriving_ms=(short,))
    assert lm.predict("small", 20, 50, load).wait_ms == pytest.approx(200 + short) and short < service


def test_the_shed_check_uses_the_expected_first_token_not_the_quantile():
    cards = [card("small", 0.1)]
    lm = LatencyModel(cards, quantile=0.9)  # the p90 uplift is wide before any observation
    d = Router(cards, lm).decide(req(), {"small": ModelLoad(in_flight=2)}, {})
    p = d.prediction
    assert p.wait_ms > 0 and p.first_token_ms < p.ttft_ms  # the uplift
    assert within_wait(d, ("small",), WaitBound(budget_ms=(p.first_token_ms + p.ttft_ms) / 2)) == ("small",)


def test_the_hard_limit_never_assumes_less_lateness_than_the_worst_recent_first_token():
    """One queued first token 1.7x late among many on time: the fitted spread alone would forget it at
    once, but admission keeps at least that much room while it is among the latest."""
    lm = LatencyModel(CARDS, quantile=0.5)
    r = Router(CARDS, lm, near_equal=None)
    pinned = RouteRequest(prompt="p", prompt_tokens=20, max_tokens=50, budget=Budget(max_latency_ms=10_000),
                          pinned_model="small")
    busy = {"small": ModelLoad(in_flight=6)}
    lm.observe_first_token("small", 1000.0, 1700.0)
    for _ in range(20):  # then twenty on time: the EWMA's mean and spread shrink toward zero
        lm.observe_first_token("small", 1000.0, 1000.0)
    p = r.decide(pinned, busy, {}).prediction
    assert p.first_token_hi_ms == pytest.approx(1.7 * p.first_token_ms, rel=1e-3)
    for _ in range(40):  # once it has left the window, the fitted spread alone is left
        lm.observe_first_token("small", 1000.0, 1000.0)
    p = r.decide(pinned, busy, {}).prediction
    assert p.first_token_ms <= p.first_token_hi_ms < 1.05 * p.first_token_ms


def test_the_hard_limit_assumes_a_co_located_model_may_run_at_its_guaranteed_share():
    """A replica with half a CPU for its one thread ran at its prior speed a moment ago, alone; once every
    model on the node is busy it may get only its half, and the queue's lateness shows that only after
    the wait. A queued first token is checked at no better than that speed, less the slowdown already
    reported; a model with a device of its own is unaffected."""
    shared = [replace(c, guaranteed_speed=0.5) for c in CARDS]
    lm = LatencyModel(shared, quantile=0.5)
    for _ in range(40):  # every queued first token on time so far
        lm.observe_first_token("small", 1000.0, 1000.0)
    busy = ModelLoad(in_flight=6)
    p = lm.predict("small", 20, 50, busy)
    assert p.wait_ms > 0
    assert p.first_token_hi_ms == pytest.approx(2.0 * p.first_token_ms, rel=1e-3)
    slowed = ModelLoad(in_flight=6, slowdown=1.6)  # already reported 1.6x slower: 1.25x more at most
    assert lm.predict("small", 20, 50, slowed).first_token_hi_ms == pytest.approx(
        1.25 * _mean_first(lm, "small", slowed), rel=1e-3)
    own = LatencyModel(CARDS, quantile=0.5)
    for _ in range(40):
        own.observe_first_token("small", 1000.0, 1000.0)
    assert own.predict("small", 20, 50, busy).first_token_hi_ms < 1.05 * _mean_first(own, "small", busy)
    assert lm.predict("small", 20, 50).first_token_hi_ms == lm.predict("small", 20, 50).first_token_ms  # no queue


def _mean_first(lm, model, load):
    return lm.predict(model, 20, 50, load).first_token_ms
