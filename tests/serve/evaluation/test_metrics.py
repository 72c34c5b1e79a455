"""Figures of the live evaluation, on hand-made answers whose figures are known."""

from __future__ import annotations

import math

import pytest

from serve.evaluation.metrics import (
    Answer,
    area_under,
    ece,
    frontier_accuracy,
    frontier_cost,
    random_mix_frontier,
    summarize,
)


def test_ece_is_the_weighted_gap_per_bin():
    total, table = ece([0.05, 0.05, 0.95, 0.95], [0, 1, 1, 1])
    # bin 0: predicted 0.05, measured 0.5 (gap 0.45, half the weight); bin 9: 0.95 vs 1.0 (gap 0.05)
    assert total == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    assert [b["n"] for b in table] == [2, 2]
    assert ece([], [])[1] == [] and math.isnan(ece([], [])[0])


def test_random_mix_frontier_is_the_upper_hull():
    fixed = {"small": (1.0, 0.5), "mid": (2.0, 0.6), "large": (4.0, 0.9)}
    # mid lies under the chord small-large (0.5 + 0.4 * 1/3 = 0.633 > 0.6): mixes of small and large beat it
    assert random_mix_frontier(fixed) == [(1.0, 0.5), (4.0, 0.9)]
    assert frontier_accuracy(random_mix_frontier(fixed), 2.5) == pytest.approx(0.5 + 0.4 * 0.5)
    assert frontier_accuracy(random_mix_frontier(fixed), 0.5) == 0.0
    assert frontier_accuracy(random_mix_frontier(fixed), 9.0) == 0.9
    dominated = {"cheap-good": (1.0, 0.9), "dear-bad": (3.0, 0.5)}
    assert random_mix_frontier(dominated) == [(1.0, 0.9)]


def test_area_under_a_step_curve():
    assert area_under([(0.0, 1.0)], 0.0, 1.0) == pytest.approx(1.0)
    assert area_under([(0.5, 1.0)], 0.0, 1.0) == pytest.approx(0.5, abs=0.01)


def test_summarize_counts_unanswered_as_wrong():
    answers = [Answer("a", "t", True, 1.0, "m1", 0.001, 0.2, 0.9, "cheapest_feasible"),
               Answer("b", "t", True, 0.0, "m2", 0.003, 0.4, 0.2, "cheapest_feasible", "kept"),
               Answer("c", "t", False, 0.0, "", 0.0, 1.0, None)]
    s = summarize(answers)
    assert s["accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["cost_per_1k_usd"] == pytest.approx(1000 * 0.004 / 3, rel=1e-3)
    assert s["mix"] == {"m1": 1, "m2": 1} and s["answered"] == 2 and s["cascade"] == {"kept": 1}
    assert s["ece"] == pytest.approx(0.15)  # (|0.9-1| + |0.2-0|) / 2


def test_frontier_cost_is_the_least_cost_of_a_mix_reaching_an_accuracy():
    # fixed models (cost, accuracy): 1/0.25, 2/0.5, 4/0.75; 0.6 is 2/5 of the way from the middle to the
    # largest (cost 2.8) or 0.35/0.5 of the way from the cheapest (cost 3.1): the least
    frontier = random_mix_frontier({"a": (1.0, 0.25), "b": (2.0, 0.5), "c": (4.0, 0.75)})
    assert frontier_cost(frontier, 0.6) == pytest.approx(2.8)
    assert frontier_cost(frontier, 0.5) == pytest.approx(2.0)
    assert frontier_cost(frontier, 0.9) is None
    assert frontier_accuracy(frontier, frontier_cost(frontier, 0.6)) == pytest.approx(0.6)  # its inverse
