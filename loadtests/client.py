"""Send one planned request over HTTP, stream it, and measure it against its budgets.

Every request ends in exactly one outcome:

- ``ok``: a complete answer (a finish reason, usage, and for streams the ``[DONE]`` marker);
- ``rejected``: the gateway refused or stopped it *with a cause*: an OpenAI error object and
  a status that names a reason (bad request, unknown model, budget infeasible, overload,
  not ready, deadline);
- ``failed``: an error without such a cause (a 500/502, an error object missing, a stream
  that stops without ``[DONE]``, a malformed body);
- ``lost``: no answer at all (the connection failed or was dropped);
- ``timeout``: the client's own limit ran out;
- ``dropped``: the client itself hung up after the stream's first line, as planned
  (``PlannedRequest.drop``), as users who stop reading do.

Besides the latencies of the answer, ``headers_s`` is when the status line and headers came
(the first token for a stream, the whole answer otherwise, the refusal for an error), and
``retry_after`` the ``Retry-After`` header of a refusal.

Budgets are judged on the client's side: latency on the end-to-end time the client saw,
cost on the usage the gateway returned times the pool's prices, quality on the answer itself:
a request of a labelled class is scored against its gold answer (the streamed text
concatenated), and its quality budget is met when the answer is correct. The quality the
gateway predicted is recorded beside it and decides nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from loadtests import labelled
from loadtests.scenario import PlannedRequest

CAUSED = frozenset({400, 404, 413, 422, 429, 503, 504})
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True)
class RequestResult:
    index: int
    klass: str
    policy: str
    requested_model: str
    stream: bool
    outcome: str  # ok | rejected | failed | lost | timeout | dropped
    status: int = 0
    error: str = ""
    model: str = ""
    route_reason: str = ""
    sent_s: float = 0.0  # from the start of the run
    ttft_s: float | None = None
    e2e_s: float | None = None
    tpot_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    cost_usd: float = 0.0  # usage times the pool's prices, computed here
    gateway_cost_usd: float | None = None  # what the gateway reported
    gateway_budget_met: bool | None = None
    predicted_quality: float | None = None  # the gateway's, recorded only: it judges nothing
    item_id: str = ""  # the labelled item sent ("" for a class with fixed prompts)
    score: float | None = None  # the answer scored against gold: 1.0 correct, 0.0 wrong; None: not scored
    reply: str = ""  # the answer's text (streams: concatenated)
    latency_met: bool | None = None  # None: the class sets no such budget
    quality_met: bool | None = None  # the scored answer is correct
    cost_met: bool | None = None
    headers_s: float | None = None  # status and headers arrived, from sending
    retry_after: str | None = None  # a refusal's Retry-After header

    @property
    def budget_met(self) -> bool:
        return self.outcome == "ok" and all(v is not False for v in (self.latency_met, self.quality_met,
                                                                       self.cost_met))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "budget_met": self.budget_met}


@dataclass
class _Acc:
    ttft: float | None = None
    finish: str = ""
    usage: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    model: str = ""
    done: bool = False
    error: str = ""
    text: list[str] = field(default_factory=list)


def _error_text(obj: Any) -> str:
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        e = obj["error"]
        return f"{e.get('type', '')}/{e.get('code', '')}: {str(e.get('message', ''))[:200]}"
    return ""


def _take(acc: _Acc, obj: dict[str, Any], now: float) -> None:
    if _error_text(obj):
        acc.error = _error_text(obj)
        return
    acc.model = obj.get("model") or acc.model
    for choice in obj.get("choices") or ():
        if "delta" in choice:  # a chat stream's chunk
            text = (choice.get("delta") or {}).get("content")
        elif "message" in choice:  # a whole chat answer
            text = (choice.get("message") or {}).get("content")
        else:  # completions, streamed or whole
            text = choice.get("text")
        if text and acc.ttft is None:
            acc.ttft = now
        if text and choice.get("index", 0) == 0:
            acc.text.append(text)
        if choice.get("finish_reason"):
            acc.finish = choice["finish_reason"]
    if obj.get("usage"):
        acc.usage = obj["usage"]
    if obj.get("tiergate"):
        acc.info = obj["tiergate"]


async def _read_stream(resp: httpx.Response, acc: _Acc, t_send: float, drop: bool = False) -> bool:
    """Read the SSE stream into ``acc``; with ``drop``, stop after its first line: True when dropped."""
    async for line in resp.aiter_lines():
        if drop:
            return True
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        now = time.perf_counter() - t_send
        if payload == "[DONE]":
            acc.done = True
            continue
        try:
            _take(acc, json.loads(payload), now)
        except json.JSONDecodeError:
            acc.error = acc.error or f"malformed SSE event: {payload[:80]!r}"
    return False


async def send(client: httpx.AsyncClient, req: PlannedRequest, model: str, policy: str,
               prices: dict[str, Price], t0: float, timeout_s: float) -> RequestResult:
    """Send ``req`` with ``model`` in the body; never raises for a failed request."""
    body = {**req.body, "model": model}
    stream = bool(body.get("stream"))
    base = dict(index=req.index, klass=req.klass, policy=policy, requested_model=model, stream=stream,
                item_id=str(req.item["id"]) if req.item is not None else "")
    t_send = time.perf_counter()
    sent_s = t_send - t0
    acc = _Acc()
    status = 0
    headers: httpx.Headers | None = None
    headers_s = None
    dropped = False
    try:
        async with client.stream("POST", PATHS[req.endpoint], json=body, headers=req.headers,
                                 timeout=httpx.Timeout(timeout_s)) as resp:
            headers_s = time.perf_counter() - t_send
            status, headers = resp.status_code, resp.headers
            if status == 200 and stream:
                dropped = await _read_stream(resp, acc, t_send, drop=req.drop)
            else:
                raw = await resp.aread()
                try:
                    obj = json.loads(raw)
                except ValueError:
                    obj = None
                if status == 200 and isinstance(obj, dict):
                    _take(acc, obj, time.perf_counter() - t_send)
                    acc.done = True
                else:
                    acc.error = _error_text(obj) or f"HTTP {status} without an error object: {raw[:120]!r}"
    except httpx.TimeoutException as err:
        return RequestResult(**base, outcome="timeout", status=status, sent_s=sent_s,
                             error=f"client timeout after {timeout_s:g}s ({type(err).__name__})")
    except httpx.HTTPError as err:
        return RequestResult(**base, outcome="lost", status=status, sent_s=sent_s,
                             error=f"{type(err).__name__}: {err}"[:300])
    e2e = time.perf_counter() - t_send
    h = headers or httpx.Headers()
    common = dict(base, status=status, sent_s=sent_s, e2e_s=e2e, model=h.get("x-tiergate-model", acc.model),
                  route_reason=h.get("x-tiergate-route-reason", ""), headers_s=headers_s,
                  retry_after=h.get("retry-after"))
    if dropped:
        return RequestResult(**common, outcome="dropped")
    if status != 200:
        caused = status in CAUSED and bool(acc.error) and "without an error object" not in acc.error
        return RequestResult(**common, outcome="rejected" if caused else "failed", error=acc.error)
    if acc.error or not acc.done or acc.usage is None or not acc.finish:
        why = acc.error or ("stream ended without [DONE]" if not acc.done else
                            "no usage in the answer" if acc.usage is None else "no finish_reason")
        return RequestResult(**common, outcome="failed", error=why)
    return _measured(common, req, acc, prices, e2e, h)


def _measured(common: dict[str, Any], req: PlannedRequest, acc: _Acc, prices: dict[str, Price], e2e: float,
              h: httpx.Headers) -> RequestResult:
    usage = acc.usage or {}
    pt, ct = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    model = common["model"]
    price = prices.get(model)
    cost = price.cost(pt, ct) if price else 0.0
    info = acc.info or {}
    q_raw = h.get("x-tiergate-predicted-quality", info.get("predicted_quality"))
    quality = float(q_raw) if q_raw is not None else None
    ttft = acc.ttft if req.body.get("stream") else None
    tpot = (e2e - ttft) / (ct - 1) if ttft is not None and ct > 1 else None
    reply = "".join(acc.text)
    scored = labelled.score(req.item, reply) if req.item is not None else None
    b = req.budget
    return RequestResult(
        **common, outcome="ok", ttft_s=ttft, tpot_s=tpot, prompt_tokens=pt, completion_tokens=ct,
        finish_reason=acc.finish, cost_usd=cost, gateway_cost_usd=info.get("cost_usd"),
        gateway_budget_met=info.get("budget_met"), predicted_quality=quality,
        score=scored, reply=reply,
        latency_met=None if b.max_latency_ms is None else e2e * 1000 <= b.max_latency_ms,
        # a quality floor is met by a correct answer only (no answer to score: not met)
        quality_met=None if b.min_quality is None else scored == 1.0,
        cost_met=None if b.max_cost_usd is None else cost <= b.max_cost_usd,
    )


async def pool_prices(client: httpx.AsyncClient) -> dict[str, Price]:
    """Each pool model's price, as the gateway lists it on /v1/models."""
    r = await client.get("/v1/models")
    r.raise_for_status()
    return {m["id"]: Price(**m["price"]) for m in r.json()["data"] if m.get("price")}
