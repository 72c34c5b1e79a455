"""The ingress's view of a model's replicas (serve/replica_load.py): newest report per replica,
the ingress's own finished requests taken out at once, silent replicas dropped, the sum handed to
the router; and the replica's meter on the real SmolLM2 engine in-process. Through Ray Serve (every
replica polled, reports riding on the stream) in test_replica_load_e2e.py."""

from __future__ import annotations

import pytest

from router.latency import LatencyModel
from serve.config import load_pool
from router.types import LatencyPrior
from serve.engines.base import EngineLoad, GenerationRequest, SamplingParams
from serve.replica_load import LoadView, ReplicaLoad, ReplicaMeter, WorkLedger, prompt_tokens
from tests.conftest import CPU_POOL


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def r(replica, seq, running=0, waiting=0, **kw):
    return ReplicaLoad(replica=replica, seq=seq, running=running, waiting=waiting, **kw)


def test_no_report_leaves_the_gateway_count_alone():
    load = LoadView().model_load(3, True)
    assert (load.in_flight, load.running, load.queued, load.age_s, load.ahead) == (3, 0, 0, None, 3)


def test_replicas_are_summed_and_the_newest_report_of_each_wins():
    clock = Clock()
    view = LoadView(clock)
    view.polled([r("a", 5, running=1, waiting=2, ttft_ms=100, tpot_ms=10), r("b", 9, running=1, tpot_ms=30)])
    view.report(r("a", 4, running=0))  # older than what we have from a: ignored
    clock.t += 0.4
    load = view.model_load(0, True)
    assert (load.running, load.queued, load.ahead) == (2, 2, 4)
    assert load.ttft_ms == 100 and load.tpot_ms == 20 and load.age_s == pytest.approx(0.4)
    view.report(r("a", 6, running=1, waiting=0))
    assert view.model_load(0, True).queued == 0


def test_own_requests_leave_the_count_when_they_end():
    view = LoadView(Clock())
    view.report(r("a", 1, running=1), holder=7)  # piggybacked on our request 7's stream: it counts itself
    assert view.model_load(1, True).running == 1
    view.ended("a", 7)  # a sequential client's next request must not wait behind the one that just ended
    assert view.model_load(0, True).ahead == 0
    view.ended("a", 7)  # twice changes nothing
    view.report(r("a", 2, running=0))
    assert view.model_load(0, True).running == 0


def test_an_own_request_running_when_a_poll_was_taken_counts_in_it():
    view = LoadView(Clock())
    view.report(r("a", 1, running=1), holder=1)
    view.polled([r("a", 2, running=2)])  # taken while 1 ran, with someone else's request beside it
    view.ended("a", 1)
    assert view.model_load(0, True).running == 1
    # a late report from an earlier moment, carried by our request 2, still says 2 ran at the newer one
    view.report(r("a", 3, running=2), holder=2)
    view.report(r("a", 2, running=1), holder=3)
    view.ended("a", 3)
    assert view.model_load(0, True).running == 1


def test_a_silent_replica_is_dropped_after_the_max_age():
    clock = Clock()
    view = LoadView(clock, max_age_s=5)
    view.polled([r("a", 1, running=1), r("b", 1, running=1)])
    clock.t += 4
    view.polled([r("b", 2, running=1)])  # a did not answer this poll
    assert view.model_load(0, True).running == 2
    clock.t += 1.5
    load = view.model_load(0, True)
    assert load.running == 1 and load.age_s == pytest.approx(1.5)  # a is too old to count
    view.polled([])
    clock.t += 10
    assert view.model_load(2, True).ahead == 2 and view.model_load(2, True).age_s is None


def test_replicas_drain_in_parallel():
    view = LoadView(Clock())
    view.polled([r("a", 1, running=1, drain_ms=2000), r("b", 1, running=1, drain_ms=2000)])
    assert view.model_load(0, True).drain_ms == pytest.approx(1000)  # two replicas finish twice as often
    view.polled([r("c", 1)])  # a replica that has finished nothing yet: no combined figure
    assert view.model_load(0, True).drain_ms is None


class _Engine:
    """Stands in for an engine's load figures: the meter's arithmetic is what is tested here."""

    def load(self) -> EngineLoad:
        return EngineLoad()


async def _batches(clock: Clock, steps: list[float]):
    for dt in steps:
        clock.t += dt
        yield []


async def _drive(meter: ReplicaMeter, clock: Clock, steps: list[float]) -> None:
    async for _ in meter.metered(_batches(clock, steps)):
        pass


async def test_drain_is_busy_time_per_finished_request():
    clock = Clock()
    meter = ReplicaMeter(_Engine(), "x", clock)
    assert meter.report().drain_ms is None
    await _drive(meter, clock, [3.0])  # one request kept the replica busy 3 s
    assert meter.report().drain_ms == pytest.approx(3000)
    clock.t += 100  # idle time is not counted
    await _drive(meter, clock, [2.0])
    assert meter.report().drain_ms == pytest.approx(2800)  # the mean: 3000 + 0.2 * (2000 - 3000)
    await _drive(meter, clock, [9.0])
    assert meter.report().drain_ms == pytest.approx(9000)  # a slowdown shows at once: the last one
    a = meter.metered(_batches(clock, [1.0, 1.0]))
    await a.__anext__()  # a in at t, first batch at t+1
    b = meter.metered(_batches(clock, [1.0]))
    await b.__anext__()  # b in at t+1, a batch at t+2
    await b.aclose()  # b done at t+2: 2 s busy since the last finish
    await a.aclose()  # a done at the same moment: no more busy time
    mean = 2800 + 0.2 * (9000 - 2800)
    mean += 0.2 * (2000 - mean)
    mean *= 0.8
    assert meter.report().drain_ms == pytest.approx(mean)  # two finished in 2 s: the mean comes down
    long = meter.metered(_batches(clock, [10.0]))
    await long.__anext__()  # busy 10 s since the last finish: the next one takes at least that long
    assert meter.report().drain_ms == pytest.approx(10000) and mean < 10000
    await long.aclose()


def _gen(words: int, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(request_id="w", prompt="word " * words, sampling=SamplingParams(max_tokens=max_tokens))


def test_the_work_a_replica_holds_follows_each_request_s_own_size():
    clock = Clock()
    ledger = WorkLedger(LatencyPrior(ttft_ms=100, tpot_ms=10, prefill_ms_per_token=5), 1, clock)
    assert ledger.work_ms() == 0 and ledger.factor() == 1.0
    short, long = _gen(4, 8), _gen(300, 48)  # 6 and 376 prompt tokens at four characters a token
    assert (prompt_tokens(short), prompt_tokens(long)) == (6, 376)
    ledger.enter(1, short)  # runs at once: prefill 130 ms nominal, decode 80
    ledger.enter(2, long)  # waits: prefill 1980 ms nominal, decode 480
    assert ledger.work_ms() == pytest.approx((130 + 80) + (1980 + 480))
    clock.t += 0.39  # the short one's prefill took three times nominal
    ledger.first_token(1, prompt=6)
    assert ledger.factor() == pytest.approx(3.0)  # so the long one's prefill is priced at three times too
    assert ledger.work_ms() == pytest.approx(80 + 3 * 1980 + 480)
    clock.t += 0.07  # its 7 more tokens at nominal speed
    ledger.leave(1, output=8)
    assert ledger.work_ms() == pytest.approx(3 * 1980 + 480)  # decode factor 1: learned apart from prefill
    clock.t += 2.97  # half its prefill done at that speed
    assert ledger.work_ms() == pytest.approx(2970 + 480)
    clock.t += 5.0  # still in prefill past what the factor said: the factor follows, nothing goes negative
    assert ledger.factor() == pytest.approx(7.97 / 1.98) and ledger.work_ms() == pytest.approx(480)
    ledger.leave(2, output=0)  # cancelled before its first token: teaches the decode factor nothing
    assert ledger.work_ms() == 0 and ledger.factor() == pytest.approx(3.0)


def test_a_cached_prompt_s_quick_prefill_does_not_make_the_next_prompt_look_cheap():
    """A prompt that repeats the one before is mostly in llama.cpp's prefix cache: its prefill takes a
    tenth of nominal. The next prompt may share nothing, so its prefill is never priced below nominal."""
    clock = Clock()
    ledger = WorkLedger(LatencyPrior(ttft_ms=100, tpot_ms=10, prefill_ms_per_token=5), 1, clock)
    for key in range(5):
        ledger.enter(key, _gen(300, 48))
        clock.t += 0.198  # a tenth of its 1980 ms nominal prefill
        ledger.first_token(key, prompt=376)
        ledger.leave(key, output=0)
    ledger.enter(9, _gen(300, 48))
    assert ledger.factor() == 1.0 and ledger.work_ms() == pytest.approx(1980 + 480)


def test_own_ended_requests_leave_the_reported_work():
    view = LoadView(Clock())
    view.report(r("a", 1, running=1, waiting=1, work_ms=4000), holder=1)
    assert view.model_load(0, True).work_ms == 4000
    view.ended("a", 1)
    assert view.model_load(0, True).work_ms == pytest.approx(2000)  # one of the two it held is gone
    view.polled([r("b", 1)])  # a replica without a figure: no combined one
    assert view.model_load(0, True).work_ms is None


def test_the_latency_model_sees_what_the_replicas_report():
    pool = load_pool(CPU_POOL)
    small = pool.model("smollm2-135m-instruct").card()
    lm = LatencyModel([small])
    view = LoadView(Clock())
    idle = lm.predict(small.name, 20, 16, view.model_load(0, True))
    view.polled([r("x", 1, running=1, waiting=1)])
    busy = lm.predict(small.name, 20, 16, view.model_load(0, True))
    assert busy.wait_ms == pytest.approx(2 * lm.mean_service_ms(small.name)) and idle.wait_ms == 0
    assert busy.e2e_ms > idle.e2e_ms + lm.mean_service_ms(small.name)


@pytest.mark.e2e
async def test_the_meter_reports_the_engine_and_its_streams_timing():
    """The real SmolLM2 engine in-process: the first batch carries a report of it running, the stream's
    TTFT and TPOT go into the replica's means."""
    from serve.coalesce import coalesce
    from serve.engines import GenerationRequest, SamplingParams, build_engine

    engine = build_engine(load_pool(CPU_POOL).model("smollm2-135m-instruct"))
    await engine.start()
    try:
        meter = ReplicaMeter(engine, "here")
        before = meter.report()
        assert (before.replica, before.running, before.waiting, before.ttft_ms, before.tpot_ms) == ("here", 0, 0,
                                                                                                     None, None)
        req = GenerationRequest(request_id="m", prompt="Count: one, two, three,",
                                sampling=SamplingParams(max_tokens=12, temperature=0.0))
        batches = [b async for b in meter.metered(coalesce(engine.stream(req)))]
        first = batches[0][0]
        assert isinstance(first, ReplicaLoad) and first.running == 1 and first.seq > before.seq
        reports = [i for b in batches for i in b if isinstance(i, ReplicaLoad)]
        chunks = [i for b in batches for i in b if not isinstance(i, ReplicaLoad)]
        assert len(reports) >= 1 and chunks[-1].finish_reason and chunks[-1].completion_tokens > 1
        after = meter.report()
        assert after.running == 0 and after.ttft_ms > 0 and after.tpot_ms > 0
    finally:
        await engine.stop()
