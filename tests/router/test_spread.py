"""Choosing among near-equal models with a seeded draw, so that replicas routing on one stale view
do not herd (pure unit tests: hand-built cards, injected draws)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from router import Budget, LatencyModel, LatencyPrior, ModelCard, ModelLoad, Price, RouteRequest, Router
from router.spread import near_equal, pick


def card(name, price, tpot=10.0):
    return ModelCard(name=name, price=Price(price, price), prior_quality=0.5, context_length=4096,
                     latency_prior=LatencyPrior(50.0, tpot))


def router(cards, draw, **kw):
    return Router(cards, LatencyModel(cards, quantile=0.5), draw=draw, **kw)


REQ = RouteRequest(prompt="p", prompt_tokens=20, max_tokens=50, budget=Budget())
TWINS = [card("a", 1.0), card("b", 1.0)]


def test_only_models_within_the_tolerance_are_drawn_among():
    cards = [card("a", 1.0), card("b", 1.04), card("c", 1.2)]
    r = router(cards, random.Random(1).random)
    seen = Counter(r.decide(REQ, {}, {}).model for _ in range(400))
    assert set(seen) == {"a", "b"}  # c costs 20% more: never drawn
    d = r.decide(REQ, {}, {})
    assert "drawn among a, b (near-equal in cost)" in d.explanation and d.budget_met


def test_the_draw_decides_and_the_rule_is_pure():
    r0, r1 = router(TWINS, lambda: 0.0), router(TWINS, lambda: 0.999)
    assert {r0.decide(REQ, {}, {}).model for _ in range(5)} == {"a"}
    assert {r1.decide(REQ, {}, {}).model for _ in range(5)} == {"b"}
    # one seed, one sequence of choices
    assert ([router(TWINS, random.Random(7).random).decide(REQ, {}, {}).model for _ in range(1)]
            == [router(TWINS, random.Random(7).random).decide(REQ, {}, {}).model for _ in range(1)])
    with pytest.raises(ValueError):
        pick(near_equal([router(TWINS, lambda: 0.0).predict(REQ, "a", None, 0.5)]), 1.0)


def test_spreading_off_takes_the_first():
    r = router(TWINS, random.Random(3).random, near_equal=None)
    assert {r.decide(REQ, {}, {}).model for _ in range(50)} == {"a"}


def test_twins_split_evenly_while_feasible_and_a_model_over_budget_is_not_drawn():
    r = router(TWINS, random.Random(11).random)
    n = 4000
    idle = Counter(r.decide(REQ, {}, {}).model for _ in range(n))
    assert 0.47 < idle["a"] / n < 0.53
    # load decides feasibility; within the feasible ones the draw ignores the (stale) differences
    busy = {"b": ModelLoad(running=1, queued=3)}
    assert 0.47 < Counter(r.decide(REQ, busy, {}).model for _ in range(n))["a"] / n < 0.53
    wait_b = r.predict(REQ, "b", busy["b"], 0.5).latency_ms
    tight = RouteRequest(prompt="p", prompt_tokens=20, max_tokens=50, budget=Budget(max_latency_ms=wait_b - 1))
    assert {r.decide(tight, busy, {}).model for _ in range(200)} == {"a"}


class _Weighted(Router):
    """The alternative the module docstring rejects: a draw weighted by inverse predicted latency."""

    def decide(self, req, loads, quality):
        preds = near_equal([self.predict(req, m, loads.get(m), 0.5) for m in self.models])
        inverse = [1 / p.latency_ms for p in preds]
        u, edge = self._draw() * sum(inverse), 0.0
        for p, w in zip(preds, inverse):
            edge += w
            if u < edge:
                return p
        return preds[-1]


def _herd(kind: str, seed: int) -> tuple[float, float]:
    """Four ingress replicas route on one view refreshed every window of 20 requests (5 each); each model
    serves 12 requests per window, so the pool keeps up when they split anywhere near evenly. Returns the
    mean share of a window's requests that went to the model most chosen in it, and the mean backlog
    left after a window (requests still waiting on either model)."""
    cards = [card("a", 1.0), card("b", 1.0)]
    rng = random.Random(seed)
    make = {"none": lambda: router(cards, rng.random, near_equal=None), "uniform": lambda: router(cards, rng.random),
            "weighted": lambda: _Weighted(cards, LatencyModel(cards, quantile=0.5), draw=rng.random)}[kind]
    replicas = [make() for _ in range(4)]
    queue = {"a": 0, "b": 0}
    shares, backlog = [], []
    for _ in range(200):
        view = {m: ModelLoad(in_flight=q) for m, q in queue.items()}  # every replica sees the same snapshot
        window = Counter(r.decide(REQ, view, {}).model for r in replicas for _ in range(5))
        shares.append(max(window.values()) / 20)
        for m in queue:
            queue[m] = max(0, queue[m] + window[m] - 12)
        backlog.append(sum(queue.values()))
    return sum(shares) / len(shares), sum(backlog) / len(backlog)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spreading_breaks_the_herd(seed):
    figures = {kind: _herd(kind, seed) for kind in ("none", "weighted", "uniform")}
    print("  ".join(f"{k}: {share:.2f} of a window to one model, mean backlog {b:.1f}"
                    for k, (share, b) in figures.items()))
    herd_share, herd_backlog = figures["none"]
    spread_share, spread_backlog = figures["uniform"]
    assert herd_share == 1.0 and herd_backlog == 8  # every replica picks the same model on the same view
    assert spread_share < 0.7  # an even split gives ~0.59 (the larger half of 20 fair coin flips)
    assert spread_backlog < herd_backlog / 4
    assert spread_backlog < figures["weighted"][1]  # leaning on the stale view overshoots
