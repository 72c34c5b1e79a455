"""Brittleness of the cheap models: output health, shadow agreement, perturbation probes and
calibration of the quality predictor, as plain classes the gateway calls off the request path.

* Output health on all traffic: ``tiergate_output_health_total{model,condition}`` with
  condition ok | empty | refused | truncated, and the answers' mean token logprob; answers that had
  to be JSON or a tool call by whether they parse and validate,
  ``tiergate_structured_outputs_total{model,format,result}`` (``serve/telemetry/structured.py``).
* Shadow comparison on a capped sample: the same request re-asked of the strongest model;
  ``tiergate_shadow_requests_total{model,route_class,outcome}`` (agree | disagree | error |
  rate_capped | cost_capped | busy), and calibration counters by predicted-quality bin so that
  the expected calibration error is computable in PromQL:
  ``ECE = sum_bins |agreements - confidence| / sum_bins requests``.
* Perturbation probes on a capped sample: a meaning-preserving change of the prompt re-asked of
  the same model; ``tiergate_probe_requests_total{model,perturbation,outcome}`` (flip | stable |
  error | caps...).

Agreement is normalised exact match for closed (short) answers, embedding similarity otherwise.
"""

from __future__ import annotations

import difflib
import random
import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.errors import RegistryError
from serve.telemetry.embedder import TextEmbedder
from serve.telemetry.records import RequestRecord
from serve.telemetry.sampling import SAMPLED, BudgetedSampler, SamplerConfig


# ============================================================================ perturbations
def _whitespace(text: str, rng: random.Random) -> str:
    spaces = [m.start() for m in re.finditer(r" ", text)]
    if spaces and rng.random() < 0.5:
        i = rng.choice(spaces)
        return text[:i] + "  " + text[i + 1:]
    return rng.choice(("  ", "\n", " \n")) + text.strip() + rng.choice(("\n", "  ", "\n\n"))


def _casing(text: str, rng: random.Random) -> str:
    if any(c.isupper() for c in text):
        return text.lower()
    return text[:1].upper() + text[1:]


def _typo(text: str, rng: random.Random) -> str:
    words = [m for m in re.finditer(r"[A-Za-z]{4,}", text)]
    if not words:
        return _whitespace(text, rng)
    word = rng.choice(words)
    w = word.group()
    i = rng.randrange(1, len(w) - 2)  # keep the first and last letters
    swapped = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    if swapped == w:  # doubled letter: drop one instead
        swapped = w[:i] + w[i + 1:]
    return text[:word.start()] + swapped + text[word.end():]


PARAPHRASE_TEMPLATES = ("Please answer the following. {x}", "Question: {x}", "{x}\n\nThank you.",
                        "I have a question. {x}", "Could you help with this? {x}")


def _paraphrase(text: str, rng: random.Random) -> str:
    return rng.choice(PARAPHRASE_TEMPLATES).format(x=text.strip())


PERTURBATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "whitespace": _whitespace, "casing": _casing, "typo": _typo, "paraphrase": _paraphrase,
}


@dataclass(frozen=True)
class Perturbation:
    name: str
    text: str


class Perturber:
    """Applies one of the configured perturbations, chosen and applied with a seeded RNG."""

    def __init__(self, names: tuple[str, ...] = tuple(PERTURBATIONS), seed: int = 0) -> None:
        unknown = [n for n in names if n not in PERTURBATIONS]
        if unknown or not names:
            raise RegistryError(f"unknown perturbations {unknown}; valid perturbations: {', '.join(PERTURBATIONS)}")
        self.names = names
        self._rng = random.Random(seed)

    def perturb(self, text: str, name: str | None = None) -> Perturbation:
        name = name or self._rng.choice(self.names)
        if name not in PERTURBATIONS:
            raise RegistryError(f"unknown perturbation {name!r}; valid perturbations: {', '.join(PERTURBATIONS)}")
        out = PERTURBATIONS[name](text, self._rng)
        if out == text:  # always change something (e.g. casing of a text without letters)
            out = text + " "
        return Perturbation(name, out)


# ============================================================================ agreement
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalise_answer(text: str) -> str:
    """Lower case, NFKC, no punctuation, no articles, single spaces (SQuAD-style normalisation)."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|sorry|i apologi[sz]e|as an ai)\b|\bi (can ?not|can'?t|won'?t|am unable to|'m unable to)"
    r" (help|assist|provide|comply|do that|answer)", re.IGNORECASE)


def looks_refused(text: str) -> bool:
    """A heuristic for refusals ("I'm sorry, I can't help with that"), for output health."""
    return bool(_REFUSAL.search(text[:300]))


@dataclass(frozen=True)
class Agreement:
    method: str  # "exact" | "embedding" | "lexical"
    score: float
    agree: bool


class AgreementScorer:
    """Whether two answers to the same question agree.

    Closed answers (at most ``closed_max_words`` words once normalised) must match exactly after
    normalisation; longer ones must have cosine similarity >= ``similarity_threshold`` under
    ``embedder`` (or difflib's ratio when no embedder is given).
    """

    def __init__(self, embedder: TextEmbedder | None, *, similarity_threshold: float = 0.8,
                 closed_max_words: int = 4) -> None:
        self.embedder = embedder
        self.threshold = similarity_threshold
        self.closed_max_words = closed_max_words

    def is_closed(self, text: str) -> bool:
        return len(normalise_answer(text).split()) <= self.closed_max_words

    def score(self, a: str, b: str) -> Agreement:
        na, nb = normalise_answer(a), normalise_answer(b)
        if not na or not nb or self.is_closed(a) or self.is_closed(b):
            same = na == nb
            return Agreement("exact", 1.0 if same else 0.0, same)
        if self.embedder is not None:
            sim = self.embedder.similarity(a, b)
            return Agreement("embedding", sim, sim >= self.threshold)
        ratio = difflib.SequenceMatcher(None, na, nb).ratio()
        return Agreement("lexical", ratio, ratio >= self.threshold)


# ============================================================================ config & metrics
class BrittlenessConfig(BaseModel):
    """The ``monitoring.brittleness`` section of a pool config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    shadow: SamplerConfig = SamplerConfig(rate=0.02)
    shadow_model: str | None = Field(default=None, description="default: the pool's highest prior-quality model")
    probe: SamplerConfig = SamplerConfig(rate=0.01)
    perturbations: tuple[str, ...] = tuple(PERTURBATIONS)
    similarity_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    closed_max_words: int = Field(default=4, ge=1)
    calibration_bins: int = Field(default=10, ge=2, le=50)
    seed: int = 0

    @field_validator("perturbations")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in PERTURBATIONS]
        if unknown or not value:
            raise ValueError(f"unknown perturbations {unknown}; valid perturbations: {', '.join(PERTURBATIONS)}")
        return value


SIMILARITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
LOGPROB_BUCKETS = (-8.0, -5.0, -3.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, -0.1, 0.0)


def health_condition(rec: RequestRecord) -> str:
    """The one output-health condition of an answer (empty > refused > truncated > ok)."""
    if rec.empty_output:
        return "empty"
    if rec.refused:
        return "refused"
    if rec.finish_reason == "length":
        return "truncated"
    return "ok"


class BrittlenessMonitor:
    """Owns the samplers, the perturber, the agreement scorer and the brittleness metrics."""

    def __init__(self, registry: CollectorRegistry, config: BrittlenessConfig, scorer: AgreementScorer,
                 *, now: float = 0.0) -> None:
        self.config, self.scorer = config, scorer
        self.shadow_sampler = BudgetedSampler(config.shadow, seed=config.seed, now=now)
        self.probe_sampler = BudgetedSampler(config.probe, seed=config.seed + 1, now=now)
        self.perturber = Perturber(config.perturbations, seed=config.seed)
        r = registry
        self.health = Counter("tiergate_output_health", "Answers by output-health condition (ok, empty, "
                              "refused, truncated).", ["model", "condition"], registry=r)
        self.structured = Counter("tiergate_structured_outputs", "Answers that had to be JSON or a tool call, by "
                                  "format (json, tool_call) and result (valid, unparsable, schema_invalid).",
                                  ["model", "format", "result"], registry=r)
        self.logprob = Histogram("tiergate_output_mean_logprob", "Mean token logprob of answers.",
                                 ["model"], buckets=LOGPROB_BUCKETS, registry=r)
        self.shadow = Counter("tiergate_shadow_requests", "Shadow comparisons with the strongest model, by "
                              "outcome.", ["model", "route_class", "outcome"], registry=r)
        self.shadow_similarity = Histogram("tiergate_shadow_agreement_score", "Agreement score of shadow "
                                           "comparisons (1 = same answer).", ["model"],
                                           buckets=SIMILARITY_BUCKETS, registry=r)
        self.shadow_cost = Counter("tiergate_shadow_cost_usd", "Cost of shadow calls in USD, by shadow model.",
                                   ["model"], registry=r)
        self.probe = Counter("tiergate_probe_requests", "Perturbation probes, by outcome (flip = the answer "
                             "changed).", ["model", "perturbation", "outcome"], registry=r)
        self.probe_cost = Counter("tiergate_probe_cost_usd", "Cost of probe calls in USD.", ["model"], registry=r)
        self.cal_requests = Counter("tiergate_calibration_requests", "Shadowed requests by predicted-quality "
                                    "bin.", ["model", "bin"], registry=r)
        self.cal_agree = Counter("tiergate_calibration_agreements", "Shadowed requests that agreed with the "
                                 "strongest model, by predicted-quality bin.", ["model", "bin"], registry=r)
        self.cal_confidence = Counter("tiergate_calibration_confidence", "Sum of predicted quality of shadowed "
                                      "requests, by predicted-quality bin.", ["model", "bin"], registry=r)

    # ---------------------------------------------------------------- all traffic
    def observe_output(self, rec: RequestRecord) -> None:
        if not rec.model or rec.status >= 400:
            return
        self.health.labels(rec.model, health_condition(rec)).inc()
        if rec.structured_output:
            self.structured.labels(rec.model, rec.output_format, rec.structured_output).inc()
        if rec.mean_logprob is not None:
            self.logprob.labels(rec.model).observe(rec.mean_logprob)

    # ---------------------------------------------------------------- shadow
    def plan_shadow(self, *, model: str, route_class: str, shadow_model: str, est_cost_usd: float,
                    now: float, drawn: bool = False) -> bool:
        """True when this answer should be re-asked of ``shadow_model`` (then call a record method).
        ``drawn``: the caller made the rate draw (``sampling.draw``); only the caps are checked."""
        if not self.config.enabled or model == shadow_model:
            return False
        verdict = self.shadow_sampler.decide(est_cost_usd, now, drawn=drawn)
        if verdict == SAMPLED:
            return True
        if verdict != "unsampled":
            self.shadow.labels(model, route_class or "none", verdict).inc()
        return False

    def record_shadow(self, *, model: str, route_class: str, predicted_quality: float | None, answer: str,
                      shadow_answer: str, shadow_model: str, cost_usd: float = 0.0) -> Agreement:
        try:
            result = self.scorer.score(answer, shadow_answer)
        finally:
            self.shadow_sampler.done()
        self.shadow.labels(model, route_class or "none", "agree" if result.agree else "disagree").inc()
        self.shadow_similarity.labels(model).observe(result.score)
        self.shadow_cost.labels(shadow_model).inc(cost_usd)
        if predicted_quality is not None:
            b = self.bin_label(predicted_quality)
            self.cal_requests.labels(model, b).inc()
            self.cal_confidence.labels(model, b).inc(predicted_quality)
            if result.agree:
                self.cal_agree.labels(model, b).inc()
            else:
                self.cal_agree.labels(model, b)  # export the series at zero
        return result

    def record_shadow_error(self, *, model: str, route_class: str, shadow_model: str, cost_usd: float = 0.0,
                            preempted: bool = False) -> None:
        """The shadow call failed, or (``preempted``) gave way to a caller on its model."""
        self.shadow_sampler.done()
        self.shadow.labels(model, route_class or "none", "preempted" if preempted else "error").inc()
        self.shadow_cost.labels(shadow_model).inc(cost_usd)

    def bin_label(self, predicted_quality: float) -> str:
        n = self.config.calibration_bins
        i = min(n - 1, max(0, int(predicted_quality * n)))
        return f"{i / n:.2f}-{(i + 1) / n:.2f}"

    # ---------------------------------------------------------------- probes
    def plan_probe(self, *, model: str, prompt: str, est_cost_usd: float, now: float,
                   drawn: bool = False) -> Perturbation | None:
        """A perturbed prompt to re-ask ``model`` with, or None (not sampled or capped); ``drawn`` as in
        :meth:`plan_shadow`."""
        if not self.config.enabled:
            return None
        verdict = self.probe_sampler.decide(est_cost_usd, now, drawn=drawn)
        if verdict == SAMPLED:
            return self.perturber.perturb(prompt)
        if verdict != "unsampled":
            self.probe.labels(model, "none", verdict).inc()
        return None

    def record_probe(self, *, model: str, perturbation: str, answer: str, probe_answer: str,
                     cost_usd: float = 0.0) -> Agreement:
        try:
            result = self.scorer.score(answer, probe_answer)
        finally:
            self.probe_sampler.done()
        self.probe.labels(model, perturbation, "stable" if result.agree else "flip").inc()
        self.probe_cost.labels(model).inc(cost_usd)
        return result

    def record_probe_error(self, *, model: str, perturbation: str, cost_usd: float = 0.0,
                           preempted: bool = False) -> None:
        """The probe failed, or (``preempted``) gave way to a caller on its model."""
        self.probe_sampler.done()
        self.probe.labels(model, perturbation, "preempted" if preempted else "error").inc()
        self.probe_cost.labels(model).inc(cost_usd)
