"""Arrival processes for open-loop load: inter-arrival gaps at a set mean rate.

``poisson`` draws exponential gaps (coefficient of variation 1); ``gamma`` draws gamma gaps
with a chosen coefficient of variation (cv > 1 is burstier than Poisson, cv < 1 smoother);
``constant`` spaces requests evenly. All take a seeded ``numpy.random.Generator`` so a
scenario's schedule is the same for every policy it is run against.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Gaps = Callable[[np.random.Generator, float, int, float], np.ndarray]


def _poisson(rng: np.random.Generator, rate: float, n: int, cv: float) -> np.ndarray:
    return rng.exponential(1.0 / rate, size=n)


def _gamma(rng: np.random.Generator, rate: float, n: int, cv: float) -> np.ndarray:
    # mean = shape * scale = 1 / rate and cv = 1 / sqrt(shape)
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, 1.0 / (rate * shape), size=n)


def _constant(rng: np.random.Generator, rate: float, n: int, cv: float) -> np.ndarray:
    return np.full(n, 1.0 / rate)


PROCESSES: dict[str, Gaps] = {"poisson": _poisson, "gamma": _gamma, "constant": _constant}


def arrival_times(process: str, rate: float, n: int, rng: np.random.Generator, cv: float = 1.0) -> np.ndarray:
    """Offsets in seconds from the start of the run; the first request goes at once."""
    try:
        gaps = PROCESSES[process]
    except KeyError:
        raise ValueError(f"unknown arrival process {process!r}; valid: {', '.join(sorted(PROCESSES))}") from None
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if not cv > 0:
        raise ValueError(f"cv must be > 0, got {cv}")
    if n <= 0:
        return np.zeros(0)
    offsets = np.cumsum(gaps(rng, rate, n, cv))
    return offsets - offsets[0]
