"""The request path (route, run, record) with the in-repo fake engine: fault injection and
accounting, no Ray. The real-model behaviour is covered in test_gateway_e2e.py."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from router.errors import DeadlineExceededError, EngineError, InvalidRequestError, LatencyBudgetExceededError
from router.quality import PriorQuality
from serve.api.schemas import ChatCompletionRequest, RoutingOptions
from serve.clients import EngineClient
from serve.config import parse_pool
from serve.engines.fake import FakeArgs, FakeEngine
from serve.api.requests import budget_from
from serve.gateway import Gateway
from tests.serve.ingress_app import threshold


def pool(timeout=30.0, overrun_ms=None, slots=None, **fake):
    models = []
    for name, price, q in (("cheap", 0.1, 0.3), ("dear", 1.0, 0.8)):
        models.append({"name": name, "engine": "fake", "quantization": "none", "context_length": 512,
                       "price": {"input_per_mtok": price, "output_per_mtok": price},
                       "prior_quality": q, "latency_prior": {"ttft_ms": 5, "tpot_ms": 1},
                       "engine_args": fake, **({"max_ongoing_requests": slots} if slots else {})})
    limits = {"request_timeout_s": timeout, **({"budget_overrun_ms": overrun_ms} if overrun_ms else {})}
    return parse_pool({"name": "t", "models": models, "limits": limits})


async def make(timeout=30.0, overrun_ms=None, slots=None, **fake):
    p = pool(timeout, overrun_ms, slots, **fake)
    records = []
    clients = {}
    for m in p.models:
        engine = FakeEngine(m, FakeArgs(**m.engine_args))
        await engine.start()
        clients[m.name] = EngineClient(engine)
    gw = Gateway(p, clients, PriorQuality({m.name: m.prior_quality for m in p.models}), records.append)
    return gw, records


def chat(**kw):
    return ChatCompletionRequest.model_validate({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                                                 **kw})


async def test_route_and_run_records_one_request():
    gw, records = await make(reply="one two three")
    call = await gw.route("chat", chat(max_tokens=10), {})
    chunks = [c async for c in gw.run(call)]
    assert call.model == "cheap" and "".join(c.text for c in chunks) == "one two three"
    (rec,) = records
    assert rec.status == 200 and rec.model == "cheap" and rec.completion_tokens == 3
    assert rec.cost_usd < rec.baseline_cost_usd and rec.ttft_s is not None
    assert gw.in_flight == {"cheap": 0, "dear": 0}
    assert gw.latency.snapshot()["cheap"]["observations"] == 1


async def test_a_run_ends_in_one_frozen_outcome_that_its_record_is_read_from():
    gw, records = await make(reply="one two three")
    call = await gw.route("chat", chat(max_tokens=10, routing={"max_cost_usd": 1.0}), {})
    assert call.outcome is None  # not before the run has ended
    [c async for c in gw.run(call)]
    out, (rec,) = call.outcome, records
    assert (out.model, out.status, out.text, out.completion_tokens) == ("cheap", 200, "one two three", 3)
    assert out.cost_usd == gw.router.card("cheap").price.cost(out.prompt_tokens, 3) == rec.cost_usd
    assert out.baseline_cost_usd == gw.router.card("dear").price.cost(out.prompt_tokens, 3) == rec.baseline_cost_usd
    assert out.budget.met and rec.budget_cost_met is True and out.e2e_s == rec.e2e_s
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.cost_usd = 0.0  # type: ignore[misc]


async def test_engine_failure_is_recorded_and_raised():
    gw, records = await make(fail_before_first_token=True)
    call = await gw.route("chat", chat(), {})
    with pytest.raises(EngineError):
        [c async for c in gw.run(call)]
    assert records[0].status == 502 and gw.in_flight["cheap"] == 0


async def test_deadline_cancels():
    gw, records = await make(timeout=0.05, ttft_ms=500)
    call = await gw.route("chat", chat(), {})
    with pytest.raises(DeadlineExceededError):
        [c async for c in gw.run(call)]
    assert records[0].status == 504 and records[0].error_type == "DeadlineExceededError"


def budgeted(ms, **kw):
    return chat(routing=RoutingOptions(max_latency_ms=ms), **kw)


async def test_a_first_token_later_than_budget_plus_overrun_is_refused_with_retry_after():
    """The stream's first token would come at 400 ms; budget 50 ms + overrun 100 ms: a 503 at ~150 ms,
    no failover (the other model is not broken), no breaker failure, the slot freed."""
    gw, records = await make(overrun_ms=100, ttft_ms=400)
    call = await gw.route("chat", budgeted(50, stream=True), {})
    t0 = gw.clock()
    with pytest.raises(LatencyBudgetExceededError, match=r"no first token .*\(50 ms\).*\(100 ms\)") as err:
        [c async for c in gw.run(call)]
    waited = gw.clock() - t0
    assert 0.1 <= waited < 0.35 and err.value.retry_after_s >= 1 and err.value.code == "latency_budget_exceeded"
    assert records[0].status == 503 and not call.failovers
    assert gw.breakers.allows(call.model) and gw.breakers._b[call.model].failures == 0
    assert gw.in_flight == {"cheap": 0, "dear": 0}


async def test_a_whole_answer_is_bounded_too_but_a_started_stream_is_not():
    """A whole answer (not streamed) must end by budget + overrun; a stream that has begun may run on."""
    gw, _ = await make(overrun_ms=100, ttft_ms=1, tpot_ms=60, reply=" ".join(["w"] * 6))  # ~360 ms in all
    call = await gw.route("chat", budgeted(50), {})
    with pytest.raises(LatencyBudgetExceededError, match="no answer"):
        [c async for c in gw.run(call)]
    call = await gw.route("chat", budgeted(50, stream=True), {})
    chunks = [c async for c in gw.run(call)]
    assert "".join(c.text for c in chunks).split() == ["w"] * 6


async def test_a_queued_request_cut_off_teaches_admission_that_the_queue_runs_late():
    """One slot, two requests: the second queues on a prediction of ~0.1 s, is cut off at 0.3 s
    (budget 200 ms + overrun 100 ms) and its wait, a lower bound, raises the learned misprediction."""
    gw, _ = await make(overrun_ms=100, slots=1, ttft_ms=600)
    assert gw.capacity["cheap"].slots == 1
    calls = [await gw.route("chat", budgeted(200, model="cheap", stream=True), {}) for _ in range(2)]
    assert calls[0].decision.prediction.wait_ms == 0 < calls[1].decision.prediction.wait_ms
    assert calls[1].decision.prediction.first_token_ms < 200

    async def run(call):
        with pytest.raises(LatencyBudgetExceededError):
            [c async for c in gw.run(call)]

    await asyncio.gather(*(run(c) for c in calls))
    snap = gw.latency.snapshot()["cheap"]
    assert snap["first_token_err_mean"] > 0.2  # only the queued one taught it: log(>=300 / ~100) * alpha
    again = await gw.route("chat", budgeted(200, model="cheap", stream=True), {})
    assert again.decision.prediction.first_token_hi_ms == again.decision.prediction.first_token_ms  # no queue now


async def test_without_an_overrun_an_admitted_request_runs_past_its_budget():
    gw, records = await make(ttft_ms=200)
    call = await gw.route("chat", budgeted(50, stream=True), {})
    assert call.answer_by is None
    assert "".join([c.text async for c in gw.run(call)])
    assert records[0].status == 200


async def test_only_a_budget_the_request_asked_for_is_a_hard_limit():
    """The pool's default latency budget routes; it does not cut off a request that asked for none."""
    p = pool(overrun_ms=100, ttft_ms=300)
    p = p.model_copy(update={"routing": p.routing.model_copy(update={"max_latency_ms": 50.0})})
    gw = Gateway(p, {m.name: EngineClient(FakeEngine(m, FakeArgs(**m.engine_args))) for m in p.models},
                 PriorQuality({m.name: m.prior_quality for m in p.models}), lambda r: None)
    for c in gw.clients.values():
        await c.engine.start()
    call = await gw.route("chat", chat(stream=True), {})
    assert call.budget.max_latency_ms == 50 and call.answer_by is None
    assert "".join([c.text async for c in gw.run(call)])
    asked = await gw.route("chat", budgeted(50, stream=True), {})
    assert asked.answer_by is not None


async def test_a_probe_that_ends_neither_well_nor_badly_frees_the_half_open_circuit():
    """A half-open circuit's probe cut off by the budget (or the client leaving) must not keep the
    circuit shut for good."""
    gw, _ = await make(overrun_ms=50, ttft_ms=300)
    b = gw.breakers
    for _ in range(gw.pool.failover.breaker_failures):
        b.on_failure("cheap")
    b._b["cheap"].opened_at -= gw.pool.failover.breaker_reset_s + 1  # now half-open
    assert b.allows("cheap")
    call = await gw.route("chat", budgeted(10, model="cheap", stream=True), {})
    with pytest.raises(LatencyBudgetExceededError):
        [c async for c in gw.run(call)]
    assert b.allows("cheap")  # the probe slot is free again


async def test_max_tokens_limit_and_default():
    gw, _ = await make()
    with pytest.raises(InvalidRequestError, match="at most"):
        await gw.route("chat", chat(max_tokens=100_000), {})
    call = await gw.route("chat", chat(), {})
    assert call.generation.sampling.max_tokens == gw.pool.limits.default_max_tokens


def test_budget_precedence_body_over_headers():
    b = budget_from(RoutingOptions(min_quality=0.2), {"x-tiergate-min-quality": "0.9",
                                                      "x-tiergate-max-latency-ms": "500"})
    assert b.min_quality == 0.2 and b.max_latency_ms == 500
    assert budget_from(None, {}) is None
    with pytest.raises(InvalidRequestError, match="x-tiergate-max-cost-usd"):
        budget_from(None, {"x-tiergate-max-cost-usd": "-1"})


async def _cascade_gateway(cheap_logprob: float, escalation_rate: float = 1 / 3):
    p = pool()
    records = []
    clients = {}
    for m in p.models:
        args = FakeArgs(reply=f"answer from {m.name}", logprob=cheap_logprob if m.name == "cheap" else -0.05)
        engine = FakeEngine(m, args)
        await engine.start()
        clients[m.name] = EngineClient(engine)
    gw = Gateway(p, clients, PriorQuality({"cheap": 0.3, "dear": 0.8}), records.append,
                 cascade_thresholds={"cheap": threshold("cheap", -1.0, escalation_rate)})
    return gw, records, clients


async def test_cascade_escalates_unconfident_answers_and_charges_both():
    gw, records, _ = await _cascade_gateway(cheap_logprob=-3.0)
    call = await gw.route("chat", chat(routing={"cascade": True}), {})
    assert call.cascade and call.decision.escalate_to == "dear"
    text = "".join(c.text for c in [c async for c in gw.run(call)])
    assert text == "answer from dear"
    assert call.model == "dear" and call.cascade_from == "cheap" and call.decision.reason.value == "cascade"
    assert call.cascade_confidence == pytest.approx(-3.0)
    dear_only = gw.router.card("dear").price.cost(call.prompt_tokens, call.completion_tokens)
    assert call.outcome.cost_usd > dear_only > 0  # both calls are charged
    assert records[0].cost_usd == call.outcome.cost_usd


async def test_a_cascade_whose_cheap_model_escalates_too_often_goes_straight_up():
    # 'cheap' costs a tenth of 'dear': an attempt that is escalated 95% of the time costs more than it saves
    gw, records, clients = await _cascade_gateway(cheap_logprob=-0.2, escalation_rate=0.95)
    asked = []
    cheap_stream = clients["cheap"].stream
    clients["cheap"].stream = lambda request: (asked.append(request), cheap_stream(request))[1]
    call = await gw.route("chat", chat(routing={"cascade": True}), {})
    assert call.decision.escalate_first and gw.in_flight["cheap"] == 1  # admission leased the cheap slot
    text = "".join(c.text for c in [c async for c in gw.run(call)])
    assert text == "answer from dear" and call.model == "dear" and call.cascade_from == "cheap"
    assert "escalated without trying cheap" in call.decision.explanation
    assert asked == []  # never asked, though it would have been confident
    assert call.outcome.cost_usd == gw.router.card("dear").price.cost(call.prompt_tokens, call.completion_tokens)
    assert gw.in_flight == {"cheap": 0, "dear": 0} and records[0].model == "dear"


async def test_cascade_keeps_confident_answers_without_logprobs_leaking():
    gw, _, _ = await _cascade_gateway(cheap_logprob=-0.2)
    call = await gw.route("chat", chat(routing={"cascade": True}), {})
    chunks = [c async for c in gw.run(call)]
    assert "".join(c.text for c in chunks) == "answer from cheap" and call.model == "cheap"
    assert not call.cascade_from and all(not c.logprobs for c in chunks)  # the caller asked for none
    plain = await gw.route("chat", chat(), {})
    assert not plain.cascade  # off unless the request or the pool asks for it


class _NotThreadSafe(PriorQuality):
    """Fails like a shared tokenizer when two threads predict at once, and counts batches."""

    blocking = True  # stands for an encoder: its work belongs off the loop

    def __init__(self) -> None:
        super().__init__({"cheap": 0.3, "dear": 0.8})
        self.busy = False
        self.batches: list[int] = []
        self.threads: set = set()

    def predict(self, prompts):
        import threading
        import time

        self.threads.add(threading.current_thread())
        assert not self.busy, "Already borrowed"
        self.busy = True
        try:
            time.sleep(0.02)
            self.batches.append(len(prompts))
            return super().predict(prompts)
        finally:
            self.busy = False


async def test_quality_prediction_is_serialised_and_batched():
    import asyncio

    from serve.quality_batcher import QualityBatcher

    predictor = _NotThreadSafe()
    batcher = QualityBatcher(predictor)
    results = await asyncio.gather(*(batcher.predict(f"p{i}") for i in range(20)))
    assert all(r == {"cheap": 0.3, "dear": 0.8} for r in results)
    assert sum(predictor.batches) == 20 and len(predictor.batches) < 20  # queued prompts shared calls


async def test_a_lookup_predictor_is_asked_on_the_loop_without_a_thread_hop():
    import threading

    from serve.quality_batcher import QualityBatcher

    class Lookup(PriorQuality):
        def predict(self, prompts):
            self.thread = threading.current_thread()
            return super().predict(prompts)

    batcher = QualityBatcher(Lookup({"cheap": 0.3}))
    assert await batcher.predict("p") == {"cheap": 0.3}
    assert batcher.predictor.thread is threading.current_thread()
    blocking = QualityBatcher(_NotThreadSafe())  # an encoder's work still leaves the loop
    await blocking.predict("p")
    assert blocking.predictor.threads and threading.current_thread() not in blocking.predictor.threads


async def _gateway(models: dict[str, tuple[float, float, dict]], **pool_extra):
    """A gateway on fake models given as name -> (price, prior quality, fake engine args)."""
    p = parse_pool({"name": "t", **pool_extra, "models": [
        {"name": name, "engine": "fake", "quantization": "none", "context_length": 512,
         "price": {"input_per_mtok": price, "output_per_mtok": price}, "prior_quality": q,
         "latency_prior": {"ttft_ms": 5, "tpot_ms": 1}, "engine_args": args}
        for name, (price, q, args) in models.items()]})
    records, clients = [], {}
    for m in p.models:
        engine = FakeEngine(m, FakeArgs(**m.engine_args))
        await engine.start()
        clients[m.name] = EngineClient(engine)
    gw = Gateway(p, clients, PriorQuality({m.name: m.prior_quality for m in p.models}), records.append,
                 cascade_thresholds={"cheap": threshold("cheap", -1.0)})
    return gw, records


UNSURE = {"reply": "answer from cheap", "logprob": -3.0}  # below the cheap model's threshold: escalates


async def test_cascade_target_failing_before_its_first_token_fails_over():
    gw, records = await _gateway({"cheap": (0.1, 0.3, UNSURE), "mid": (0.5, 0.6, {"reply": "answer from mid"}),
                                  "dear": (1.0, 0.8, {"fail_before_first_token": True})})
    call = await gw.route("chat", chat(routing={"cascade": True}), {})
    assert call.decision.escalate_to == "dear"
    text = "".join(c.text for c in [c async for c in gw.run(call)])
    assert text == "answer from mid" and call.model == "mid" and call.failovers == ["dear"]
    assert call.cascade_from == "cheap" and records[0].status == 200 and records[0].failovers == ("dear",)
    assert gw.in_flight == {"cheap": 0, "mid": 0, "dear": 0}


async def test_cascade_target_failing_with_nothing_left_is_its_own_error():
    gw, records = await _gateway({"cheap": (0.1, 0.3, UNSURE), "dear": (1.0, 0.8, {"fail_before_first_token": True})})
    call = await gw.route("chat", chat(routing={"cascade": True}), {})
    with pytest.raises(EngineError, match="fail before the first token"):
        [c async for c in gw.run(call)]
    assert records[0].status == 502 and records[0].error_type == "EngineError"


async def test_escalated_cascade_teaches_the_target_only_its_own_timings():
    slow_cheap = {**UNSURE, "ttft_ms": 300}  # the cheap call alone takes at least 300 ms
    gw, _ = await _gateway({"cheap": (0.1, 0.3, slow_cheap), "dear": (1.0, 0.8, {"reply": "answer from dear"})})
    seen = []
    learn = gw.latency.observe
    gw.latency.observe = lambda model, obs: (seen.append((model, obs)), learn(model, obs))[1]
    call = await gw.route("chat", chat(routing={"cascade": True}), {})
    [c async for c in gw.run(call)]
    assert call.model == "dear" and [m for m, _ in seen] == ["cheap", "dear"]
    cheap, dear = seen[0][1], seen[1][1]
    assert cheap.ttft_ms >= 300
    # the caller waited for both calls; the target's latency model learns its own call only
    assert dear.ttft_ms <= call.ttft_s * 1000 - 300 and dear.e2e_ms <= call.e2e_s * 1000 - 300


async def test_echo_is_rejected_not_ignored():
    from serve.api.schemas import CompletionRequest

    gw, _ = await make()
    body = CompletionRequest.model_validate({"model": "auto", "prompt": "Say hi", "echo": True})
    with pytest.raises(InvalidRequestError, match="echo") as err:
        await gw.route("completions", body, {})
    assert err.value.param == "echo"


class _Broken(EngineClient):
    """An in-process client with a bug: not a model outage."""

    def stream(self, request):
        async def gen():
            raise TypeError("a bug in the gateway's own code")
            yield  # pragma: no cover

        return gen()


async def test_a_bug_is_raised_as_itself_not_as_a_model_outage():
    gw, records = await make()
    gw.clients["cheap"] = _Broken(gw.clients["cheap"].engine)
    call = await gw.route("chat", chat(), {})
    with pytest.raises(TypeError, match="a bug"):
        [c async for c in gw.run(call)]
    assert records[0].status == 500 and records[0].error_type == "TypeError" and not call.failovers
    assert gw.breakers.states()["cheap"].value == "closed" and gw.in_flight["cheap"] == 0


async def test_a_cost_cap_counts_the_system_prompt_and_earlier_turns_not_only_the_user_s_text():
    gw, _ = await _gateway({"cheap": (0.1, 0.3, {}), "dear": (1.0, 0.8, {})})
    history = [{"role": "system", "content": "Answer as the support desk of an online shop. " * 20},  # ~240 tokens
               {"role": "user", "content": "where is my order?"}, {"role": "assistant", "content": "Which one?"},
               {"role": "user", "content": "hi"}]
    budget = {"min_quality": 0.7, "max_cost_usd": 1e-4}
    short = await gw.route("chat", chat(max_tokens=10, routing=budget), {})
    long = await gw.route("chat", ChatCompletionRequest.model_validate(
        {"model": "auto", "messages": history, "max_tokens": 10, "routing": budget}), {})
    # "hi" alone fits the cap on the dear model; the ~260-token prompt the model actually reads does not
    assert short.decision.model == "dear" and short.decision.budget_met
    assert long.route_request.prompt_tokens > 250
    dear = next(p for p in long.decision.candidates if p.model == "dear")
    assert dear.cost_usd > 2.5e-4 and not dear.fits_cost
    # no model meets both budgets now: best effort keeps the cost cap and says the floor is unmet
    assert long.decision.model == "cheap" and not long.decision.budget_met and long.decision.unmet == ("quality",)
