"""Brittleness checks (shadow re-asks, perturbation probes) run on idle capacity only: with the
in-repo fake engine and a stand-in telemetry deployment, no Ray."""

from __future__ import annotations

import asyncio

from router.quality import PriorQuality
from serve.api.schemas import ChatCompletionRequest
from serve.clients import EngineClient
from serve.config import parse_pool
from serve.engines.fake import FakeArgs, FakeEngine
from serve.gateway import Gateway
from serve.shadow import OutputChecks


class _Method:
    def __init__(self, log: list, name: str, result: object = None) -> None:
        self.log, self.name, self.result = log, name, result

    async def remote(self, **kw: object) -> object:
        self.log.append((self.name, kw))
        return self.result


class _Telemetry:
    """Grants every shadow check and no probe; records what the checks report."""

    def __init__(self) -> None:
        self.log: list = []
        self.plan_shadow = _Method(self.log, "plan_shadow", True)
        self.record_shadow = _Method(self.log, "record_shadow")
        self.record_shadow_error = _Method(self.log, "record_shadow_error")
        self.plan_probe = _Method(self.log, "plan_probe", None)

    def names(self) -> list[str]:
        return [name for name, _ in self.log]


class _Counting(EngineClient):
    def __init__(self, engine: FakeEngine) -> None:
        super().__init__(engine)
        self.streams = 0

    def stream(self, request):  # type: ignore[no-untyped-def]
        self.streams += 1
        return super().stream(request)


async def _setup() -> tuple[Gateway, OutputChecks, _Telemetry, dict[str, _Counting]]:
    models = [{"name": name, "engine": "fake", "quantization": "none", "context_length": 512,
               "price": {"input_per_mtok": price, "output_per_mtok": price}, "prior_quality": q,
               "latency_prior": {"ttft_ms": 5, "tpot_ms": 1}, "engine_args": {"reply": "the answer"},
               "concurrency": 1, "max_ongoing_requests": 4}
              for name, price, q in (("cheap", 0.1, 0.3), ("dear", 1.0, 0.8))]
    checks = {"shadow": {"rate": 1.0}, "probe": {"rate": 0.0}}  # every answer shadowed, none probed
    pool = parse_pool({"name": "t", "models": models, "monitoring": {"brittleness": checks}})
    clients = {}
    for m in pool.models:
        engine = FakeEngine(m, FakeArgs(**m.engine_args))
        await engine.start()
        clients[m.name] = _Counting(engine)
    gw = Gateway(pool, clients, PriorQuality({m.name: m.prior_quality for m in pool.models}), lambda rec: None)
    telemetry = _Telemetry()
    return gw, OutputChecks(pool, gw, telemetry), telemetry, clients


async def _answered(gw: Gateway):  # type: ignore[no-untyped-def]
    req = ChatCompletionRequest.model_validate({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    call = await gw.route("chat", req, {})
    [c async for c in gw.run(call)]
    assert call.model == "cheap" and call.status == 200
    return call


async def _checked(checks: OutputChecks, call) -> None:  # type: ignore[no-untyped-def]
    checks.schedule(call)
    await asyncio.gather(*list(checks._tasks))
    await checks.gateway.slots.drain()


async def test_a_shadow_check_runs_on_an_idle_model_and_holds_a_slot_while_it_runs():
    gw, checks, telemetry, clients = await _setup()
    call = await _answered(gw)
    await _checked(checks, call)
    assert clients["dear"].streams == 1
    assert telemetry.names()[:2] == ["plan_shadow", "record_shadow"]
    assert dict(telemetry.log[1][1])["shadow_answer"] == "the answer"
    assert gw.in_flight["dear"] == 0


async def test_a_shadow_check_is_skipped_not_queued_when_its_model_has_no_free_slot():
    gw, checks, telemetry, clients = await _setup()
    call = await _answered(gw)
    await gw.slots.take("dear", "a caller's request")  # the one slot "dear" generates on is busy
    await _checked(checks, call)
    assert clients["dear"].streams == 0  # nothing was re-asked, nothing queued behind callers
    assert "record_shadow_error" not in telemetry.names() and "record_shadow" not in telemetry.names()
    assert gw.in_flight["dear"] == 1  # only the caller's request
    gw.slots.free("dear", "a caller's request")
    await gw.slots.drain()
    await _checked(checks, call)  # free again: the next check runs
    assert clients["dear"].streams == 1
