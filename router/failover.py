"""Failover: where a request goes when its model failed before sending anything.

A model that errs, cannot be reached or sends no first token in time is left for the next
eligible model (budgets re-checked by :meth:`Router.fallback`), within a retry budget: at most
``max_retries`` failures are followed by another try. A cascade's refused cheap model is not a
place to go back to, and neither is a model the request could no longer be answered by within
its wait bound (it has already waited for the failed one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from router.admission import WaitBound, still_within_wait
from router.policy import Router
from router.types import Decision, ModelLoad, RouteRequest


def may_retry(failures: int, max_retries: int) -> bool:
    """Whether a request that has seen ``failures`` failed attempts (the last one included) may try again."""
    return failures <= max_retries


def next_model(router: Router, req: RouteRequest, loads: Mapping[str, ModelLoad], quality: Mapping[str, float],
               tried: Iterable[str], *, failures: int, max_retries: int, bound: WaitBound | None,
               waited_ms: float) -> Decision | None:
    """The model to try after the ``failures``-th failure, none of ``tried``; None when the retry
    budget is spent, no model is left, or the next one could not answer within ``bound`` now."""
    if not may_retry(failures, max_retries):
        return None
    nxt = router.fallback(req, loads, quality, frozenset(tried))
    return nxt if nxt is not None and still_within_wait(nxt, bound, waited_ms) else None
