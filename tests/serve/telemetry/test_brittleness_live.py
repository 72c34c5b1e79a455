"""Brittleness monitoring on the real CPU pool: serving a worse build of the cheap model moves
the shadow agreement and the probe flip rate that the gateway exports.

Two apps beside the main gateway, identical but for the weights behind the cheap model's name:

* ``britt-good`` serves ``smollm2-135m-instruct`` as shipped (Q4_1 GGUF);
* ``britt-worse`` serves, under the same name, the same weights re-quantized from that Q4_1 file
  to Q4_0 with llama.cpp's own quantizer. Re-quantizing an already quantized model compounds
  two rounding errors (llama.cpp refuses it unless ``allow_requantize`` is set, because it can
  severely reduce quality); it is a realistic bad build of the same model, and a real model.

Both shadow every answer with the strongest model (gemma3-270m) and probe every answer with a
perturbation re-asked of the same model, sampled at rate 1.0. Traffic is pinned to the cheap
model: closed questions with two worked examples (a few-shot prompt, so that gemma3-270m, a base
model, answers them instead of echoing), greedy decoding, at most 4 tokens, so agreement is the
normalised exact match. Each request waits for its own shadow and probe results, so both apps
see the same prompts and the same seeded perturbations in the same order: a paired comparison.

Perturbations are restricted to ``whitespace`` and ``casing``: they preserve the meaning for
any reader. ``typo`` and ``paraphrase`` change the answers of 135M-parameter models about half
the time whichever build is served (measured offline on these 24 questions: 15/24 and 11/24
flips for the shipped build, 13/24 and 12/24 for the worse one), which would drown the signal.

Figures seen through the gateway (24 questions, greedy): agreement with the shadow 16/24 for the
shipped build against 6/24 for the re-quantized one; probe flips 2/24 against 7/24. Greedy
decoding makes each figure reproducible on one llama.cpp build; the margins below (5 and 3
questions of 24, against differences of 10 and 5 measured) leave room for another build's
arithmetic turning a question or two, and are far above zero, so a hair's difference cannot
pass.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serve.telemetry.live import EVERY_REQUEST, LARGE, SMALL, by_label, pool, wait_until

pytestmark = pytest.mark.e2e

FEW_SHOT = [
    {"role": "system", "content": "Answer with one word."},
    {"role": "user", "content": "What is the capital of Spain?"},
    {"role": "assistant", "content": "Madrid"},
    {"role": "user", "content": "What color is grass?"},
    {"role": "assistant", "content": "Green"},
]
QUESTIONS = (
    "What is the capital of France?", "What is the capital of Japan?", "What is the capital of Italy?",
    "What is the capital of Germany?", "What is the capital of Egypt?", "What is the capital of Russia?",
    "What is the capital of England?", "What is the capital of China?", "What color is the sky on a clear day?",
    "What is the opposite of hot?", "What is the opposite of up?", "What is the opposite of day?",
    "What is the first month of the year?", "What is the last month of the year?", "What do bees make?",
    "What is the largest planet in the solar system?", "What color is snow?", "What color is coal?",
    "What do cows drink?", "Which planet do we live on?", "What is the closest star to Earth?",
    "What do you call a baby cat?", "What is the opposite of black?", "What color is an orange?",
)
AGREEMENT_MARGIN = 5 / len(QUESTIONS)
FLIP_MARGIN = 3 / len(QUESTIONS)
MONITORING = {"brittleness": {"shadow": EVERY_REQUEST, "probe": EVERY_REQUEST, "shadow_model": LARGE["name"],
                              "perturbations": ["whitespace", "casing"], "seed": 7}}


@pytest.fixture(scope="module")
def requantized(tmp_path_factory) -> str:
    """SmolLM2's shipped Q4_1 GGUF re-quantized to Q4_0 by llama.cpp (about a second)."""
    import ctypes

    import llama_cpp

    from serve.config import PackageWeights
    from serve.weights import resolve_weights

    source = resolve_weights(PackageWeights(**SMALL["weights"]), None)
    out = tmp_path_factory.mktemp("worse") / "smollm2-135m-instruct.requant-Q4_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) == 0
    return str(out)


@pytest.fixture(scope="module")
def apps(serve_cluster, requantized):
    from ray import serve

    worse = {**SMALL, "weights": {"path": requantized}, "quantization": "Q4_0"}
    deployed = {}
    try:
        for name, small in (("britt-good", SMALL), ("britt-worse", worse)):
            cfg = pool(name, [small, LARGE], MONITORING)
            deployed[name] = serve_cluster.deploy(name, {"pool_config": cfg}, f"/{name}")
        yield deployed
    finally:
        for name in deployed:
            serve.delete(name)


def _outcomes(base_url: str) -> tuple[dict[str, float], dict[str, float]]:
    model = SMALL["name"]
    return (by_label(base_url, "tiergate_shadow_requests_total", "outcome", model=model),
            by_label(base_url, "tiergate_probe_requests_total", "outcome", model=model))


def _drive(base_url: str) -> tuple[dict[str, float], dict[str, float]]:
    """Ask every question, one at a time, each waiting for its shadow and probe to be recorded."""
    with httpx.Client(base_url=f"{base_url}/v1", timeout=120) as client:
        for i, question in enumerate(QUESTIONS, 1):
            r = client.post("/chat/completions", json={
                "model": SMALL["name"], "temperature": 0, "max_tokens": 4,
                "messages": [*FEW_SHOT, {"role": "user", "content": question}]})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == SMALL["name"]

            def checked(i=i) -> bool:
                shadow, probe = _outcomes(base_url)
                return sum(shadow.values()) >= i and sum(probe.values()) >= i

            wait_until(checked, 60, f"shadow and probe of question {i} on {base_url}")
    return _outcomes(base_url)


def _rate(counts: dict[str, float], hit: str, miss: str) -> float:
    return counts.get(hit, 0.0) / (counts.get(hit, 0.0) + counts.get(miss, 0.0))


def test_a_worse_model_lowers_shadow_agreement_and_raises_probe_flips(apps):
    with ThreadPoolExecutor(2) as pool_:
        good, worse = pool_.map(_drive, (apps["britt-good"].base_url, apps["britt-worse"].base_url))
    n = len(QUESTIONS)
    for shadow, probe in (good, worse):
        # not vacuous: every answer was compared, none capped, none failed
        assert shadow.get("agree", 0) + shadow.get("disagree", 0) == n, shadow
        assert probe.get("flip", 0) + probe.get("stable", 0) == n, probe
    agreement = {"good": _rate(good[0], "agree", "disagree"), "worse": _rate(worse[0], "agree", "disagree")}
    flips = {"good": _rate(good[1], "flip", "stable"), "worse": _rate(worse[1], "flip", "stable")}
    print(f"shadow agreement {agreement}, probe flip rate {flips} over {n} questions")
    assert agreement["worse"] <= agreement["good"] - AGREEMENT_MARGIN, agreement
    assert flips["worse"] >= flips["good"] + FLIP_MARGIN, flips
