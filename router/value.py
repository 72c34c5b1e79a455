"""The value rule: the model of highest expected value, for a caller that prices a good answer.

A caller that says what an acceptable answer is worth to it (``Budget.answer_value_usd``, V)
is served, among the models meeting every budget, by the one that maximises

    V * P(acceptable) - predicted cost

rather than by the cheapest. The cheapest-feasible rule needs a quality floor, and a floor does
not trade: on a prompt where every model's predicted quality is below it, nothing meets it, and
above it the cheapest model that clears it wins however much better the next one would be. The
value rule weighs each model's extra chance of a good answer against its extra cost, per prompt,
and one V traces the whole cost-quality curve (small: the cheapest model; large: the best one).
On the ladder's labelled outcomes, leave-tasks-out, it reaches 98% of always-largest accuracy at
less of its cost than any floor (README "Quality routing").

Pure: predictions in, a ranking out.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.types import Prediction


def expected_value(pred: Prediction, answer_value_usd: float) -> float:
    """``pred``'s expected value in USD: the answer's worth times its chance of being acceptable, less its cost."""
    return answer_value_usd * pred.quality - pred.cost_usd


def by_value(preds: Sequence[Prediction], answer_value_usd: float) -> tuple[Prediction, ...]:
    """``preds`` best first: highest expected value, then cheapest, then quickest."""
    if not preds:
        raise ValueError("no prediction to rank")
    return tuple(sorted(preds, key=lambda p: (-expected_value(p, answer_value_usd), p.cost_usd, p.latency_ms,
                                              p.model)))


def describe(ranked: Sequence[Prediction], answer_value_usd: float) -> str:
    """The figures behind a value choice: the chosen model's expected value and the runner-up's."""
    def one(p: Prediction) -> str:
        return (f"{p.model} ${answer_value_usd:.3g} x {p.quality:.3f} - ${p.cost_usd:.3g} "
                f"= ${expected_value(p, answer_value_usd):.3g}")
    runner = f"; next {one(ranked[1])}" if len(ranked) > 1 else ""
    return f"an acceptable answer is worth ${answer_value_usd:.3g}: {one(ranked[0])}{runner}"
