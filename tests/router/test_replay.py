"""Replay metrics on small inputs whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from router.replay import (
    cost_quality_curve,
    expected_calibration_error,
    normalised_area,
    random_cost_curve,
    spread,
    strong_share_curve,
    task_fold_index,
    two_model_report,
    utility_choices,
)

WEAK = [1, 0, 0, 1]
STRONG = [1, 1, 0, 1]  # only prompt 1 gains from the strong model: Q_weak 0.5, Q_strong 0.75


def test_a_perfect_ranking_by_hand():
    report = two_model_report(strong_share_curve([0, 9, 0.5, 0.2], WEAK, STRONG))
    # curve: 0.5 at share 0, 0.75 at share 0.25, flat after; area = 0.25*0.625 + 0.75*0.75
    assert report.apgr == pytest.approx((0.15625 + 0.5625 - 0.5) / 0.25)
    assert report.cpt50 == pytest.approx(0.125)  # reaches 0.625 halfway to the first knot
    assert report.cpt80 == pytest.approx(0.2)
    assert report.strong_share_at_95 == pytest.approx(0.2125)  # 0.95 * 0.75 = 0.7125
    assert report.quality_at_cpt80 == pytest.approx(0.7)
    assert (report.weak_quality, report.strong_quality) == (0.5, 0.75)


def test_the_worst_ranking_sends_the_gainer_last():
    report = two_model_report(strong_share_curve([9, 0, 5, 7], WEAK, STRONG))
    assert report.apgr == pytest.approx(0.125)  # only the last quarter climbs
    assert report.cpt50 == pytest.approx(0.875)


def test_constant_scores_are_the_random_baseline():
    report = two_model_report(strong_share_curve(np.zeros(4), WEAK, STRONG))
    assert report.apgr == pytest.approx(0.5)
    assert report.cpt50 == pytest.approx(0.5)
    assert report.cpt80 == pytest.approx(0.8)
    assert list(report.curve.x) == [0.0, 1.0]


def test_ties_are_ordered_at_random_in_expectation():
    # prompts 0 and 1 tie at the top: sending one of them gains 0.25 half the time
    curve = strong_share_curve([1, 1, 0, 0], WEAK, STRONG)
    assert curve.at(0.25) == pytest.approx(0.5 + 0.125)
    assert curve.at(0.5) == pytest.approx(0.75)


def test_strong_share_at_95_when_the_strong_model_is_worse_somewhere():
    report = two_model_report(strong_share_curve([3, 2, 1], [0, 1, 0], [1, 0, 1]))
    # gains +1, -1, +1: curve 1/3, 2/3, 1/3, 2/3 at shares 0, 1/3, 2/3, 1
    assert report.strong_share_at_95 == pytest.approx((0.95 * 2 / 3 - 1 / 3) / (1 / 3) / 3)


def test_no_gap_means_no_apgr():
    report = two_model_report(strong_share_curve([1, 2], [1, 0], [1, 0]))
    assert report.apgr is None and report.cpt50 is None
    assert report.strong_share_at_95 == 0.0


def test_report_dict_has_the_contract_keys():
    d = two_model_report(strong_share_curve([0, 9, 0.5, 0.2], WEAK, STRONG)).to_dict()
    assert {"apgr", "cpt50", "cpt80", "strong_share_at_95", "quality_at", "curve"} <= set(d)
    assert set(d["quality_at"]) == {"cpt50", "cpt80", "strong_share_at_95"}
    assert d["curve"][0] == [0.0, 0.5] and d["curve"][-1] == [1.0, 0.75]


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError):
        strong_share_curve([1, 2], [1], [1, 0])


def test_expected_calibration_error_by_hand():
    assert expected_calibration_error([0.1, 0.1, 0.9, 0.9], [0, 0, 1, 1]) == pytest.approx(0.1)
    # one bin predicts 0.75 where 1/2 come true, the other 0.25 where 1/2 come true
    assert expected_calibration_error([0.75, 0.75, 0.25, 0.25], [1, 0, 1, 0]) == pytest.approx(0.25)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0


def test_utility_choices_span_cheapest_to_best():
    pred = np.array([[0.2, 0.5, 0.9], [0.8, 0.8, 0.8]])
    costs = np.array([0.0, 0.5, 1.0])
    assert list(utility_choices(pred, costs, 0.0)) == [0, 0]
    assert list(utility_choices(pred, costs, np.inf)) == [2, 0]  # ties go to the cheaper model
    # price 1: utilities row0 = 0.2, 0.0, -0.1 -> cheapest; price 4: 0.2, 0.375, 0.65 -> priciest
    assert list(utility_choices(pred, costs, 1.0)) == [0, 0]
    assert list(utility_choices(pred, costs, 4.0)) == [2, 0]


def test_cost_quality_curve_three_models():
    outcomes = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=float)
    costs = [1.0, 2.0, 5.0]
    oracle = cost_quality_curve(outcomes, outcomes, costs)
    rand = random_cost_curve(outcomes)
    q0, q1 = outcomes[:, 0].mean(), outcomes[:, -1].mean()
    assert normalised_area(rand, q0, q1) == pytest.approx(0.5)
    # the oracle reaches 0.75 by paying (2-1)/4 for prompt 1 and (5-1)/4 for prompt 2 out of 4 prompts
    assert oracle.at((0.25 + 1.0) / 4) == pytest.approx(0.75)
    assert normalised_area(oracle, q0, q1) > 0.8
    useless = cost_quality_curve(np.full_like(outcomes, 0.5), outcomes, costs)
    assert normalised_area(useless, q0, q1) == pytest.approx(0.5)  # only the endpoints: random mixing


def test_cost_curve_needs_ascending_costs():
    y = np.zeros((2, 3))
    with pytest.raises(ValueError):
        cost_quality_curve(y, y, [3.0, 2.0, 1.0])


def test_task_folds_keep_tasks_whole_and_depend_on_the_seed():
    tasks = np.array([f"t{i % 7}" for i in range(70)])
    a = task_fold_index(tasks, 3, seed=0)
    assert set(a.tolist()) == {0, 1, 2}
    for t in set(tasks.tolist()):
        assert len(set(a[tasks == t].tolist())) == 1  # a task never straddles two folds
    assert np.array_equal(a, task_fold_index(tasks, 3, seed=0))
    assert any(not np.array_equal(a, task_fold_index(tasks, 3, seed=s)) for s in range(1, 5))
    with pytest.raises(ValueError, match="folds"):
        task_fold_index(tasks, 8, seed=0)


def test_spread_by_hand():
    s = spread([0.5, 0.7, None, 0.6])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.6) and s["sd"] == pytest.approx(0.1)
    assert (s["min"], s["max"]) == (0.5, 0.7)
    assert spread([None])["mean"] is None


# ----------------------------------------------------------------------------- priced ladders
def test_value_and_floor_choices_by_hand():
    from router.replay import floor_choices

    pred = np.array([[0.2, 0.5, 0.9], [0.8, 0.8, 0.9], [0.1, 0.2, 0.3]])
    cost = np.array([[1.0, 2.0, 10.0]] * 3)
    # the value rule is utility_choices on per-prompt costs, the value as the price of quality
    # value 10: EVs row 0 = 1, 3, -1 -> the middle; row 1 = 7, 6, -1 -> the cheapest; row 2 = 0, 0, -7 -> tie: cheaper
    assert utility_choices(pred, cost, 10.0).tolist() == [1, 0, 0]
    assert utility_choices(pred, cost, 1e6).tolist() == [2, 2, 2]  # worth a fortune: the best predicted
    assert utility_choices(pred, cost, 1e-9).tolist() == [0, 0, 0]
    # floor 0.5: the cheapest reaching it; none reaches it on row 2: the best predicted (best effort)
    assert floor_choices(pred, 0.5).tolist() == [1, 0, 2]


def test_operating_points_and_the_least_cost_reaching_a_quality():
    from router.replay import cost_share_reaching, operating_points

    y = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=float)
    cost = np.array([[1.0, 2.0, 4.0]] * 4)
    pts = operating_points([np.array([0, 0, 0, 0]), np.array([1, 0, 2, 0]), np.array([2, 2, 2, 2])], y, cost)
    assert pts.tolist() == [[1.0, 0.25], [2.0, 0.75], [4.0, 0.75]]
    assert cost_share_reaching(pts, 0.75, 4.0) == pytest.approx(0.5)  # the routed point, at half the cost
    assert cost_share_reaching(pts, 0.8, 4.0) is None
