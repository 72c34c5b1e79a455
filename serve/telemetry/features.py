"""The compact, anonymised per-request features that drift monitoring looks at.

A :class:`FeatureRow` is built from a :class:`RequestRecord` (live traffic) or from one line of
a traffic file (JSON lines of RequestRecord-like dicts, e.g. written by
:class:`serve.telemetry.recorder.FeatureRecorder`). It never holds prompt or answer text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.errors import ConfigError
from serve.telemetry.records import RequestRecord

NUMERIC_FEATURES = ("prompt_tokens", "output_tokens", "predicted_quality", "mean_logprob")
CATEGORICAL_FEATURES = ("route_class", "finish_reason")
EMBEDDING_FEATURE = "prompt_embedding"
ALL_FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES + (EMBEDDING_FEATURE,)


@dataclass(frozen=True)
class FeatureRow:
    """One answered request, reduced to the features drift is scored on (``None`` = unknown)."""

    prompt_tokens: float | None = None
    output_tokens: float | None = None
    predicted_quality: float | None = None
    mean_logprob: float | None = None
    route_class: str = "none"
    finish_reason: str = "none"
    prompt_embedding: tuple[float, ...] = ()

    def numeric(self, name: str) -> float | None:
        return getattr(self, name)

    def categorical(self, name: str) -> str:
        return getattr(self, name)


def counts_for_drift(rec: RequestRecord) -> bool:
    """Only requests a model answered describe the traffic the quality profile must cover."""
    return bool(rec.model) and rec.status < 400


def row_from_record(rec: RequestRecord) -> FeatureRow:
    return FeatureRow(
        prompt_tokens=float(rec.prompt_tokens),
        output_tokens=float(rec.completion_tokens),
        predicted_quality=rec.predicted_quality,
        mean_logprob=rec.mean_logprob,
        route_class=rec.route_class or "none",
        finish_reason=rec.finish_reason or "none",
        prompt_embedding=tuple(rec.prompt_embedding),
    )


def _number(data: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"field {key!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            return None
        return float(value)
    return None


def row_from_dict(data: Mapping[str, Any]) -> FeatureRow | None:
    """A traffic-file line as a row; ``None`` for lines that describe no answered request.

    Accepts the RequestRecord field names (``completion_tokens``) and the usage spelling
    (``output_tokens``). Text fields are ignored on purpose.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a traffic line must be a JSON object, got {type(data).__name__}")
    status = data.get("status", 200)
    if data.get("model", "x") == "" or (isinstance(status, int) and status >= 400):
        return None
    embedding = data.get("prompt_embedding") or ()
    if not isinstance(embedding, (list, tuple)) or not all(isinstance(v, (int, float)) for v in embedding):
        raise ConfigError("field 'prompt_embedding' must be a list of numbers")
    return FeatureRow(
        prompt_tokens=_number(data, "prompt_tokens", "input_tokens"),
        output_tokens=_number(data, "completion_tokens", "output_tokens"),
        predicted_quality=_number(data, "predicted_quality"),
        mean_logprob=_number(data, "mean_logprob"),
        route_class=str(data.get("route_class") or "none"),
        finish_reason=str(data.get("finish_reason") or "none"),
        prompt_embedding=tuple(float(v) for v in embedding),
    )


def record_to_dict(rec: RequestRecord, *, include_embedding: bool = True) -> dict[str, Any]:
    """The anonymised JSON form of a record: features and routing facts, never text or keys."""
    out: dict[str, Any] = {
        "endpoint": rec.endpoint,
        "requested_model": rec.requested_model,
        "model": rec.model,
        "route_reason": rec.route_reason,
        "status": rec.status,
        "route_class": rec.route_class,
        "prompt_tokens": rec.prompt_tokens,
        "completion_tokens": rec.completion_tokens,
        "predicted_quality": rec.predicted_quality,
        "mean_logprob": rec.mean_logprob,
        "finish_reason": rec.finish_reason,
        "empty_output": rec.empty_output,
        "refused": rec.refused,
    }
    if include_embedding and rec.prompt_embedding:
        out["prompt_embedding"] = [round(v, 6) for v in rec.prompt_embedding]
    return out

