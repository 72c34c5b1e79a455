"""Brittleness checks (serve/shadow.py), with the fake engine and a fake telemetry handle, no Ray: the
ingress draws the sample itself and asks the telemetry deployment only about drawn answers, and a check
runs on idle capacity only (skipped, never queued, when its model has no free slot) and gives way to a
caller who comes while it runs."""

from __future__ import annotations

import asyncio
from typing import Any

from router.quality import PriorQuality
from serve.clients import EngineClient
from serve.config import parse_pool
from serve.engines.fake import FakeArgs, FakeEngine
from serve.gateway import Gateway
from serve.shadow import OutputChecks
from serve.telemetry.brittleness import BrittlenessConfig, BrittlenessMonitor
from serve.telemetry.sampling import BudgetedSampler, SamplerConfig, draw
from tests.serve.test_gateway import chat


class _Method:
    def __init__(self, calls: list[tuple[str, dict[str, Any]]], name: str, answer: Any) -> None:
        self.calls, self.name, self.answer = calls, name, answer

    async def _call(self, kw: dict[str, Any]) -> Any:
        self.calls.append((self.name, kw))
        return self.answer(**kw) if callable(self.answer) else self.answer

    def remote(self, **kw: Any) -> Any:
        return self._call(kw)


class FakeTelemetry:
    """The telemetry deployment's handle: every ``.remote`` call is recorded."""

    def __init__(self, plan_shadow: Any = False, plan_probe: Any = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        answers = {"plan_shadow": plan_shadow, "plan_probe": plan_probe}
        for name in ("plan_shadow", "plan_probe", "record_shadow", "record_shadow_error", "record_probe",
                     "record_probe_error"):
            setattr(self, name, _Method(self.calls, name, answers.get(name)))


def _pool(shadow_rate: float, probe_rate: float, dear_args: dict[str, Any] | None = None):
    models = [{"name": name, "engine": "fake", "quantization": "none", "context_length": 512,
               "price": {"input_per_mtok": price, "output_per_mtok": price}, "prior_quality": q,
               "latency_prior": {"ttft_ms": 5, "tpot_ms": 1}, "engine_args": args}
              for name, price, q, args in (("cheap", 0.1, 0.3, {"reply": "Paris"}),
                                           ("dear", 1.0, 0.8, dear_args or {"reply": "Paris"}))]
    return parse_pool({"name": "t", "models": models, "monitoring": {"brittleness": {
        "shadow": {"rate": shadow_rate}, "probe": {"rate": probe_rate}}}})


class _Counting(EngineClient):
    def __init__(self, engine: FakeEngine) -> None:
        super().__init__(engine)
        self.streams = 0

    def stream(self, request):  # type: ignore[no-untyped-def]
        self.streams += 1
        return super().stream(request)


async def _setup(shadow_rate: float, probe_rate: float, telemetry: FakeTelemetry,
                 dear_args: dict[str, Any] | None = None) -> tuple[Gateway, OutputChecks, dict[str, _Counting]]:
    p = _pool(shadow_rate, probe_rate, dear_args)
    clients = {}
    for m in p.models:
        engine = FakeEngine(m, FakeArgs(**m.engine_args))
        await engine.start()
        clients[m.name] = _Counting(engine)
    gw = Gateway(p, clients, PriorQuality({m.name: m.prior_quality for m in p.models}), lambda _: None)
    return gw, OutputChecks(p, gw, telemetry), clients


async def _answered(shadow_rate: float, probe_rate: float, telemetry: FakeTelemetry, n: int = 1):
    gw, checks, _ = await _setup(shadow_rate, probe_rate, telemetry)
    for _ in range(n):
        call = await gw.route("chat", chat(model="cheap", temperature=0), {})
        [c async for c in gw.run(call)]
        checks.schedule(call.outcome)
    await asyncio.gather(*list(checks._tasks))
    return checks


async def test_an_undrawn_answer_costs_no_call_to_the_telemetry_deployment():
    telemetry = FakeTelemetry()
    await _answered(0.0, 0.0, telemetry, n=20)
    assert telemetry.calls == []


async def test_a_drawn_answer_asks_telemetry_for_its_caps_only():
    telemetry = FakeTelemetry(plan_shadow=True)
    await _answered(1.0, 0.0, telemetry)
    names = [name for name, _ in telemetry.calls]
    assert names == ["plan_shadow", "record_shadow"]
    plan = telemetry.calls[0][1]
    assert plan["drawn"] is True and plan["model"] == "cheap" and plan["shadow_model"] == "dear"
    assert telemetry.calls[1][1]["shadow_answer"] == "Paris"


async def test_a_drawn_probe_is_planned_with_the_draw_made():
    telemetry = FakeTelemetry()
    await _answered(0.0, 1.0, telemetry)
    assert [(name, kw["drawn"]) for name, kw in telemetry.calls] == [("plan_probe", True)]


async def test_the_answer_of_the_shadow_model_itself_is_never_shadowed():
    telemetry = FakeTelemetry(plan_shadow=True)
    p = _pool(1.0, 0.0)
    checks = OutputChecks(p, Gateway(p, {m.name: EngineClient(FakeEngine(m, FakeArgs())) for m in p.models},
                                     PriorQuality({}), lambda _: None), telemetry)
    assert not checks._shadows("dear") and checks._shadows("cheap")


def test_the_ingress_draw_and_the_capped_grant_sample_at_the_configured_rate():
    """Drawn in the ingress at ``rate``, then granted by the caps alone: the same sample as one draw there."""
    import random

    config = SamplerConfig(rate=0.25, max_per_minute=1e9, burst=10**9, max_cost_usd_per_hour=None,
                           max_in_flight=10**9)
    rng, sampler = random.Random(7), BudgetedSampler(config)
    granted = sum(draw(rng, config) and sampler.decide(0.0, 0.0, drawn=True) == "sampled" for _ in range(20000))
    assert 0.23 < granted / 20000 < 0.27
    assert not any(draw(rng, SamplerConfig(rate=0.0)) for _ in range(1000))


def test_a_drawn_request_still_meets_the_caps():
    from prometheus_client import CollectorRegistry

    from serve.telemetry.brittleness import AgreementScorer

    m = BrittlenessMonitor(CollectorRegistry(), BrittlenessConfig(shadow=SamplerConfig(rate=0.0, burst=1,
                                                                                       max_per_minute=0.0)),
                           AgreementScorer(None))
    # rate 0 in telemetry: only the ingress's draw lets it through, then the rate cap (one burst) holds
    plans = [m.plan_shadow(model="small", route_class="", shadow_model="large", est_cost_usd=0.0, now=0.0,
                           drawn=True) for _ in range(3)]
    assert plans == [True, False, False]


async def _checked(gw: Gateway, checks: OutputChecks) -> None:
    call = await gw.route("chat", chat(model="cheap", temperature=0), {})
    [c async for c in gw.run(call)]
    await gw.slots.drain()
    checks.schedule(call.outcome)
    await asyncio.gather(*list(checks._tasks))
    await gw.slots.drain()


async def test_a_check_runs_on_an_idle_model_and_frees_its_slot():
    telemetry = FakeTelemetry(plan_shadow=True)
    gw, checks, clients = await _setup(1.0, 0.0, telemetry)  # every answer shadowed on "dear" (one slot)
    await _checked(gw, checks)
    assert clients["dear"].streams == 1 and [n for n, _ in telemetry.calls] == ["plan_shadow", "record_shadow"]
    assert gw.in_flight["dear"] == 0


async def test_a_check_whose_model_has_no_free_slot_is_skipped_before_telemetry_is_asked():
    """Nothing queues behind callers, and no grant of telemetry's capped sampler is taken and left
    unreleased (it would block sampling until its slot timed out)."""
    telemetry = FakeTelemetry(plan_shadow=True)
    gw, checks, clients = await _setup(1.0, 0.0, telemetry)  # every answer shadowed on "dear" (one slot)
    await gw.slots.take("dear", "a caller's request")  # the one slot "dear" generates on is busy
    await _checked(gw, checks)
    assert clients["dear"].streams == 0 and telemetry.calls == []
    assert gw.in_flight["dear"] == 1  # only the caller's request
    gw.slots.free("dear", "a caller's request")
    await _checked(gw, checks)  # free again: the next check runs
    assert clients["dear"].streams == 1 and [n for n, _ in telemetry.calls] == ["plan_shadow", "record_shadow"]


async def test_a_probe_is_skipped_too_when_its_model_is_busy():
    telemetry = FakeTelemetry(plan_probe=None)
    gw, checks, _ = await _setup(0.0, 1.0, telemetry)
    await gw.slots.take("cheap", "a caller's request")
    call = await gw.route("chat", chat(model="cheap", temperature=0), {})
    [c async for c in gw.run(call)]
    checks.schedule(call.outcome)
    await asyncio.gather(*list(checks._tasks))
    assert telemetry.calls == []


async def test_a_running_check_gives_way_to_a_caller_on_its_model():
    """A shadow call that started on an idle model is cancelled when a caller is admitted there: its
    stream is closed (the engine stops generating for it), its slot and telemetry's grant are given
    back (counted ``preempted``), and the caller's answer does not wait for it."""
    telemetry = FakeTelemetry(plan_shadow=True)
    slow = {"reply": " ".join(["word"] * 200), "tpot_ms": 20}  # a 4 s shadow answer
    gw, checks, clients = await _setup(1.0, 0.0, telemetry, dear_args=slow)
    call = await gw.route("chat", chat(model="cheap", temperature=0), {})
    [c async for c in gw.run(call)]
    await gw.slots.drain()
    checks.schedule(call.outcome)
    while clients["dear"].streams == 0:  # the shadow call is generating on "dear"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert gw.in_flight["dear"] == 1 and clients["dear"].engine.load().running == 1
    caller = await gw.route("chat", chat(model="dear", temperature=0, max_tokens=3), {})
    began = asyncio.get_running_loop().time()
    answer = [c async for c in gw.run(caller)]
    assert answer[-1].finish_reason and asyncio.get_running_loop().time() - began < 1.0
    results = await asyncio.gather(*list(checks._tasks), return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert [(n, kw.get("preempted")) for n, kw in telemetry.calls] == [
        ("plan_shadow", None), ("record_shadow_error", True)]
    await gw.slots.drain()
    assert gw.in_flight["dear"] == 0 and clients["dear"].engine.load().running == 0

