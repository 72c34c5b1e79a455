"""Scenarios drawn from labelled sets, and quality judged on scored answers: the real labelled files
(the shipped closed-form set; MMLU and GSM8K from ../shared where present), the real scorer, the real
scenario files. The client's side runs against httpx's MockTransport (no server): the answers are
injected so that the verdict on each is known."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from loadtests.client import Price, RequestResult, send
from loadtests.labelled import read_items
from loadtests.markdown import render
from loadtests.report import _scenario_digest, beats_at, pooled_accuracy, verdicts, write
from loadtests.runner import Run
from loadtests.scenario import Scenario, load_scenario, plan
from loadtests.summary import summarize
from serve.evaluation.label import MAX_TOKENS
from serve.evaluation.scorer import product_prompt, score_item, scoring_kind

ROOT = Path(__file__).resolve().parents[2]
CPU_SET = "deploy/eval/cpu-labelled.jsonl"
SHARED = ROOT.parent / "shared"
MIXED = ROOT / "loadtests" / "scenarios" / "mixed.yaml"
PRICES = {"small": Price(0.02, 0.06), "big": Price(0.05, 0.15)}
needs_shared = pytest.mark.skipif(not (SHARED / "data" / "labelled" / "mmlu-dev.jsonl").exists(),
                                  reason="labelled MMLU/GSM8K sets not found under ../shared")


def _scenario(*classes: dict, **over) -> Scenario:
    return Scenario.model_validate({"name": "t", "seed": 11, "classes": list(classes), **over})


def _quick(**over) -> dict:
    return {"name": "quick", "weight": 1, "budget": {"max_latency_ms": 60_000, "min_quality": 0.5},
            "labelled": {"file": CPU_SET, "items": 12}, **over}


def _item(item_id: str, path: Path = ROOT / CPU_SET) -> dict:
    return next(it for it in read_items(path) if it["id"] == item_id)


# --- scenario loading --------------------------------------------------------------------------------


@needs_shared
def test_mixed_scenario_draws_real_items_from_all_three_sets():
    s = load_scenario(MIXED)
    by_class = {c.name: s.items(c) for c in s.classes}
    assert {k: len(v) for k, v in by_class.items()} == {c.name: c.labelled.items for c in s.classes}
    assert {k: {scoring_kind(dict(it)) for it in v} for k, v in by_class.items() if k != "quick-facts"} == \
        {"exam": {"choice"}, "math": {"gsm8k"}}
    assert all(it["id"].startswith("cpu/") for it in by_class["quick-facts"])
    assert len({it["id"] for it in by_class["exam"]}) == len(by_class["exam"])  # drawn without replacement
    assert len({it["task"] for it in by_class["exam"]}) > 20  # spread over MMLU's subjects
    # the budgets stay: a tight latency budget, a quality floor, a cost cap
    budgets = {c.name: c.budget for c in s.classes}
    assert budgets["quick-facts"].max_latency_ms and budgets["exam"].min_quality and budgets["math"].max_cost_usd
    again = load_scenario(MIXED)
    assert [it["id"] for c in again.classes for it in again.items(c)] == \
        [it["id"] for c in s.classes for it in s.items(c)]  # seeded


@needs_shared
def test_plan_sends_the_product_prompt_with_the_kinds_max_tokens():
    s = load_scenario(MIXED)
    reqs = plan(s, 40, 1.0)
    assert {r.klass for r in reqs} == {"quick-facts", "exam", "math"}
    for r in reqs:
        item = dict(r.item)
        assert r.body["messages"] == [{"role": "user", "content": product_prompt(item)}]
        assert r.body["max_tokens"] == MAX_TOKENS[scoring_kind(item)]
        assert r.body["temperature"] == 0 and r.body["routing"] == s.klass(r.klass).budget.routing()
    exam = next(r for r in reqs if r.klass == "exam")
    assert exam.body["messages"][0]["content"] != exam.item["prompt"]  # the set's answer-format instruction


def test_a_class_setting_max_tokens_overrides_the_kinds():
    s = _scenario(_quick(max_tokens=3, endpoint="completions"))
    r = plan(s, 1, None)[0]
    assert r.body["max_tokens"] == 3 and r.body["prompt"] == product_prompt(dict(r.item))


def test_a_run_uses_every_drawn_item_before_repeating_and_offsets_move_on():
    s = _scenario(_quick())
    drawn = [it["id"] for it in s.items(s.classes[0])]
    first = [r.item["id"] for r in plan(s, 12, 1.0)]
    assert sorted(first) == sorted(drawn)  # 12 requests, 12 items: each once
    assert [r.item["id"] for r in plan(s, 12, 1.0)] == first  # the same requests for every policy
    moved = [r.item["id"] for r in plan(s, 12, 1.0, item_offset=5)]
    assert moved == first[5:] + first[:5]  # same slots, the next items
    assert [r.at_s for r in plan(s, 12, 1.0, item_offset=5)] == [r.at_s for r in plan(s, 12, 1.0)]


def test_the_draw_depends_on_the_seed_and_the_class():
    a = _scenario(_quick(), _quick(name="other"))
    ids = [[it["id"] for it in a.items(c)] for c in a.classes]
    assert ids[0] != ids[1]
    b = _scenario(_quick(), seed=12)
    assert [it["id"] for it in b.items(b.classes[0])] != ids[0]


def test_a_quality_floor_needs_labelled_items():
    with pytest.raises(ValueError, match="must draw labelled items"):
        _scenario({"name": "q", "weight": 1, "max_tokens": 4, "prompts": ["x"], "budget": {"min_quality": 0.5}})
    with pytest.raises(ValueError, match="either prompts or labelled"):
        _scenario(_quick(prompts=["x"]))
    with pytest.raises(ValueError, match="either prompts or labelled"):
        _scenario({"name": "q", "weight": 1, "max_tokens": 4})
    with pytest.raises(ValueError, match="max_tokens is required with prompts"):
        _scenario({"name": "q", "weight": 1, "prompts": ["x"]})
    with pytest.raises(ValueError, match="extra"):
        _scenario(_quick(labelled={"file": CPU_SET, "items": 2, "count": 3}))


def test_labelled_file_errors_name_the_file(tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text(json.dumps({"name": "t", "classes": [_quick(labelled={"file": "nope/missing.jsonl",
                                                                          "items": 2})]}))
    with pytest.raises(ValueError, match=r"class quick: labelled set .*nope/missing\.jsonl does not exist"):
        load_scenario(scen)
    scen.write_text(json.dumps({"name": "t", "classes": [_quick(labelled={"file": CPU_SET, "items": 10_000})]}))
    with pytest.raises(ValueError, match=r"asked for 10000 items, but only 199 are available"):
        load_scenario(scen)
    bad = tmp_path / "data" / "bad.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"id": "x", "task": "t", "prompt": "p", "answer": ["1"]}\n')
    scen.write_text(json.dumps({"name": "t", "shared_dir": str(tmp_path), "classes": [
        _quick(labelled={"file": "data/bad.jsonl", "root": "shared", "items": 1})]}))
    with pytest.raises(ValueError, match="item 1 lacks kind"):
        load_scenario(scen)


def test_shared_root_follows_the_setting_and_exclusions_apply(tmp_path):
    src = [json.loads(line) for line in (ROOT / CPU_SET).read_text().split("\n") if line][:6]
    (tmp_path / "set.jsonl").write_text("".join(json.dumps(it) + "\n" for it in src))
    (tmp_path / "seen.jsonl").write_text("".join(json.dumps({"id": it["id"]}) + "\n" for it in src[:4]))
    scen = tmp_path / "s.yaml"
    spec = {"file": "set.jsonl", "root": "shared", "items": 2, "exclude": ["seen.jsonl"]}
    scen.write_text(json.dumps({"name": "t", "shared_dir": "/nonexistent", "classes": [_quick(labelled=spec)]}))
    with pytest.raises(ValueError, match="/nonexistent/set.jsonl"):
        load_scenario(scen)
    s = load_scenario(scen, shared_dir=str(tmp_path))  # the command line's --shared-dir
    assert {it["id"] for it in s.items(s.classes[0])} == {src[4]["id"], src[5]["id"]}  # the unseen two


@needs_shared
def test_mmlu_prompt_with_a_next_line_character_is_read_whole():
    # one MMLU prompt holds U+0085, which str.splitlines() would treat as a line break
    items = read_items(SHARED / "data" / "labelled" / "mmlu-dev.jsonl")
    assert len(items) == 10556 and any("\x85" in it["prompt"] for it in items)


# --- scoring on the client's side --------------------------------------------------------------------


def _sse(*events) -> bytes:
    return b"".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events)


def _chat_stream(*pieces: str, model: str = "small") -> bytes:
    chunks = [{"model": model, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
              for p in pieces]
    chunks[-1]["choices"][0]["finish_reason"] = "stop"
    return _sse(*chunks, {"model": model, "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 3},
                          "tiergate": {"cost_usd": 5.8e-7}}, "[DONE]")


def _headers(quality: str) -> dict[str, str]:
    return {"x-tiergate-model": "small", "x-tiergate-predicted-quality": quality,
            "content-type": "text/event-stream"}


async def _send(item: dict, content: bytes, quality: str = "0.99", **klass) -> RequestResult:
    s = _scenario(_quick(**klass))
    req = next(r for r in plan(s, 12, None) if r.item["id"] == item["id"])
    handler = lambda request: httpx.Response(200, content=content, headers=_headers(quality))  # noqa: E731
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://t") as client:
        return await send(client, req, "auto", "tiergate", PRICES, time.perf_counter(), 5.0)


def _first_drawn(s: Scenario) -> dict:
    return dict(s.items(s.classes[0])[0])


async def test_a_correct_streamed_answer_meets_the_quality_budget():
    s = _scenario(_quick())
    item = _first_drawn(s)
    gold = item["answer"][0]
    half = max(1, len(gold) // 2)
    r = await _send(item, _chat_stream(gold[:half], gold[half:], "."))  # the answer split across chunks
    assert r.outcome == "ok" and r.reply == gold + "." and r.item_id == item["id"]
    assert r.score == 1.0 == score_item(item, gold + ".")
    assert r.quality_met is True and r.budget_met


async def test_a_wrong_answer_misses_the_quality_budget_whatever_the_prediction():
    s = _scenario(_quick())
    item = _first_drawn(s)
    r = await _send(item, _chat_stream("I", " do not know"), quality="0.99")
    assert r.predicted_quality == pytest.approx(0.99)  # recorded ...
    assert r.score == 0.0 and r.quality_met is False and not r.budget_met  # ... but it decides nothing
    low = await _send(item, _chat_stream(item["answer"][0]), quality="0.01")
    assert low.quality_met is True and low.budget_met  # a correct answer meets the floor, predicted low or not


async def test_whole_chat_and_completion_answers_are_scored():
    s = _scenario(_quick(stream=False))
    item = _first_drawn(s)
    body = {"model": "small", "choices": [{"index": 0, "message": {"role": "assistant", "content": item["answer"][0]},
                                           "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 2}}
    r = await _send(item, json.dumps(body).encode(), stream=False)
    assert (r.reply, r.score, r.quality_met) == (item["answer"][0], 1.0, True)
    stream = _sse(*({"model": "small", "choices": [{"index": 0, "text": t, "finish_reason": f}]}
                    for t, f in (("No", None), ("pe", "stop"))),
                  {"model": "small", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}, "[DONE]")
    c = await _send(item, stream, endpoint="completions")
    assert (c.reply, c.score, c.quality_met) == ("Nope", 0.0, False)


@needs_shared
def test_mmlu_and_gsm8k_answers_score_by_their_sets_conventions():
    mmlu = _item("mmlu/abstract_algebra/0", SHARED / "data" / "labelled" / "mmlu-dev.jsonl")
    gsm = _item("gsm8k/0", SHARED / "data" / "labelled" / "gsm8k.jsonl")
    assert mmlu["answer"] == ["B"] and gsm["answer"] == ["18"]
    assert score_item(mmlu, "B. 4") == 1.0 and score_item(mmlu, "C") == 0.0
    assert score_item(gsm, "16 - 3 - 4 = 9 eggs, so $18") == 1.0 and score_item(gsm, "18 eggs, 9 sold") == 0.0


async def test_unanswered_requests_of_a_labelled_class_count_against_its_accuracy():
    s = _scenario(_quick())
    item = _first_drawn(s)
    req = next(r for r in plan(s, 12, None) if r.item["id"] == item["id"])
    refuse = lambda q: httpx.Response(429, json={"error": {"type": "rate_limit", "message": "busy"}})  # noqa: E731
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse), base_url="http://t") as client:
        r = await send(client, req, "auto", "tiergate", PRICES, time.perf_counter(), 5.0)
    assert r.outcome == "rejected" and r.item_id == item["id"] and r.score is None and not r.budget_met


# --- figures, verdicts, the report ---------------------------------------------------------------------


def _res(i: int, klass: str, score: float | None, cost: float, policy: str = "tiergate", floor: bool = True,
         outcome: str = "ok") -> RequestResult:
    return RequestResult(index=i, klass=klass, policy=policy, requested_model="auto", stream=True, outcome=outcome,
                         model="small", e2e_s=0.2, ttft_s=0.05, completion_tokens=3, cost_usd=cost,
                         item_id=f"{klass}/{i}" if score is not None or outcome != "ok" else "",
                         score=score, latency_met=True,
                         quality_met=(score == 1.0) if floor and (score is not None or outcome != "ok") else None)


def test_summary_reports_accuracy_and_the_floor_per_class():
    rs = (_res(0, "exam", 1.0, 2e-6), _res(1, "exam", 0.0, 2e-6), _res(2, "exam", 1.0, 2e-6),
          _res(3, "exam", None, 0.0, outcome="rejected"), _res(4, "facts", 1.0, 1e-6, floor=False),
          _res(5, "facts", 0.0, 1e-6, floor=False), _res(6, "plain", None, 1e-6, floor=False))
    s = summarize(Run("tiergate", "open", 1.0, 2.0, rs), {"exam": 0.5, "facts": None, "plain": None})
    assert (s["scored_requests"], s["correct"], s["accuracy"]) == (6, 3, 0.5)
    # exam/1 (wrong) and exam/3 (refused) miss; facts/5 is wrong but its class sets no floor
    assert s["budget_met_rate"] == pytest.approx(5 / 7, abs=1e-4)
    assert s["budget_met_per_usd"] == pytest.approx(5 / 9e-6, rel=1e-6)
    assert s["budget_met_per_1k_requests"] == pytest.approx(714.3)
    exam = s["per_class"]["exam"]
    assert (exam["accuracy"], exam["accuracy_answered"], exam["min_quality"], exam["floor_met"]) == \
        (0.5, pytest.approx(2 / 3, abs=1e-4), 0.5, True)  # 2 of 4 (refusal counts wrong) >= 0.5
    assert s["per_class"]["facts"]["floor_met"] is None and s["per_class"]["plain"]["accuracy"] is None
    s2 = summarize(Run("tiergate", "open", 1.0, 2.0, rs), {"exam": 0.6})
    assert s2["per_class"]["exam"]["floor_met"] is False


def test_verdicts_name_the_rates_where_the_router_beats_every_fixed_policy():
    def run(policy, level, met_rate, cost):
        return {"policy": policy, "level": level, "budget_met_rate": met_rate, "requests": 10, "cost_usd": cost}

    sweep = [run("tiergate", 0.5, 0.8, 1.0), run("always-smallest", 0.5, 0.6, 0.5),
             run("always-largest", 0.5, 0.9, 3.0), run("tiergate", 1.0, 0.8, 1.0),
             run("always-smallest", 1.0, 0.3, 0.5), run("always-largest", 1.0, 0.5, 3.0),
             run("tiergate", 2.0, 0.8, 1.0), run("always-smallest", 2.0, 0.4, 0.5),
             {"policy": "always-largest", "level": 2.0, "skipped": "saturated at 1 req/s"}]
    v = verdicts(sweep)
    # 0.5: always-smallest's 6 met for 0.5 USD (12 per USD) beats the router's 8 for 1 USD
    assert v[0]["fixed_met_per_usd"] == {"always-smallest": 12.0, "always-largest": 3.0}
    assert v[1]["router_met_per_usd"] == 8.0 and v[1]["fixed_met_per_usd"]["always-smallest"] == 6.0
    assert v[2]["fixed_met_per_usd"] == {"always-smallest": 8.0}  # a tie is not a win
    assert v[2]["skipped_fixed"] == ["always-largest"] and v[1]["router_met_per_1k"] == 800.0
    assert v[1]["fixed_met_per_1k"] == {"always-smallest": 300.0, "always-largest": 500.0}
    assert [x["more_met_per_usd_than_every_fixed"] for x in v] == [False, True, False]
    assert beats_at(v) == [1.0]


def test_pooled_accuracy_and_the_rendered_report(tmp_path):
    s = _scenario(_quick(), {"name": "plain", "weight": 1, "max_tokens": 4, "prompts": ["x"]})
    records = [{"rate": rate, **_res(i, "quick", float(i % 2), 1e-6, policy=p).as_dict()}
               for rate in (0.5, 1.0) for p in ("tiergate", "always-smallest") for i in range(4)]
    pooled = pooled_accuracy(records, s.floors())
    assert pooled["tiergate"]["quick"] == {"requests": 8, "correct": 4, "distinct_items": 4, "accuracy": 0.5,
                                           "min_quality": 0.5, "floor_met": True}
    sweep = []
    for rate in (0.5, 1.0):
        for p in ("tiergate", "always-smallest"):
            rs = tuple(_res(i, "quick", 1.0 if (p == "tiergate" or i % 2) else 0.0, 1e-6, policy=p) for i in range(4))
            sweep.append(summarize(Run(p, "open", rate, 4.0, rs), s.floors()))
    report = {"meta": {"scenario": "t", "gateway": "http://t", "pool": "p.yaml", "git_commit": "x", "cpu_count": 2,
                       "loadavg_start": [1.0], "loadavg_end": [1.0], "duration_s": 9.0,
                       "policies": ["tiergate", "always-smallest"], "rates": [0.5, 1.0], "requests_per_rate": 4,
                       "prices": {"small": {"input_per_mtok": 0.02, "output_per_mtok": 0.06}}},
              "scenario": _scenario_digest(s), "sweep": sweep, "verdicts": verdicts(sweep),
              "capacity_all_budgets_99": {}, "capacity_latency_99": {}, "overhead": None,
              "accuracy_pooled": pooled, "problems": []}
    md = render(report, [])
    assert "tiergate beats every fixed policy on scored budget-met requests per USD at 0.5, 1 req/s" in md
    assert "12 items of `deploy/eval/cpu-labelled.jsonl`: " in md and "1 fixed prompts (not scored)" in md
    assert "accuracy 100% (floor 0.5 met)" in md and "accuracy 50% (floor 0.5 met)" in md
    assert "| quick | 0.5 | 50% (4/8, 4 items) met |" in md
    paths = write(report, tmp_path)
    assert {p.name for p in paths} >= {"report.md", "met_per_usd_over_load.png", "accuracy_by_class.png"}
    assert all(p.stat().st_size > 0 for p in paths)
