"""Scorer of labelled prompt sets: the shipped ``cpu-labelled.jsonl`` and the shared MMLU/GSM8K sets.

Each item has ``answer`` (a list of accepted answers) and ``kind``:

``number``
    the answer number of the reply's first line equals the answer: the first number after
    the last ``=`` when the model restates the sum (``7 + 8 = 15``), else the first number
    (``1,000`` and ``1000`` are the same);
``gsm8k`` (items of kind ``number`` whose task is ``gsm8k``, see :func:`score_item`)
    GSM8K's own convention: the *last* number in the whole reply (``$18``, ``18 dollars``,
    ``... so she makes 18.``) equals the answer;
``choice``
    the letter the reply picks equals the answer: a leading letter (``B``, ``B.``, ``(B)``,
    ``B) 4``; not ``A or B``), a stated one (``The answer is B``, ``Answer: B``), or, when the reply gives an option's
    text instead of its letter, the option whose text the first line is (the options are read from
    the prompt's ``A. ...`` lines); anything else (no letter, several letters) fails;
``word``
    the answer part of the reply's first line, lower-cased and stripped of punctuation,
    *starts with* one of the accepted answers as whole words. The answer part is what follows
    the last `` is `` when the model answers in a sentence (``The capital of Italy is Rome.``),
    else the whole line (``Paris.``); an echoed question (``What is the opposite of ...``)
    fails;
``yesno``
    the first word of the reply is the answer (``yes`` / ``no``).

A score is 1.0 or 0.0. Hand-written (no library scores these formats); kept dependency-free so the
runner, ``tiergate eval`` and the tests import it.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"[a-z0-9']+")
_LEAD_LETTER = re.compile(r"^\(?([A-D])(?:[\s.):,]|$)")
_STATED_LETTER = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*:?\s*\(?([A-D])\b", re.IGNORECASE)
_ALTERNATIVE = re.compile(r"\b(?:or|and)\s+\(?([A-D])\b")  # "A or B": two picks, none counts
_OPTION = re.compile(r"^([A-D])\.\s*(.+?)\s*$", re.MULTILINE)
KINDS = ("number", "gsm8k", "choice", "word", "yesno")


def first_line(reply: str) -> str:
    for line in reply.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _as_float(text: str) -> float | None:
    try:
        return float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None


def _same_number(got: str, answers: list[str]) -> bool:
    value = _as_float(got)
    return value is not None and any(value == _as_float(a) for a in answers)


def chosen_letter(reply: str, prompt: str = "") -> str | None:
    """The option letter a reply picks, or None when it picks none (or several)."""
    line = first_line(reply)
    for prefix in ("answer:", "the answer is", "answer"):
        if line.lower().startswith(prefix):
            line = line[len(prefix):].strip(" :")
            break
    m = _LEAD_LETTER.match(line)
    if m:
        hedged = {x for x in _ALTERNATIVE.findall(line)} - {m.group(1)}
        return None if hedged else m.group(1)
    stated = {s.upper() for s in _STATED_LETTER.findall(reply)}
    if len(stated) == 1:
        return stated.pop()
    options = {text.strip().lower().rstrip("."): letter for letter, text in _OPTION.findall(prompt)}
    return options.get(line.lower().rstrip("."))


def score(kind: str, answers: list[str], reply: str, prompt: str = "") -> float:
    line = first_line(reply)
    if kind == "number":
        m = _NUMBER.search(line.rsplit("=", 1)[1] if "=" in line else line)
        return 1.0 if m and _same_number(m.group(0), answers) else 0.0
    if kind == "gsm8k":
        numbers = _NUMBER.findall(reply)
        return 1.0 if numbers and _same_number(numbers[-1], answers) else 0.0
    if kind == "choice":
        return 1.0 if chosen_letter(reply, prompt) in {a.strip().upper() for a in answers} else 0.0
    if kind == "word":
        words = _words(line.rsplit(" is ", 1)[1] if " is " in line else line)
        for a in answers:
            want = _words(a)
            if want and words[: len(want)] == want:
                return 1.0
        return 0.0
    if kind == "yesno":
        words = _words(line)
        return 1.0 if words and words[0] == answers[0].lower() else 0.0
    raise ValueError(f"unknown answer kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def scoring_kind(item: dict[str, Any]) -> str:
    """The scoring rule for a labelled item: GSM8K's numbers follow GSM8K's last-number convention."""
    if item["kind"] == "number" and str(item.get("task", "")).split("/")[0] == "gsm8k":
        return "gsm8k"
    return item["kind"]


def score_item(item: dict[str, Any], reply: str) -> float:
    return score(scoring_kind(item), item["answer"], reply, item.get("prompt", ""))


# What a product would put in the user's prompt so that the reply is scorable (the gateway adds nothing).
# The letter instruction goes first: after the question (which ends "Answer:") the Qwen2.5-Coder models
# mostly began to reason and were cut off (1.5B: 4/14 correct on a trial; instruction first: 6/14).
INSTRUCTIONS = {
    "choice": ("Answer with the letter (A, B, C or D) of the correct option, and nothing else.\n\n", ""),
    "gsm8k": ("", "\n\nSolve it step by step, then give the final answer as a number on the last line."),
}


def product_prompt(item: dict[str, Any]) -> str:
    """The user message a product would send for this item: its prompt with, where the set needs one,
    an instruction on the answer's form (the shipped set's prompts carry their own)."""
    before, after = INSTRUCTIONS.get(scoring_kind(item), ("", ""))
    return f"{before}{item['prompt']}{after}"
