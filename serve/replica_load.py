"""Each model replica's load, reported on its responses and to a periodic poll.

A model replica (``ModelServer``) reports what its engine is doing as a :class:`ReplicaLoad`:
requests running and waiting (the engine's own figures: llama.cpp's lock queue, vLLM's
scheduler), its recent time to first token (its own queue included) and time per output token,
and how long it takes at present to finish one more request while busy (``drain_ms``: its busy
time per finished request, the larger of a recent mean and the last one, and at least the time
since its last request finished while it has been busy: quick to follow a slowdown, slow to trust
a speed-up), stamped with the replica's id and a sequence number. ``drain_ms``
is what each request ahead adds to a new request's wait, measured where the work is done: it
follows the real prompts and outputs and the CPU the replica actually gets. ``work_ms`` is the
work the replica holds (:class:`WorkLedger`): each of its requests' service at the pool's priors
for its own prompt and ``max_tokens``, its prefill and its decode each scaled by how much slower
than nominal the replica has run them lately, less what the running ones have done; prompts of 5
and 350 tokens cost what they cost. The report travels two ways:

- **piggybacked** on generation streams: the first batch of every stream carries one, and
  later batches one every :data:`REPORT_EVERY_S`, as one more item of the batch;
- **polled**: every ingress replica asks every replica of every model
  (``DeploymentHandle.broadcast``: a handle call reaches one replica, a broadcast all of them)
  every :data:`POLL_INTERVAL_S`.

On the ingress a :class:`LoadView` per model keeps each replica's newest report (by sequence
number) and sums them into the model's :class:`~router.types.ModelLoad`. The ingress's own
requests are taken out of a report as soon as they end, so a request that has finished is not
counted until the next report.

**Staleness.** A replica's load reaches every ingress replica at most :data:`POLL_INTERVAL_S`
plus one poll's round trip (at most :data:`POLL_TIMEOUT_S`) after it changes, sooner for models
the ingress is streaming from. A replica whose report has not been renewed for
:data:`MAX_AGE_S` (gone, or not answering) is dropped, and the model's load is then the
gateway's own in-flight count alone. ``ModelLoad.age_s`` says how old the oldest report used is.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from router.types import LatencyPrior, ModelLoad
from serve.engines.base import Chunk, Engine, GenerationRequest


POLL_INTERVAL_S = 1.0
POLL_TIMEOUT_S = 2.0
MAX_AGE_S = 3 * POLL_INTERVAL_S + POLL_TIMEOUT_S
REPORT_EVERY_S = 0.5
_ALPHA = 0.2  # weight of the newest request in the replica's TTFT/TPOT means


@dataclass(frozen=True)
class ReplicaLoad:
    """One model replica's report: what its engine is doing now."""

    replica: str
    seq: int  # the replica's own count of its reports: the newest wins
    running: int = 0
    waiting: int = 0
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    drain_ms: float | None = None  # busy time per finished request: what one more request ahead costs
    work_ms: float | None = None  # the remaining service of every request the replica holds, summed
    slowdown: float | None = None  # how much longer than the pool's priors it takes now


# ----------------------------------------------------------------------------- the replica's side
def replica_id() -> str:
    """This Serve replica's id; a fresh one outside Serve (in-process engines)."""
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - not inside a Serve replica
        return "local-" + uuid.uuid4().hex[:8]


class _Mean:
    def __init__(self) -> None:
        self.value: float | None = None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else self.value + _ALPHA * (x - self.value)


def prompt_tokens(request: GenerationRequest) -> int:
    """A prompt's size in tokens before the engine has tokenized it (about four characters each)."""
    if request.prompt is not None:
        return len(request.prompt) // 4 + 1
    return sum(len(m.content) // 4 + 8 for m in request.messages or ())


@dataclass
class _Job:
    prefill_ms: float  # nominal: the prior's first token for the request's prompt
    decode_ms: float  # nominal: the prior's time per token for its output allowance
    started: float | None = None
    first_at: float | None = None


class _Factor:
    """How much slower than nominal, a recent mean; 1 before any."""

    def __init__(self) -> None:
        self._mean = _Mean()

    def add(self, ratio: float) -> None:
        self._mean.add(ratio)

    @property
    def value(self) -> float:
        return 1.0 if self._mean.value is None else self._mean.value


class WorkLedger:
    """The work a replica holds, in milliseconds at its present speed.

    A request's nominal service is the pool's latency prior: the first token for its prompt
    (prefill) and the time per token for its output allowance (decode). Prefill and decode each
    have their own factor, how much slower than nominal the replica has run them lately: under CPU
    contention a long prompt's prefill slows down more than a short one's decode, so one factor
    learned on short requests would misprice long ones. The first ``concurrency`` requests, in
    arrival order, run; the rest wait. A request still in prefill longer than its factor says
    raises the prefill factor.
    """

    def __init__(self, prior: LatencyPrior, concurrency: int, clock: Callable[[], float]) -> None:
        self.prior = prior
        self.concurrency = max(1, concurrency)
        self.clock = clock
        self._jobs: dict[int, _Job] = {}
        self._prefill = _Factor()
        self._decode = _Factor()

    def _nominal_prefill(self, prompt: int) -> float:
        return self.prior.ttft_ms + self.prior.prefill_ms_per_token * prompt

    def _start_runnable(self, now: float) -> None:
        for job in list(self._jobs.values())[: self.concurrency]:
            if job.started is None:
                job.started = now

    def enter(self, key: int, request: GenerationRequest) -> None:
        self._jobs[key] = _Job(self._nominal_prefill(prompt_tokens(request)),
                               self.prior.tpot_ms * request.sampling.max_tokens)
        self._start_runnable(self.clock())

    def first_token(self, key: int, prompt: int) -> None:
        """The request's first token: its prefill against nominal (``prompt``: the engine's count)."""
        job, now = self._jobs.get(key), self.clock()
        if job is None or job.started is None:
            return
        job.first_at = now
        self._prefill.add((now - job.started) * 1000 / max(self._nominal_prefill(prompt), 1e-3))

    def leave(self, key: int, output: int) -> None:
        """A request ended; one that decoded teaches the decode factor."""
        now = self.clock()
        job = self._jobs.pop(key, None)
        if job is not None and job.first_at is not None and output > 1 and self.prior.tpot_ms > 0:
            self._decode.add((now - job.first_at) * 1000 / (self.prior.tpot_ms * (output - 1)))
        self._start_runnable(now)

    def factor(self) -> float:
        """The prefill factor, at least what a request still in prefill has taken so far, and never below
        1: a prompt that shares a prefix with the one before is mostly cached and looks many times faster
        than nominal, but the next prompt may share nothing (a long prompt priced at a cached speed was
        admitted behind a 15 s prefill it could not wait for)."""
        now = self.clock()
        stuck = [(now - j.started) * 1000 / j.prefill_ms for j in self._jobs.values()
                 if j.started is not None and j.first_at is None and j.prefill_ms > 0]
        return max([1.0, self._prefill.value, *stuck])

    def work_ms(self) -> float:
        now, pf, df = self.clock(), self.factor(), self._decode.value
        total = 0.0
        for j in self._jobs.values():
            if j.first_at is not None:  # decoding
                total += max(0.0, df * j.decode_ms - (now - j.first_at) * 1000)
            else:
                done = (now - j.started) * 1000 if j.started is not None else 0.0
                total += max(0.0, pf * j.prefill_ms - done) + df * j.decode_ms
        return total


class ReplicaMeter:
    """A model replica's reports: its engine's load, its streams' TTFT and TPOT, its drain and work."""

    def __init__(self, engine: Engine, replica: str, clock: Callable[[], float] = time.monotonic, *,
                 prior: LatencyPrior | None = None, concurrency: int = 1) -> None:
        self.engine = engine
        self.replica = replica
        self.clock = clock
        self.work = WorkLedger(prior, concurrency, clock) if prior is not None else None
        self._keys = itertools.count()
        self._seq = itertools.count(1)
        self._ttft = _Mean()
        self._tpot = _Mean()
        self._drain = _Mean()
        self._last_drain: float | None = None
        self._inside = 0  # streams in progress (running or waiting for the engine)
        self._busy_mark = 0.0  # busy time is counted up to here
        self._busy_ms = 0.0  # busy time since the last request finished

    def report(self) -> ReplicaLoad:
        """The engine's load now; its own TTFT/TPOT when it measures them (vLLM), else this meter's."""
        load = self.engine.load()
        ttft_s, tpot_s = load.extra.get("ttft_s"), load.extra.get("tpot_s")
        drain = None if self._drain.value is None else max(self._drain.value, self._last_drain or 0.0)
        if self._inside:  # busy since the last finish: the next one takes at least that long
            streak = self._busy_ms + (self.clock() - self._busy_mark) * 1000
            drain = max(drain or 0.0, streak)
        return ReplicaLoad(
            replica=self.replica, seq=next(self._seq), running=load.running, waiting=load.waiting,
            ttft_ms=ttft_s * 1000 if ttft_s is not None else self._ttft.value,
            tpot_ms=tpot_s * 1000 if tpot_s is not None else self._tpot.value, drain_ms=drain,
            work_ms=self.work.work_ms() if self.work is not None else None,
            slowdown=self.work.factor() if self.work is not None else None)

    def _enter(self) -> None:
        if not self._inside:
            self._busy_mark = self.clock()  # idle until now: not counted
        self._inside += 1

    def _leave(self) -> None:
        now = self.clock()
        self._busy_ms += (now - self._busy_mark) * 1000
        self._busy_mark = now
        self._inside -= 1
        self._drain.add(self._busy_ms)  # a finished request (or a cancelled one: its slot is free too)
        self._last_drain = self._busy_ms
        self._busy_ms = 0.0

    async def metered(self, batches: AsyncIterator[list[Chunk]],
                      request: GenerationRequest | None = None) -> AsyncIterator[list[Any]]:
        """``batches`` (of ``request``) with a report first in the first batch and in a later one every
        REPORT_EVERY_S; the stream's time to first token and per output token go into the replica's means."""
        began = self.clock()
        first_at: float | None = None
        last_report = None
        tokens, prompt, last_at = 0, 0, began
        key = next(self._keys)
        if self.work is not None and request is not None:
            self.work.enter(key, request)
        self._enter()
        try:
            async for batch in batches:
                now = self.clock()
                for chunk in batch:
                    tokens = max(tokens, chunk.completion_tokens)
                    prompt = max(prompt, chunk.prompt_tokens)
                    if first_at is None and (chunk.text or chunk.finish_reason):
                        first_at = now
                        self._ttft.add((now - began) * 1000)
                        if self.work is not None:
                            self.work.first_token(key, prompt)
                last_at = now
                if last_report is None or now - last_report >= REPORT_EVERY_S:
                    last_report = now
                    yield [self.report(), *batch]
                else:
                    yield batch
            if first_at is not None and tokens > 1:
                self._tpot.add((last_at - first_at) * 1000 / (tokens - 1))
        finally:
            if self.work is not None:
                self.work.leave(key, tokens)
            self._leave()


# ----------------------------------------------------------------------------- the ingress's side
@dataclass
class _Replica:
    load: ReplicaLoad
    received: float
    counted: set[int]  # this ingress's requests included in ``load``
    gone: int = 0  # of those, how many have ended since


class LoadView:
    """One model's replicas as this process last heard from them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_age_s: float = MAX_AGE_S) -> None:
        self.clock = clock
        self.max_age_s = max_age_s
        self._replicas: dict[str, _Replica] = {}
        self._active: dict[str, set[int]] = {}  # this ingress's requests streaming from each replica

    def report(self, load: ReplicaLoad, holder: int | None = None) -> None:
        """A replica's report; ``holder``: this process's request whose stream carried it."""
        active = self._active.setdefault(load.replica, set())
        if holder is not None:
            active.add(holder)
        known = self._replicas.get(load.replica)
        if known is None or load.seq > known.load.seq:
            self._replicas[load.replica] = _Replica(load, self.clock(), set(active))
        elif holder is not None:
            known.counted.add(holder)  # it ran when the older report was taken, so also at the newer one

    def ended(self, replica: str, holder: int) -> None:
        """This process's request on ``replica`` has finished: no longer count it."""
        active = self._active.get(replica)
        if active is not None:
            active.discard(holder)
            if not active:
                del self._active[replica]
        known = self._replicas.get(replica)
        if known is not None and holder in known.counted:
            known.counted.discard(holder)
            known.gone += 1

    def polled(self, loads: Sequence[ReplicaLoad]) -> None:
        """A poll's answers (every replica that answered); replicas silent too long are dropped."""
        for load in loads:
            self.report(load)
        cutoff = self.clock() - self.max_age_s
        for name in [n for n, r in self._replicas.items() if r.received < cutoff]:
            del self._replicas[name]

    def model_load(self, in_flight: int, healthy: bool, arriving: tuple[float | None, ...] = ()) -> ModelLoad:
        """The model's load for the router: the gateway's count beside the replicas' fresh reports;
        ``arriving``: this ingress's own requests' expected services, newest first."""
        now = self.clock()
        fresh = [r for r in self._replicas.values() if now - r.received <= self.max_age_s]
        if not fresh:
            return ModelLoad(in_flight=in_flight, healthy=healthy, arriving_ms=arriving)
        ttfts = [r.load.ttft_ms for r in fresh if r.load.ttft_ms is not None]
        tpots = [r.load.tpot_ms for r in fresh if r.load.tpot_ms is not None]
        drains = [r.load.drain_ms for r in fresh if r.load.drain_ms]
        works = [r.load.work_ms * _left(r) for r in fresh if r.load.work_ms is not None]
        slowdowns = [r.load.slowdown for r in fresh if r.load.slowdown is not None]
        # replicas drain in parallel: their rates add up (only when every fresh replica has one)
        return ModelLoad(
            in_flight=in_flight, healthy=healthy,
            running=sum(max(0, r.load.running - r.gone) for r in fresh),
            queued=sum(r.load.waiting for r in fresh),
            ttft_ms=sum(ttfts) / len(ttfts) if ttfts else None,
            tpot_ms=sum(tpots) / len(tpots) if tpots else None,
            age_s=max(now - r.received for r in fresh),
            drain_ms=1.0 / sum(1.0 / d for d in drains) if drains and len(drains) == len(fresh) else None,
            work_ms=sum(works) if len(works) == len(fresh) else None,
            slowdown=max(slowdowns) if slowdowns else None, arriving_ms=arriving)


def _left(r: _Replica) -> float:
    """The share of a report's requests still there: this ingress's own that ended since are gone."""
    held = r.load.running + r.load.waiting
    return max(0.0, held - r.gone) / held if held else 1.0


def reported(load: ModelLoad) -> dict[str, Any]:
    """What the model's replicas reported, as ``GET /v1/tiergate/load`` shows it."""
    return {"running": load.running, "queued": load.queued, "ttft_ms": load.ttft_ms, "tpot_ms": load.tpot_ms,
            "drain_ms": load.drain_ms, "work_ms": load.work_ms, "slowdown": load.slowdown,
            "report_age_s": load.age_s}
