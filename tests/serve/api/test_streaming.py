"""Server-sent events in as few messages as the tokens allow (serve/api/streaming.py): one body
message per token, then the finishing event, usage and [DONE] together, ending the body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from router.errors import EngineError
from serve.api.streaming import Last, SSEResponse, sse_events
from tests.serve.ingress_app import asgi, ingress
from tests.serve.test_gateway import chat, make

REPLY = "one two three"


async def _messages(core, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ASGI messages the ingress sends for one request (no HTTP server in between)."""
    raw = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]}
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": raw, "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(core)(scope, receive, send)
    return sent


def _events(body: bytes) -> list[str]:
    assert body.endswith(b"\n\n")
    return [e.removeprefix("data: ") for e in body.decode().split("\n\n")[:-1]]


async def test_one_message_per_token_then_the_end_in_one_message():
    core = await ingress({"m": (0.1, 0.5, {"reply": REPLY})})
    sent = await _messages(core, {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                                  "stream_options": {"include_usage": True}})
    start, *bodies = sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert [m["more_body"] for m in bodies] == [True, True, True, False]  # no empty closing message
    tokens = [json.loads(e) for m in bodies[:3] for e in _events(m["body"])]
    assert [t["choices"][0]["delta"]["content"] for t in tokens] == ["one", " two", " three"]
    finish, usage, done = _events(bodies[-1]["body"])
    assert json.loads(finish)["choices"][0]["finish_reason"] == "stop"
    assert json.loads(usage)["usage"]["completion_tokens"] == 3 and done == "[DONE]"


async def _call(reply: str = REPLY, **fake: Any):
    gw, _ = await make(reply=reply, **fake)
    call = await gw.route("chat", chat(stream=True, stream_options={"include_usage": True}), {})
    stream = gw.run(call)
    return gw, call, await stream.__anext__(), stream


async def test_the_request_is_settled_before_done_is_sent():
    gw, call, first, stream = await _call()
    settled: list[Any] = []

    async def settle(error: BaseException | None) -> None:
        settled.append(error)

    out = [data async for data in sse_events(call, first, stream, settle)]
    assert settled == [None] and isinstance(out[-1], Last) and out[-1].endswith(b"data: [DONE]\n\n")
    assert not any(isinstance(data, Last) for data in out[:-1])


async def test_a_failure_mid_stream_ends_with_its_error_event_and_done():
    gw, call, first, stream = await _call(fail_after_tokens=2)
    settled: list[Any] = []

    async def settle(error: BaseException | None) -> None:
        settled.append(error)

    out = [data async for data in sse_events(call, first, stream, settle)]
    assert isinstance(settled[0], EngineError)
    error, done = _events(out[-1])
    assert json.loads(error)["error"]["type"] and done == "[DONE]"
    assert len(out) == 3  # two tokens, then the end


async def test_a_failed_settlement_still_sends_what_was_ready_but_no_done():
    gw, call, first, stream = await _call()

    async def settle(error: BaseException | None) -> None:
        raise RuntimeError("store down")

    out: list[bytes] = []
    with pytest.raises(RuntimeError, match="store down"):
        async for data in sse_events(call, first, stream, settle):
            out.append(data)
    assert b"finish_reason\":\"stop" in out[-1] and b"[DONE]" not in out[-1] and not isinstance(out[-1], Last)


async def test_a_client_that_leaves_is_settled_and_sent_nothing_more():
    gw, call, first, stream = await _call()
    settled: list[Any] = []

    async def settle(error: BaseException | None) -> None:
        settled.append(error)

    events = sse_events(call, first, stream, settle)
    assert b"one" in await events.__anext__()
    await events.aclose()
    assert settled == [None]
    # the run was ended before settling, so the observers read its outcome: cut off by the client
    assert call.outcome is not None and (call.outcome.status, call.outcome.finish_reason) == (499, "cancelled")
    assert gw.in_flight == {m: 0 for m in gw.in_flight}


async def test_a_body_without_a_last_chunk_is_closed_by_an_empty_message():
    async def body():
        yield b"data: x\n\n"

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await SSEResponse(body(), media_type="text/event-stream").stream_response(send)
    assert [(m.get("body"), m.get("more_body")) for m in sent[1:]] == [(b"data: x\n\n", True), (b"", False)]
