"""Cheap, hand-written prompt features that sit beside the sentence embedding.

Length and a few task hints read from the text itself (multiple choice, arithmetic, code,
a question), so that they carry over to tasks the predictor never saw. Each is a plain
number; the predictor standardises them with the training set's mean and scale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_lines",
    "digit_share",
    "math_symbol_share",
    "numbers",
    "multiple_choice",
    "code_hint",
    "question",
)

_CHOICE = re.compile(r"^\s*\(?[A-Ea-e][\.\)]\s", re.MULTILINE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_CODE = re.compile(r"```|\bdef |\breturn\b|;\s*$|\{\s*$|#include|\bSELECT\b", re.MULTILINE)
_MATH = set("+-*/=^<>%$")


def prompt_features(prompt: str) -> list[float]:
    n = max(len(prompt), 1)
    digits = sum(ch.isdigit() for ch in prompt)
    maths = sum(ch in _MATH for ch in prompt)
    return [
        math.log1p(len(prompt)),
        math.log1p(len(prompt.split())),
        math.log1p(prompt.count("\n")),
        digits / n,
        maths / n,
        math.log1p(len(_NUMBER.findall(prompt))),
        1.0 if len(_CHOICE.findall(prompt)) >= 2 else 0.0,
        1.0 if _CODE.search(prompt) else 0.0,
        1.0 if "?" in prompt else 0.0,
    ]


def feature_matrix(prompts: Sequence[str]) -> np.ndarray:
    """An array of shape ``(len(prompts), len(FEATURE_NAMES))``."""
    if not prompts:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    return np.asarray([prompt_features(p) for p in prompts], dtype=np.float32)
