"""loadtests/confidence_signal.py: its AUROC and hindsight cascade bound on hand-made cases, and a run on the
committed ladder outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from loadtests import confidence_signal as cs


def test_auroc_counts_ties_half_and_needs_both_kinds():
    assert cs.auroc(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    assert cs.auroc(np.array([0.1, 0.9]), np.array([1, 0])) == 0.0
    assert cs.auroc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert cs.auroc(np.array([0.5, 0.7]), np.array([1, 1])) is None


def test_the_hindsight_cascade_keeps_confident_cheap_answers_only_while_accuracy_holds():
    score = np.array([0.9, 0.8, 0.2, 0.1])
    cheap_right, large_right = np.array([1.0, 1.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0, 1.0])
    cheap_cost, large_cost, w = np.full(4, 1.0), np.full(4, 4.0), np.ones(4)
    # keep the two confident (right) cheap answers, escalate the others: 2 * 1 + 2 * (1 + 4) = 12 of 16
    assert cs.cascade_cost_at(0.98, score, cheap_right, large_right, cheap_cost, large_cost, w) == pytest.approx(0.75)
    # a signal that ranks the wrong answers first never keeps a cheap answer and stays right
    assert cs.cascade_cost_at(0.98, -score, cheap_right, large_right, cheap_cost, large_cost, w) == pytest.approx(1.25)


def test_the_command_reports_every_family_and_cascade(capsys):
    cs.main([])
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[2:5]] == ["closed-form", "mmlu", "gsm8k"]
    assert out.count("cascade ") == 4
