"""The ingress's own duties on fake engines, in this process: headers, rejected fields, quota
charging and telemetry flushing. Real models through Ray Serve: test_gateway_e2e.py."""

from __future__ import annotations

import json
import logging

import pytest

from router.errors import EngineError
from serve.auth import ApiKey, Authenticator, KeyFile
from serve.state import Charge
from tests.serve.ingress_app import client, ingress

Q = [{"role": "user", "content": "hi"}]
UNSURE = {"reply": "answer from cheap", "logprob": -3.0}
SURE = {"reply": "answer from cheap", "logprob": -0.1}


def _events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("cheap, header", [(UNSURE, "escalated-from=cheap"), (SURE, "kept")])
async def test_cascade_header_is_sent_on_streams(cheap, header):
    core = await ingress({"cheap": (0.1, 0.3, cheap), "dear": (1.0, 0.8, {"reply": "answer from dear"})},
                         cascade_thresholds={"cheap": -1.0})
    body = {"model": "auto", "messages": Q, "stream": True, "routing": {"cascade": True}}
    async with client(core) as c:
        r = await c.post("/chat/completions", json=body)
        full = await c.post("/chat/completions", json={**body, "stream": False})
    assert r.status_code == 200 and r.headers["x-tiergate-cascade"] == header
    assert full.headers["x-tiergate-cascade"] == header  # the same on a full answer
    events = _events(r.text)
    model = "dear" if header != "kept" else "cheap"
    assert events[-1] == "[DONE]" and all(json.loads(e)["model"] == model for e in events[:-1])


async def test_echo_is_a_400_naming_it():
    core = await ingress({"cheap": (0.1, 0.3, {})})
    async with client(core) as c:
        r = await c.post("/completions", json={"model": "auto", "prompt": "Say hi", "echo": True})
        ok = await c.post("/completions", json={"model": "auto", "prompt": "Say hi", "echo": False})
    assert r.status_code == 400 and r.json()["error"]["param"] == "echo" and "echo" in r.json()["error"]["message"]
    assert ok.status_code == 200


class _Telemetry:
    """The telemetry deployment's interface, failing its first ``fail`` record calls."""

    def __init__(self, fail: int = 0) -> None:
        self.fail, self.batches, self.gauges = fail, [], []
        outer = self

        class _Call:
            def __init__(self, fn):
                self.fn = fn

            async def remote(self, *args, **kwargs):
                return self.fn(*args, **kwargs)

        def record(batch):
            if outer.fail:
                outer.fail -= 1
                raise ConnectionError("telemetry replica unreachable")
            outer.batches.append(list(batch))

        self.record = _Call(record)
        self.set_gauges = _Call(lambda replica, **gauges: outer.gauges.append((replica, gauges)))


async def test_a_failed_flush_keeps_its_batch_and_gauges_are_sent_on_change():
    telemetry = _Telemetry(fail=1)
    core = await ingress({"cheap": (0.1, 0.3, {})}, telemetry=telemetry, monitoring={"brittleness": {"enabled": False}})
    async with client(core) as c:
        assert (await c.post("/chat/completions", json={"model": "auto", "messages": Q})).status_code == 200
    with pytest.raises(ConnectionError):
        await core.link.flush()
    async with client(core) as c:
        assert (await c.post("/chat/completions", json={"model": "auto", "messages": Q})).status_code == 200
    await core.link.flush()
    (batch,) = telemetry.batches
    assert len(batch) == 2 and all(r.status == 200 for r in batch)  # the failed flush's record was kept
    await core.link.flush()
    await core.link.flush()
    assert len(telemetry.batches) == 1 and len(telemetry.gauges) == 1  # nothing new: nothing sent


def _keyed() -> tuple[Authenticator, ApiKey]:
    key = ApiKey(name="alice", key="alice-key-0123456789", limits={"tokens_per_minute": 1000})
    return Authenticator(KeyFile(keys=(key,))), key


async def test_tokens_are_charged_before_the_answer_returns():
    auth, key = _keyed()
    core = await ingress({"cheap": (0.1, 0.3, {"reply": "one two three"})}, authenticator=auth)
    async with client(core) as c:
        r = await c.post("/chat/completions", json={"model": "auto", "messages": Q},
                         headers={"authorization": "Bearer alice-key-0123456789"})
    assert r.status_code == 200
    charged = r.json()["usage"]["total_tokens"]
    (window,) = core.quotas.windows(key, "tokens")  # the estimate reserved at admission is settled to usage
    assert await core.store.hit([Charge(window, 1000 - charged + 1)]) is not None
    assert await core.store.hit([Charge(window, 1000 - charged)]) is None


async def test_a_failed_quota_charge_is_logged_and_the_answer_stands(caplog):
    auth, _ = _keyed()
    core = await ingress({"cheap": (0.1, 0.3, {})}, authenticator=auth)

    async def broken(ticket, tokens):
        raise EngineError("storage down")

    core.quotas.settle = broken
    with caplog.at_level(logging.ERROR, logger="tiergate.ingress"):
        async with client(core) as c:
            r = await c.post("/chat/completions", json={"model": "auto", "messages": Q},
                             headers={"authorization": "Bearer alice-key-0123456789"})
    assert r.status_code == 200
    assert "charging tokens to a key failed" in caplog.text and "storage down" in caplog.text
