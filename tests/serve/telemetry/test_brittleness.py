"""Brittleness: perturbations, agreement, capped sampling and the counters they feed."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router.errors import RegistryError
from serve.telemetry.brittleness import (
    AgreementScorer, BrittlenessConfig, BrittlenessMonitor, Perturber, looks_refused, normalise_answer,
)
from serve.telemetry.embedder import HashingEmbedder
from serve.telemetry.records import RequestRecord
from serve.telemetry.sampling import BudgetedSampler, SamplerConfig

PROMPT = "What is the capital city of France? Answer with one word."


def values(registry, name):
    text = generate_latest(registry).decode()
    return {tuple(sorted(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name}


@pytest.mark.parametrize("name", ["whitespace", "casing", "typo", "paraphrase"])
def test_each_perturbation_changes_the_text_but_not_its_words(name):
    a = Perturber((name,), seed=3).perturb(PROMPT)
    b = Perturber((name,), seed=3).perturb(PROMPT)
    assert a == b and a.name == name  # seeded: repeatable
    assert a.text != PROMPT
    if name in ("whitespace", "casing"):
        assert normalise_answer(a.text) == normalise_answer(PROMPT)
    if name == "typo":
        changed = [(x, y) for x, y in zip(a.text.split(), PROMPT.split(), strict=True) if x != y]
        assert len(changed) == 1
        x, y = changed[0]
        assert sorted(x) == sorted(y) and x[0] == y[0] and x[-1] == y[-1]
    if name == "paraphrase":
        assert PROMPT in a.text


def test_perturber_draws_every_configured_kind_and_rejects_unknown():
    p = Perturber(seed=1)
    assert {p.perturb(PROMPT).name for _ in range(40)} == {"whitespace", "casing", "typo", "paraphrase"}
    with pytest.raises(RegistryError, match="valid perturbations: whitespace, casing, typo, paraphrase"):
        Perturber(("synonym",))


def test_closed_answers_use_normalised_exact_match():
    scorer = AgreementScorer(None)
    assert scorer.score("Paris.", "paris").agree
    assert scorer.score("The Paris", "Paris!").method == "exact"
    assert not scorer.score("Paris", "Lyon").agree
    assert not scorer.score("", "Paris").agree
    assert scorer.score("", "  ").agree


def test_open_answers_use_the_embedder():
    scorer = AgreementScorer(HashingEmbedder(), similarity_threshold=0.8)
    same = scorer.score("Bake the salmon for twenty minutes at 200 degrees.",
                        "bake the salmon at 200 degrees for twenty minutes")
    other = scorer.score("Bake the salmon for twenty minutes at 200 degrees.",
                         "A linked list is reversed by walking it once and flipping pointers.")
    assert same.method == other.method == "embedding"
    assert same.agree and same.score > 0.99
    assert not other.agree and other.score < 0.3


def test_open_answers_with_the_real_minilm(minilm):
    scorer = AgreementScorer(minilm, similarity_threshold=0.8)
    para = scorer.score("The Eiffel Tower is in Paris, the capital of France.",
                        "Paris, France's capital, is where the Eiffel Tower stands.")
    off = scorer.score("The Eiffel Tower is in Paris, the capital of France.",
                       "To reverse a linked list, walk it once and flip each node's pointer.")
    assert para.agree and not off.agree and para.score > off.score + 0.5


def test_refusal_heuristic():
    assert looks_refused("I'm sorry, but I can't help with that.")
    assert looks_refused("As an AI language model I cannot provide medical advice.")
    assert not looks_refused("Paris is the capital of France.")
    assert not looks_refused("I can help: bake it for 20 minutes.")


def test_sampler_rate_cost_and_concurrency_caps():
    always = SamplerConfig(rate=1.0, max_per_minute=60, burst=2, max_cost_usd_per_hour=3.6, max_in_flight=10)
    s = BudgetedSampler(always, now=0.0)
    assert [s.decide(0.0, 0.0) for _ in range(3)] == ["sampled", "sampled", "rate_capped"]
    assert s.decide(0.0, 1.0) == "sampled"  # one token back after a second at 60/min
    c = BudgetedSampler(always.model_copy(update={"max_per_minute": 1e6, "burst": 100}), now=0.0)
    assert c.decide(3.0, 0.0) == "sampled"
    assert c.decide(1.0, 0.0) == "cost_capped"  # 3.6 USD/h bucket holds 0.6 now
    assert c.decide(1.0, 400.0) == "sampled"  # 0.001 USD/s refill
    b = BudgetedSampler(always.model_copy(update={"max_in_flight": 1}), now=0.0)
    assert b.decide(0.0, 0.0) == "sampled" and b.decide(0.0, 0.0) == "busy"
    b.done()
    assert b.decide(0.0, 0.0) == "sampled"
    # a caller that never reports back (its replica died) holds its slot only slot_timeout_s
    assert b.decide(0.0, 299.0) == "busy" and b.decide(0.0, 301.0) == "sampled"
    rare = BudgetedSampler(SamplerConfig(rate=0.05, max_per_minute=1e6, burst=10_000, max_in_flight=10_000), seed=4)
    drawn = [rare.decide(0.0, 0.0) for _ in range(4000)].count("sampled")
    assert 140 < drawn < 260  # 5 % of 4000 = 200


def test_monitor_counters_and_ece_from_them():
    registry = CollectorRegistry()
    cfg = BrittlenessConfig(shadow=SamplerConfig(rate=1.0, max_per_minute=1e6, burst=1000, max_in_flight=1000),
                            probe=SamplerConfig(rate=1.0, max_per_minute=1e6, burst=1000, max_in_flight=1000))
    m = BrittlenessMonitor(registry, cfg, AgreementScorer(HashingEmbedder()))
    # five shadowed answers at predicted quality 0.9, of which two agree: that bin is over-confident
    for i in range(5):
        assert m.plan_shadow(model="small", route_class="chat", shadow_model="large", est_cost_usd=0.0, now=0.0)
        m.record_shadow(model="small", route_class="chat", predicted_quality=0.9, answer="Paris",
                        shadow_answer="Paris" if i < 2 else "Lyon", shadow_model="large", cost_usd=0.001)
    assert not m.plan_shadow(model="large", route_class="chat", shadow_model="large", est_cost_usd=0.0, now=0.0)
    shadow = values(registry, "tiergate_shadow_requests_total")
    assert shadow[(("model", "small"), ("outcome", "agree"), ("route_class", "chat"))] == 2
    assert shadow[(("model", "small"), ("outcome", "disagree"), ("route_class", "chat"))] == 3
    n = values(registry, "tiergate_calibration_requests_total")[(("bin", "0.90-1.00"), ("model", "small"))]
    agree = values(registry, "tiergate_calibration_agreements_total")[(("bin", "0.90-1.00"), ("model", "small"))]
    conf = values(registry, "tiergate_calibration_confidence_total")[(("bin", "0.90-1.00"), ("model", "small"))]
    assert abs(agree - conf) / n == pytest.approx(0.9 - 0.4)  # the ECE of a single bin
    assert values(registry, "tiergate_shadow_cost_usd_total")[(("model", "large"),)] == pytest.approx(0.005)
    # probes: the same answer is stable, a changed one is a flip
    probe = m.plan_probe(model="small", prompt=PROMPT, est_cost_usd=0.0, now=0.0)
    assert probe is not None and probe.text != PROMPT
    m.record_probe(model="small", perturbation=probe.name, answer="Paris", probe_answer="paris.")
    probe = m.plan_probe(model="small", prompt=PROMPT, est_cost_usd=0.0, now=0.0)
    m.record_probe(model="small", perturbation=probe.name, answer="Paris", probe_answer="Marseille")
    outcomes = {}
    for labels, v in values(registry, "tiergate_probe_requests_total").items():
        outcomes[dict(labels)["outcome"]] = outcomes.get(dict(labels)["outcome"], 0) + v
    assert outcomes == {"stable": 1, "flip": 1}
    assert m.shadow_sampler.in_flight == 0 and m.probe_sampler.in_flight == 0


def test_capped_calls_are_counted_not_made():
    registry = CollectorRegistry()
    cfg = BrittlenessConfig(shadow=SamplerConfig(rate=1.0, max_per_minute=0.0, burst=1, max_in_flight=5))
    m = BrittlenessMonitor(registry, cfg, AgreementScorer(None))
    plans = [m.plan_shadow(model="small", route_class="", shadow_model="large", est_cost_usd=0.0, now=0.0)
             for _ in range(3)]
    assert plans == [True, False, False]
    shadow = values(registry, "tiergate_shadow_requests_total")
    assert shadow[(("model", "small"), ("outcome", "rate_capped"), ("route_class", "none"))] == 2
    m.record_shadow_error(model="small", route_class="", shadow_model="large")
    assert values(registry, "tiergate_shadow_requests_total")[
        (("model", "small"), ("outcome", "error"), ("route_class", "none"))] == 1


def test_output_health_on_all_traffic():
    registry = CollectorRegistry()
    m = BrittlenessMonitor(registry, BrittlenessConfig(), AgreementScorer(None))
    base = dict(endpoint="chat", requested_model="auto", model="small", route_reason="cheapest_feasible", status=200)
    for kw in ({"finish_reason": "stop", "mean_logprob": -0.4}, {"empty_output": True}, {"refused": True},
               {"finish_reason": "length"}, {"finish_reason": "stop"}):
        m.observe_output(RequestRecord(**base, **kw))
    m.observe_output(RequestRecord(**{**base, "status": 503, "model": ""}))
    health = {dict(k)["condition"]: v for k, v in values(registry, "tiergate_output_health_total").items()}
    assert health == {"ok": 2, "empty": 1, "refused": 1, "truncated": 1}
    assert values(registry, "tiergate_output_mean_logprob_count")[(("model", "small"),)] == 1


def test_a_preempted_check_is_counted_apart_from_errors_and_gives_its_grant_back():
    registry = CollectorRegistry()
    cfg = BrittlenessConfig(shadow=SamplerConfig(rate=1.0, max_in_flight=1))
    m = BrittlenessMonitor(registry, cfg, AgreementScorer(None))
    common = {"model": "cheap", "route_class": "", "shadow_model": "dear"}
    assert m.plan_shadow(**common, est_cost_usd=0.0, now=0.0)
    assert not m.plan_shadow(**common, est_cost_usd=0.0, now=0.0)  # its one grant is out
    m.record_shadow_error(**common, preempted=True)
    assert m.plan_shadow(**common, est_cost_usd=0.0, now=0.0)  # given back
    outcomes = {s.labels["outcome"]: s.value for f in text_string_to_metric_families(generate_latest(registry).decode())
                for s in f.samples if s.name == "tiergate_shadow_requests_total"}
    assert outcomes == {"busy": 1.0, "preempted": 1.0}  # no "error"
