"""Routing policies as a client applies them: what goes in each request's ``model`` field.

``auto`` leaves the choice to tiergate's router. The fixed baselines pin a pool model from
the client side, as a user without a router would: ``smallest`` always the cheapest model,
``largest`` always the most expensive, ``random`` a uniformly random one per request (seeded
by the request's index, so reruns draw the same models).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from loadtests.client import Price
from loadtests.scenario import PlannedRequest

Policy = Callable[[PlannedRequest], str]


def _by_price(prices: Mapping[str, Price]) -> list[str]:
    if not prices:
        raise ValueError("the pool lists no priced models")
    return sorted(prices, key=lambda m: (prices[m].output_per_mtok, prices[m].input_per_mtok, m))


def _auto(prices: Mapping[str, Price], seed: int) -> Policy:
    return lambda req: "auto"


def _smallest(prices: Mapping[str, Price], seed: int) -> Policy:
    name = _by_price(prices)[0]
    return lambda req: name


def _largest(prices: Mapping[str, Price], seed: int) -> Policy:
    name = _by_price(prices)[-1]
    return lambda req: name


def _random(prices: Mapping[str, Price], seed: int) -> Policy:
    names = _by_price(prices)
    return lambda req: random.Random(seed * 1_000_003 + req.index).choice(names)


POLICIES: dict[str, Callable[[Mapping[str, Price], int], Policy]] = {
    "tiergate": _auto, "always-smallest": _smallest, "always-largest": _largest, "random": _random,
}


def make_policy(name: str, prices: Mapping[str, Price], seed: int = 0) -> Policy:
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; valid: {', '.join(POLICIES)}") from None
    return factory(prices, seed)
