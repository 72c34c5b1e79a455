"""Load-aware latency prediction from live observations.

Per model the service time of one request is modelled as

    ttft  = wait + ttft0 + prefill_ms_per_token * prompt_tokens
    e2e   = ttft + tpot * output_tokens

where ``wait`` is the queueing delay implied by the requests already on the model's replicas
(each replica serves ``concurrency`` requests at once; :attr:`ModelLoad.ahead`: the gateway's
own count or what the replicas' engines report running and waiting, whichever is larger). When
no slot is free, the wait is the work the replicas hold (``ModelLoad.work_ms``: each request's
remaining service for its own prompt and output allowance, at the speed the replica runs now)
shared over the slots, plus each request admitted but not yet at a replica: this ingress's own
(the newest of ``ModelLoad.arriving_ms``) at its own expected service (its prompt's prefill, its
expected output), any other at what the replicas take to finish one more
(``ModelLoad.drain_ms``, busy time per finished request), never less than one mean service time
per slot (its prefill for the mean prompt, its decode for the mean output), which is all there
is without a report.
``ttft0`` and ``tpot`` start from the pool's priors and follow live observations as
exponentially weighted means; until this process has seen a model answer, its replicas'
reported time per output token stands in for the prior. The prompt's prefill, at the prior's
cost per token, is scaled by the replicas' reported slowdown (how much longer than their priors
they take now, at least 1). ``output_tokens`` is bounded by the
request's ``max_tokens``.

Admission's hard limit (a latency budget plus the pool's overrun) is checked on the expected
first token scaled by how far the first tokens of queued requests have come after their
admission-time prediction (``observe_first_token``: the log of observed / predicted, its
exponentially weighted mean plus ``z`` standard deviations of its own quantile, 0.99 by default,
and never below the worst of the last :data:`RECENT_FIRST_TOKENS` of them nor below 1, since a
lognormal fitted on a few samples underrates the tail; before any is seen, a spread of about 30%):
the queue's own misprediction, learned live, so a slowed-down machine sheds earlier instead of
cutting requests off. Since what is learned lags (a queued first token is seen only after its
wait), it is also never below the model's co-location worst case: a replica that shares its
node's CPUs (``ModelCard.guaranteed_speed`` < 1) may, once every model there is busy, run at that
share of its prior speed, which its reported slowdown only shows after a prefill has overrun.

The router budgets on a *high quantile*, not the mean: the log of observed / predicted is
tracked as an exponentially weighted mean and variance, and a prediction is scaled by
``exp(mu + z * sigma)`` for the configured quantile. The model adapts as load changes and
needs no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist

from router.types import ModelCard, ModelLoad

RECENT_FIRST_TOKENS = 32  # how many queued first tokens' lateness the hard limit remembers at worst


class Ewma:
    """Exponentially weighted mean and variance (West's incremental form)."""

    __slots__ = ("alpha", "mean", "var", "count")

    def __init__(self, initial: float, alpha: float, initial_var: float = 0.0) -> None:
        self.alpha = alpha
        self.mean = initial
        self.var = initial_var
        self.count = 0

    def update(self, value: float) -> None:
        self.count += 1
        diff = value - self.mean
        incr = self.alpha * diff
        self.mean += incr
        self.var = (1.0 - self.alpha) * (self.var + diff * incr)

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))


@dataclass(frozen=True)
class LatencyEstimate:
    """Predicted latency of one request on one model, at the configured quantile."""

    ttft_ms: float
    e2e_ms: float
    wait_ms: float
    output_tokens: float
    first_token_ms: float = 0.0  # the mean (not the quantile) of ttft: the wait plus the prompt's prefill
    first_token_hi_ms: float = 0.0  # first_token_ms at the quantile of the queue's live misprediction
    service_ms: float = 0.0  # its own expected time on a slot: its prompt's prefill and its expected output


@dataclass(frozen=True)
class Observation:
    """One finished request, as measured by the serving layer."""

    prompt_tokens: int
    output_tokens: int
    ttft_ms: float
    e2e_ms: float
    ahead_at_start: int = 0  # requests in flight or queued on the model when it was admitted


class _ModelState:
    def __init__(self, card: ModelCard, alpha: float) -> None:
        prior = card.latency_prior
        self.card = card
        self.ttft0 = Ewma(prior.ttft_ms, alpha)
        self.tpot = Ewma(prior.tpot_ms, alpha)
        self.output_tokens = Ewma(64.0, alpha)
        self.prompt_tokens = Ewma(50.0, alpha)
        # log(observed / predicted) of ttft and e2e: their spread gives the quantile uplift
        self.ttft_err = Ewma(0.0, alpha, initial_var=0.05)
        self.e2e_err = Ewma(0.0, alpha, initial_var=0.05)
        # log(observed / predicted) of a queued request's first token against its admission-time mean;
        # until queued requests have shown how far off it runs, assume about 30% either way
        self.first_token_err = Ewma(0.0, alpha, initial_var=0.1)
        # ...and the latest of them: the hard limit never assumes less lateness than the worst of these
        self.first_token_recent: deque[float] = deque(maxlen=RECENT_FIRST_TOKENS)


class LatencyModel:
    """Online per-model latency predictor."""

    def __init__(self, cards: list[ModelCard] | tuple[ModelCard, ...], *, quantile: float = 0.9,
                 hard_quantile: float = 0.99, alpha: float = 0.2) -> None:
        for name, q in (("quantile", quantile), ("hard_quantile", hard_quantile)):
            if not 0.5 <= q < 1.0:
                raise ValueError(f"{name} must be in [0.5, 1), got {q}")
        self._z = NormalDist().inv_cdf(quantile)
        # a cut-off costs its caller the whole wait, a refusal a few ms: the hard limit is checked far out
        self._z_hard = NormalDist().inv_cdf(hard_quantile)
        self._models = {card.name: _ModelState(card, alpha) for card in cards}
        self.quantile = quantile

    def _state(self, model: str) -> _ModelState:
        return self._models[model]

    def mean_service_ms(self, model: str) -> float:
        """One request's mean time on a slot: first token after the mean prompt, then the mean output."""
        st = self._state(model)
        prefill = st.card.latency_prior.prefill_ms_per_token * st.prompt_tokens.mean
        return st.ttft0.mean + prefill + st.tpot.mean * st.output_tokens.mean

    def wait_ms(self, model: str, ahead: int, drain_ms: float | None = None) -> float:
        """Expected queueing delay when ``ahead`` requests are already in flight or queued; ``drain_ms``:
        the replicas' reported time to finish one more request (else the mean service time per slot)."""
        card = self._state(model).card
        slots = max(1, card.concurrency * card.replicas)
        if ahead < slots:
            return 0.0
        if drain_ms is not None:  # never below the model's own mean service time per slot
            return (ahead - slots + 1) * max(drain_ms, self.mean_service_ms(model) / slots)
        # each full round of `slots` requests ahead of us costs one mean service time
        return (ahead - slots + 1) / slots * self.mean_service_ms(model)

    def queue_wait_ms(self, model: str, load: ModelLoad | None) -> float:
        """Expected queueing delay of a new request under ``load`` (see the module docstring)."""
        if load is None:
            return 0.0
        if load.work_ms is None:
            return self.wait_ms(model, load.ahead, load.drain_ms)
        card = self._state(model).card
        slots = max(1, card.concurrency * card.replicas)
        if load.ahead < slots:
            return 0.0
        per_request = max(load.drain_ms or 0.0, self.mean_service_ms(model) / slots)
        on_the_way = max(0, load.in_flight - load.running - load.queued)
        # the newest admissions are the ones no report holds yet: this ingress knows their own prompts
        known = [ms for ms in load.arriving_ms[:on_the_way] if ms is not None]
        return load.work_ms / slots + sum(known) / slots + (on_the_way - len(known)) * per_request

    def expected_output_tokens(self, model: str, max_tokens: int) -> float:
        return float(min(max_tokens, max(1.0, self._state(model).output_tokens.mean)))

    def predict(self, model: str, prompt_tokens: int, max_tokens: int,
                load: ModelLoad | None = None) -> LatencyEstimate:
        st = self._state(model)
        wait = self.queue_wait_ms(model, load)
        # the prior per-token prefill cost is never learned here: the replicas' present slowdown scales it
        slowdown = 1.0 if load is None or load.slowdown is None else max(1.0, load.slowdown)
        prefill = st.ttft0.mean + st.card.latency_prior.prefill_ms_per_token * prompt_tokens * slowdown
        # before its first own observation, the replicas' live decode speed beats the pool's prior
        reported = None if load is None else load.tpot_ms
        tpot = reported if st.tpot.count == 0 and reported is not None else st.tpot.mean
        # budget against the whole allowance: generation may run to max_tokens
        out = float(max_tokens)
        ttft_mean = wait + prefill
        e2e_mean = ttft_mean + tpot * out
        service = prefill + tpot * self.expected_output_tokens(model, max_tokens)
        ttft_q = ttft_mean * math.exp(st.ttft_err.mean + self._z * st.ttft_err.std)
        e2e_q = e2e_mean * math.exp(st.e2e_err.mean + self._z * st.e2e_err.std)
        err = st.first_token_err
        # co-located models all busy at once leave each its guaranteed share of the CPU, however fast it
        # ran a moment ago: a queued first token is never expected sooner than at that speed
        saturated = math.log(max(1.0, 1.0 / st.card.guaranteed_speed / slowdown))
        late = max(saturated, err.mean + self._z_hard * err.std, *st.first_token_recent)
        first_hi = ttft_mean * math.exp(late) if wait > 0 else ttft_mean
        return LatencyEstimate(ttft_ms=ttft_q, e2e_ms=e2e_q, wait_ms=wait,
                               output_tokens=self.expected_output_tokens(model, max_tokens), first_token_ms=ttft_mean,
                               first_token_hi_ms=first_hi, service_ms=service)

    def observe_first_token(self, model: str, predicted_ms: float, observed_ms: float) -> None:
        """A queued request's first token came ``observed_ms`` after admission, ``predicted_ms`` expected
        (a request cut off before it: the time it waited, a lower bound)."""
        if predicted_ms > 0:
            st, late = self._state(model), math.log(max(observed_ms, 1.0) / predicted_ms)
            st.first_token_err.update(late)
            st.first_token_recent.append(late)

    def observe(self, model: str, obs: Observation) -> None:
        st = self._state(model)
        # score the prediction we would have made, before learning from this observation
        wait = self.wait_ms(model, obs.ahead_at_start)
        prefill_tok = st.card.latency_prior.prefill_ms_per_token * obs.prompt_tokens
        ttft_pred = wait + st.ttft0.mean + prefill_tok
        e2e_pred = ttft_pred + st.tpot.mean * obs.output_tokens
        if obs.ttft_ms > 0 and ttft_pred > 0:
            st.ttft_err.update(math.log(obs.ttft_ms / ttft_pred))
        if obs.e2e_ms > 0 and e2e_pred > 0:
            st.e2e_err.update(math.log(obs.e2e_ms / e2e_pred))
        if obs.ahead_at_start < max(1, st.card.concurrency * st.card.replicas):
            # only uncontended requests teach the service-time terms; queueing is modelled apart
            st.ttft0.update(max(0.0, obs.ttft_ms - prefill_tok))
        if obs.output_tokens > 1:
            st.tpot.update(max(0.0, (obs.e2e_ms - obs.ttft_ms) / (obs.output_tokens - 1)))
        st.output_tokens.update(float(obs.output_tokens))
        st.prompt_tokens.update(float(obs.prompt_tokens))

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Current estimates per model, for metrics and debugging."""
        return {
            name: {
                "ttft0_ms": st.ttft0.mean,
                "tpot_ms": st.tpot.mean,
                "output_tokens": st.output_tokens.mean,
                "prompt_tokens": st.prompt_tokens.mean,
                "observations": float(st.tpot.count),
                "first_token_err_mean": st.first_token_err.mean,
                "first_token_err_std": st.first_token_err.std,
            }
            for name, st in self._models.items()
        }
