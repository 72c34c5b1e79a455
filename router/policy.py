"""The routing decision: the cheapest model that meets every budget, with its reason.

``Router.decide`` is pure: it takes the request, the live load per model and the quality
scores for the prompt (computed beforehand, batched, by a ``QualityPredictor``) and returns a
:class:`~router.types.Decision`. It raises :class:`~router.errors.BudgetInfeasibleError` only
for strict requests that no model can serve within budget.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from router import spread, value
from router.errors import (
    BudgetInfeasibleError,
    ContextLengthError,
    InvalidRequestError,
    PermissionDeniedError,
    UnknownModelError,
    UnmetBudget,
)
from router.latency import LatencyModel
from router.types import (
    Budget,
    Decision,
    ModelCard,
    ModelLoad,
    Prediction,
    RouteReason,
    RouteRequest,
)

_BUDGETS = ("latency", "quality", "cost")
# the request field that asks for each capability, named in the error when no model has it
CAPABILITY_PARAM = {"tools": "tools", "json_schema": "response_format"}


def merge_budget(request: Budget | None, defaults: Budget) -> Budget:
    """Fill the request's unset budgets from the pool defaults."""
    if request is None:
        return defaults
    return Budget(
        max_latency_ms=request.max_latency_ms if request.max_latency_ms is not None else defaults.max_latency_ms,
        min_quality=request.min_quality if request.min_quality is not None else defaults.min_quality,
        max_cost_usd=request.max_cost_usd if request.max_cost_usd is not None else defaults.max_cost_usd,
        strict=request.strict,
        answer_value_usd=(request.answer_value_usd if request.answer_value_usd is not None
                          else defaults.answer_value_usd),
    )


class Router:
    """Picks, for each request, the cheapest model predicted to meet its budgets; among models
    near-equal in cost, one drawn by ``draw`` (uniform in [0, 1); ``router.spread``), so that
    replicas routing on one view do not herd. A request that puts a value on an acceptable answer
    (``Budget.answer_value_usd``) gets, among those models, the one of highest expected value
    (``router.value``) instead."""

    def __init__(self, cards: Sequence[ModelCard], latency: LatencyModel, *,
                 draw: Callable[[], float] | None = None, near_equal: float | None = spread.TOLERANCE) -> None:
        """``near_equal``: the relative cost difference within which models are drawn among; None
        always takes the first by (cost, -quality, latency, name)."""
        if not cards:
            raise ValueError("a router needs at least one model")
        self._cards = {card.name: card for card in cards}
        self.latency = latency
        self._draw = draw if draw is not None else random.Random().random
        self.near_equal = near_equal

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._cards)

    def card(self, name: str) -> ModelCard:
        try:
            return self._cards[name]
        except KeyError:
            raise UnknownModelError(
                f"model {name!r} is not in the pool; valid models: {', '.join(sorted(self._cards))}, auto",
                param="model", code="model_not_found",
            ) from None

    def predict(self, req: RouteRequest, model: str, load: ModelLoad | None, quality: float) -> Prediction:
        card = self.card(model)
        lat = self.latency.predict(model, req.prompt_tokens, req.max_tokens, load)
        cost = card.price.cost(req.prompt_tokens, req.max_tokens)
        b = req.budget
        return Prediction(
            model=model,
            ttft_ms=lat.ttft_ms,
            latency_ms=lat.e2e_ms,
            quality=quality,
            cost_usd=cost,
            fits_latency=b.max_latency_ms is None or lat.e2e_ms <= b.max_latency_ms,
            fits_quality=b.min_quality is None or quality >= b.min_quality,
            fits_cost=b.max_cost_usd is None or cost <= b.max_cost_usd,
            fits_context=req.prompt_tokens + 1 <= card.context_length,
            wait_ms=lat.wait_ms,
            first_token_ms=lat.first_token_ms,
            first_token_hi_ms=lat.first_token_hi_ms,
            service_ms=lat.service_ms,
        )

    def decide(self, req: RouteRequest, loads: Mapping[str, ModelLoad],
               quality: Mapping[str, float]) -> Decision:
        if req.pinned_model is not None:
            return self._pinned(req, loads, quality)
        return self._choose(req, loads, quality, exclude=frozenset())

    def fallback(self, req: RouteRequest, loads: Mapping[str, ModelLoad], quality: Mapping[str, float],
                 failed: frozenset[str]) -> Decision | None:
        """The next model after ``failed`` ones erred, budgets re-checked; None when none is left."""
        allowed = set(req.allowed_models or self._cards) - failed
        if req.pinned_model is not None or not allowed:
            return None
        try:
            d = self._choose(req, loads, quality, exclude=failed)
        except (BudgetInfeasibleError, InvalidRequestError):  # also no context or capability left
            return None
        why = f"failed over from {', '.join(sorted(failed))}: {d.explanation}"
        return Decision(model=d.model, reason=RouteReason.FALLBACK, explanation=why, prediction=d.prediction,
                        budget_met=d.budget_met, unmet=d.unmet, candidates=d.candidates)

    def _choose(self, req: RouteRequest, loads: Mapping[str, ModelLoad], quality: Mapping[str, float],
                exclude: frozenset[str]) -> Decision:
        names = [n for n in self._cards if n not in exclude and (req.allowed_models is None
                                                                  or n in req.allowed_models)]
        names = self._capable(req, names)
        preds = tuple(
            self.predict(req, name, loads.get(name), quality.get(name, self._cards[name].prior_quality))
            for name in names
            if loads.get(name, ModelLoad()).healthy
        )
        if not preds:
            # every eligible model is marked down: still try them, failover handles the errors
            preds = tuple(
                self.predict(req, name, loads.get(name), quality.get(name, self._cards[name].prior_quality))
                for name in names
            )
        if not preds:
            raise PermissionDeniedError("this API key may not use any model in the pool", param="model",
                                        code="model_not_allowed")
        fitting = [p for p in preds if p.fits_context]
        if not fitting:
            longest = max(self._cards.values(), key=lambda c: c.context_length)
            raise ContextLengthError(
                f"the prompt has about {req.prompt_tokens} tokens, more than any model's context "
                f"(largest: {longest.name} with {longest.context_length})",
                param="messages", code="context_length_exceeded",
            )
        feasible = [p for p in fitting if p.feasible]
        if feasible and req.budget.answer_value_usd is not None:
            ranked = value.by_value(feasible, req.budget.answer_value_usd)
            why = (f"highest expected value of {len(feasible)} model(s) meeting every budget "
                   f"({_describe_budget(req.budget)}){_describe_needs(req)}: "
                   f"{value.describe(ranked, req.budget.answer_value_usd)}{_describe_quality(req)}")
            return Decision(model=ranked[0].model, reason=RouteReason.BEST_VALUE, explanation=why,
                            prediction=ranked[0], budget_met=True, candidates=preds,
                            preference=tuple(p.model for p in ranked))
        if feasible:
            equal = spread.near_equal(feasible, self.near_equal or 0.0)
            if self.near_equal is None:
                equal = equal[:1]
            best = spread.pick(equal, self._draw()) if len(equal) > 1 else equal[0]
            why = (f"cheapest of {len(feasible)} model(s) meeting every budget "
                   f"({_describe_budget(req.budget)}){_describe_needs(req)}{_describe_quality(req)}"
                   f"{_describe_draw(equal)}")
            return Decision(model=best.model, reason=RouteReason.CHEAPEST_FEASIBLE, explanation=why,
                            prediction=best, budget_met=True, candidates=preds)
        unmet = _unmet(fitting, req.budget)
        if req.budget.strict:
            raise BudgetInfeasibleError(_infeasible_message(unmet, req.budget), unmet=unmet)
        best = min(fitting, key=lambda p: (_violation(p, req.budget), p.cost_usd, p.model))
        missed = tuple(name for name, ok in zip(
            _BUDGETS, (best.fits_latency, best.fits_quality, best.fits_cost)) if not ok)
        why = (f"no model{_describe_needs(req)} meets every budget ({_describe_budget(req.budget)}); "
               f"closest is {best.model}, missing {', '.join(missed)}{_describe_quality(req)}")
        return Decision(model=best.model, reason=RouteReason.BEST_EFFORT, explanation=why,
                        prediction=best, budget_met=False, unmet=missed, candidates=preds)

    def _capable(self, req: RouteRequest, names: list[str]) -> list[str]:
        """The models among ``names`` able to serve the request; an error naming what none of them has."""
        if not req.requires or not names:
            return names
        capable = [n for n in names if req.requires <= self._cards[n].capabilities]
        if capable:
            return capable
        missing = sorted(req.requires - frozenset.intersection(*(self._cards[n].capabilities for n in names)))
        have = sorted(n for n, c in self._cards.items() if req.requires <= c.capabilities)
        who = f"model {names[0]}" if req.pinned_model is not None else "no model this request may use"
        verb = "does not support" if req.pinned_model is not None else "supports"
        where = f"; models that do: {', '.join(have)}" if have else "; no model in the pool does"
        raise InvalidRequestError(f"{who} {verb} {' and '.join(missing)}{where}",
                                  param=CAPABILITY_PARAM.get(missing[0], missing[0]), code="unsupported_capability")

    def _pinned(self, req: RouteRequest, loads: Mapping[str, ModelLoad],
                quality: Mapping[str, float]) -> Decision:
        name = req.pinned_model
        assert name is not None
        card = self.card(name)
        if req.allowed_models is not None and name not in req.allowed_models:
            raise PermissionDeniedError(f"this API key may not use model {name!r}; allowed: "
                                        f"{', '.join(sorted(req.allowed_models))}", param="model",
                                        code="model_not_allowed")
        self._capable(req, [name])
        pred = self.predict(req, name, loads.get(name), quality.get(name, card.prior_quality))
        if not pred.fits_context:
            raise ContextLengthError(
                f"the prompt has about {req.prompt_tokens} tokens; {name} takes at most {card.context_length}",
                param="messages", code="context_length_exceeded",
            )
        missed = tuple(n for n, ok in zip(
            _BUDGETS, (pred.fits_latency, pred.fits_quality, pred.fits_cost)) if not ok)
        if missed and req.budget.strict:
            raise BudgetInfeasibleError(
                _infeasible_message(_unmet([pred], req.budget), req.budget, pinned=name),
                unmet=_unmet([pred], req.budget))
        why = f"model {name} was named by the caller"
        if missed:
            why += f"; it is predicted to miss {', '.join(missed)}"
        return Decision(model=name, reason=RouteReason.PINNED, explanation=why, prediction=pred,
                        budget_met=not missed, unmet=missed, candidates=(pred,))


def _violation(p: Prediction, b: Budget) -> float:
    """Sum of relative shortfalls against each budget; 0 means every budget is met."""
    total = 0.0
    if b.max_latency_ms is not None and p.latency_ms > b.max_latency_ms:
        total += (p.latency_ms - b.max_latency_ms) / b.max_latency_ms
    if b.min_quality is not None and p.quality < b.min_quality:
        total += (b.min_quality - p.quality) / max(b.min_quality, 1e-9)
    if b.max_cost_usd is not None and p.cost_usd > b.max_cost_usd:
        total += (p.cost_usd - b.max_cost_usd) / b.max_cost_usd
    return total


def _unmet(preds: Sequence[Prediction], b: Budget) -> tuple[UnmetBudget, ...]:
    """For each budget, the best value any candidate achieves, when none meets it."""
    out: list[UnmetBudget] = []
    if b.max_latency_ms is not None and not any(p.fits_latency for p in preds):
        p = min(preds, key=lambda x: x.latency_ms)
        out.append(UnmetBudget("max_latency_ms", b.max_latency_ms, round(p.latency_ms, 1), p.model))
    if b.min_quality is not None and not any(p.fits_quality for p in preds):
        p = max(preds, key=lambda x: x.quality)
        out.append(UnmetBudget("min_quality", b.min_quality, round(p.quality, 4), p.model))
    if b.max_cost_usd is not None and not any(p.fits_cost for p in preds):
        p = min(preds, key=lambda x: x.cost_usd)
        out.append(UnmetBudget("max_cost_usd", b.max_cost_usd, p.cost_usd, p.model))
    if not out:
        # each budget alone is reachable, but no single model meets them together
        for name, key, pick in (("max_latency_ms", "latency_ms", min), ("min_quality", "quality", max),
                                ("max_cost_usd", "cost_usd", min)):
            requested = getattr(b, name)
            if requested is not None:
                p = pick(preds, key=lambda x, k=key: getattr(x, k))
                out.append(UnmetBudget(name, requested, getattr(p, key), p.model))
    return tuple(out)


def _infeasible_message(unmet: Sequence[UnmetBudget], b: Budget, pinned: str | None = None) -> str:
    who = f"model {pinned}" if pinned else "no model in the pool"
    alone = [u for u in unmet if not _jointly_only(u, b)]
    parts = [f"{u.budget}={u.requested:g} (best achievable: {u.best_achievable:g} by {u.best_model})"
             for u in unmet]
    if pinned:
        return f"{who} cannot meet the budget: " + "; ".join(parts)
    if alone:
        return f"{who} can meet the budget: " + "; ".join(parts)
    return f"{who} meets these budgets together, though each alone is reachable: " + "; ".join(parts)


def _jointly_only(u: UnmetBudget, b: Budget) -> bool:
    if u.budget == "min_quality":
        return u.best_achievable >= u.requested
    return u.best_achievable <= u.requested


def _describe_needs(req: RouteRequest) -> str:
    return f" among those supporting {' and '.join(sorted(req.requires))}" if req.requires else ""


def _describe_quality(req: RouteRequest) -> str:
    return f"; quality is each model's measured accuracy on {req.quality_class} requests" if req.quality_class else ""


def _describe_draw(equal: Sequence[Prediction]) -> str:
    if len(equal) < 2:
        return ""
    return f"; drawn among {', '.join(p.model for p in equal)} (near-equal in cost)"


def _describe_budget(b: Budget) -> str:
    parts = []
    if b.max_latency_ms is not None:
        parts.append(f"latency<={b.max_latency_ms:g}ms")
    if b.min_quality is not None:
        parts.append(f"quality>={b.min_quality:g}")
    if b.max_cost_usd is not None:
        parts.append(f"cost<=${b.max_cost_usd:g}")
    return ", ".join(parts) or "no budget"
