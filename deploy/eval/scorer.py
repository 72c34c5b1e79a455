"""Scorer of the shipped labelled prompt set (``cpu-labelled.jsonl``).

Each item has ``answer`` (a list of accepted answers) and ``kind``:

``number``
    the answer number of the reply's first line equals the answer: the first number after
    the last ``=`` when the model restates the sum (``7 + 8 = 15``), else the first number
    (``1,000`` and ``1000`` are the same);
``word``
    the answer part of the reply's first line, lower-cased and stripped of punctuation,
    *starts with* one of the accepted answers as whole words. The answer part is what follows
    the last `` is `` when the model answers in a sentence (``The capital of Italy is Rome.``),
    else the whole line (``Paris.``); an echoed question (``What is the opposite of ...``)
    fails;
``yesno``
    the first word of the reply is the answer (``yes`` / ``no``).

A score is 1.0 or 0.0. Hand-written; kept dependency-free so the runner and tests import it.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"[a-z0-9']+")


def first_line(reply: str) -> str:
    for line in reply.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def score(kind: str, answers: list[str], reply: str) -> float:
    line = first_line(reply)
    if kind == "number":
        m = _NUMBER.search(line.rsplit("=", 1)[1] if "=" in line else line)
        if not m:
            return 0.0
        got = m.group(0).replace(",", "")
        return 1.0 if any(float(got) == float(a) for a in answers) else 0.0
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
    raise ValueError(f"unknown answer kind {kind!r}; valid kinds: number, word, yesno")
