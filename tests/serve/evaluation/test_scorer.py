"""The scorer on real labelled items and replies of the kinds the models really give."""

from __future__ import annotations

import json

import pytest

from serve.evaluation.labelled import read_labelled, sample_per_task, split_tasks
from serve.evaluation.scorer import chosen_letter, product_prompt, score, score_item, scoring_kind
from tests.conftest import ROOT, SHARED

MMLU = SHARED / "data" / "labelled" / "mmlu-dev.jsonl"
GSM8K = SHARED / "data" / "labelled" / "gsm8k.jsonl"
needs_shared = pytest.mark.skipif(not MMLU.exists(), reason="../shared/data is not beside the checkout")


@needs_shared
def test_mmlu_item_letters():
    item = next(it for it in read_labelled(MMLU) if it["id"] == "mmlu/abstract_algebra/0")  # gold B, "B. 4"
    assert scoring_kind(item) == "choice"
    for reply in ("B", "B.", "(B)", "B) 4", "Answer: B", "The answer is B.", "The correct answer is B. 4",
                  "4", "B. 4"):
        assert score_item(item, reply) == 1.0, reply
    for reply in ("A", "C. 2", "6", "", "To find the degree we", "A or B", "The answer is A, not B"):
        assert score_item(item, reply) == 0.0, reply


def test_choice_without_a_letter_or_with_several_picks_none():
    prompt = "Q?\nA. red\nB. blue\nC. green\nD. black\nAnswer:"
    assert chosen_letter("blue", prompt) == "B"
    assert chosen_letter("Blue.", prompt) == "B"
    assert chosen_letter("It is a colour", prompt) is None
    assert chosen_letter("A and C", prompt) is None
    assert chosen_letter("The answer is (C) or (A)", prompt) is None


@needs_shared
def test_gsm8k_takes_the_last_number_and_other_numbers_the_first_line():
    item = next(it for it in read_labelled(GSM8K) if it["id"] == "gsm8k/0")  # gold 18
    assert scoring_kind(item) == "gsm8k"
    assert score_item(item, "$18") == 1.0
    assert score_item(item, "16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars") == 1.0
    assert score_item(item, "18.00") == 1.0
    assert score_item(item, "She makes 18 dollars, then 9") == 0.0
    assert score_item(item, "") == 0.0
    shipped = {"kind": "number", "task": "cpu/add_small", "answer": ["15"], "prompt": "What is 7 + 8?"}
    assert score_item(shipped, "7 + 8 = 15\nThen 16") == 1.0
    assert score_item(shipped, "16\n15") == 0.0


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid kinds: number, gsm8k, choice, word, yesno"):
        score("essay", ["x"], "y")


@needs_shared
def test_product_prompt_adds_only_the_short_answer_instruction():
    mmlu = read_labelled(MMLU)[0]
    assert product_prompt(mmlu) == ("Answer with the letter (A, B, C or D) of the correct option, and nothing else."
                                    "\n\n" + mmlu["prompt"])
    shipped = read_labelled(ROOT / "deploy" / "eval" / "cpu-labelled.jsonl")[0]
    assert product_prompt(shipped) == shipped["prompt"]


@needs_shared
def test_sampling_is_per_task_seeded_and_keeps_order():
    items = read_labelled(MMLU)
    a, b = sample_per_task(items, 5, seed=1), sample_per_task(items, 5, seed=1)
    assert a == b and len(a) == 5 * len({it["task"] for it in items})
    assert [items.index(x) for x in a] == sorted(items.index(x) for x in a)
    assert sample_per_task(items, 5, seed=2) != a
    fit, held = split_tasks([it["task"] for it in items], 0.25, seed=0)
    assert len(held) == 10 and not fit & held and len(fit | held) == 40


def test_committed_ladder_outcomes_are_scored_by_this_scorer():
    """Every committed outcome is what the scorer says of the committed reply (no hand edits)."""
    path = ROOT / "deploy" / "eval" / "ladder-outcomes.jsonl"
    if not path.exists():
        pytest.skip("ladder outcomes not committed yet")
    items = {}
    for name in ("cpu-labelled.jsonl",):
        items.update({it["id"]: it for it in read_labelled(ROOT / "deploy" / "eval" / name)})
    for f in (MMLU, GSM8K):
        if f.exists():
            items.update({it["id"]: it for it in read_labelled(f)})
    records = [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
    assert len(records) >= 199
    for rec in records:
        item = items[rec["id"]]
        for model, reply in rec["replies"].items():
            assert rec["outcomes"][model] == score_item(item, reply), (rec["id"], model)
