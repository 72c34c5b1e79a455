"""The quality profile: a versioned, JSON-serialisable record of a trained predictor.

A profile holds the encoder it was trained with (kind, reference, dimension, fingerprint),
the per-model heads, the calibration report and, optionally, per-model cascade thresholds and
per-model accuracies measured on whole request classes (tool calls, JSON-schema outputs).
This module converts between the parsed JSON mapping and frozen objects; reading and writing
the file, and building the encoder, is ``serve/quality_profile.py``'s job.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.errors import ProfileError
from router.quality.learned import Head, Memory, QualityParams

PROFILE_FORMAT = "tiergate.quality-profile"
PROFILE_VERSION = 1


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder a profile needs. ``kind`` names a loader in ``serve/quality_profile.py``."""

    kind: str  # "static" (model2vec directory), "sentence_transformers", "fake"
    ref: str  # a directory relative to the profile file, or a package name
    dim: int
    fingerprint: str = ""  # sha256 of the encoder's weights, checked at load when set
    max_chars: int | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.ref}"


@dataclass(frozen=True)
class CascadeThreshold:
    """Escalate from ``model`` when its answer's mean token logprob is below ``threshold``."""

    model: str
    threshold: float
    target_quality: float
    kept_quality: float
    escalation_rate: float
    n: int


@dataclass(frozen=True)
class ClassAccuracy:
    """Each model's measured rate of correct answers on one request class (``tools``, ``json_schema``):
    scored answers on ``n`` labelled prompts of the class, from ``source``. Models without the class's
    capability are absent."""

    name: str
    accuracy: Mapping[str, float]
    n: int
    source: str = ""


@dataclass(frozen=True, eq=False)
class QualityProfile:
    encoder: EncoderSpec
    params: QualityParams
    report: Mapping[str, Any] = field(default_factory=dict)
    cascade: tuple[CascadeThreshold, ...] = ()
    sources: tuple[str, ...] = ()
    version: int = PROFILE_VERSION
    classes: tuple[ClassAccuracy, ...] = ()

    @property
    def models(self) -> tuple[str, ...]:
        return self.params.models

    def cascade_for(self, model: str) -> CascadeThreshold | None:
        return next((c for c in self.cascade if c.model == model), None)

    def class_accuracy(self) -> dict[str, dict[str, float]]:
        """``{class: {model: accuracy}}``, what the predictor answers for a request of each class."""
        return {c.name: dict(c.accuracy) for c in self.classes}

    def to_dict(self) -> dict[str, Any]:
        p = self.params
        out: dict[str, Any] = {
            "format": PROFILE_FORMAT,
            "version": self.version,
            "models": list(self.models),
            "encoder": {"kind": self.encoder.kind, "ref": self.encoder.ref, "dim": self.encoder.dim,
                        "fingerprint": self.encoder.fingerprint, "max_chars": self.encoder.max_chars},
            "features": {"names": list(p.feature_names), "mean": _floats(p.feature_mean),
                         "scale": _floats(p.feature_scale)},
            "heads": [{"model": h.model, "platt_scale": h.platt_scale, "platt_shift": h.platt_shift,
                       "hidden_weights": [_floats(row) for row in h.hidden_weights],
                       "hidden_bias": _floats(h.hidden_bias), "out_weights": _floats(h.out_weights),
                       "out_bias": h.out_bias} for h in p.heads],
            "memory": None if p.memory is None else _memory_dict(p.memory),
            "cascade": [vars(c).copy() for c in self.cascade],
            "report": dict(self.report),
            "sources": list(self.sources),
        }
        if self.classes:  # optional: older profiles have none
            out["classes"] = {c.name: {"accuracy": dict(c.accuracy), "n": c.n, "source": c.source}
                              for c in self.classes}
        return out


def _memory_dict(m: Memory) -> dict[str, Any]:
    # unit-length embeddings fit int8 at a scale of 127; outcomes keep float16 precision
    emb = np.clip(np.round(np.asarray(m.embeddings) * 127.0), -127, 127).astype(np.int8)
    return {"k": m.k, "weight": m.weight, "rows": int(emb.shape[0]),
            "embeddings_int8": base64.b64encode(emb.tobytes()).decode("ascii"),
            "outcomes_float16": base64.b64encode(np.asarray(m.outcomes, dtype="<f2").tobytes()).decode("ascii")}


def _memory_from(d: Mapping[str, Any], dim: int, models: int, where: str) -> Memory:
    rows = int(_need(d, "rows", int, where))
    emb = np.frombuffer(base64.b64decode(_need(d, "embeddings_int8", str, where), validate=True), dtype=np.int8)
    out = np.frombuffer(base64.b64decode(_need(d, "outcomes_float16", str, where), validate=True), dtype="<f2")
    if emb.size != rows * dim or out.size != rows * models:
        raise ValueError(f"memory holds {emb.size} / {out.size} values, expected {rows * dim} / {rows * models}")
    return Memory(embeddings=emb.reshape(rows, dim).astype(np.float32) / 127.0,
                  outcomes=out.reshape(rows, models).astype(np.float64),
                  k=int(_need(d, "k", int, where)), weight=float(_need(d, "weight", (int, float), where)))


def _floats(a: np.ndarray) -> list[float]:
    return [float(f"{v:.7g}") for v in np.asarray(a, dtype=np.float64)]


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ProfileError(f"quality profile {where}: missing field {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        raise ProfileError(f"quality profile {where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def profile_from_dict(data: Any, source: str = "<inline>") -> QualityProfile:
    """Validate a parsed profile; every problem is a :class:`ProfileError` naming ``source``."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"quality profile {source} is not a JSON object")
    if data.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"{source} is not a tiergate quality profile (format {data.get('format')!r}, "
                           f"expected {PROFILE_FORMAT!r})")
    version = data.get("version")
    if version != PROFILE_VERSION:
        raise ProfileError(f"quality profile {source} has version {version!r}; this tiergate reads version "
                           f"{PROFILE_VERSION}: recalibrate it with `tiergate calibrate`")
    try:
        enc = _need(data, "encoder", Mapping, source)
        spec = EncoderSpec(kind=str(_need(enc, "kind", str, source)), ref=str(_need(enc, "ref", str, source)),
                           dim=int(_need(enc, "dim", int, source)), fingerprint=str(enc.get("fingerprint") or ""),
                           max_chars=enc.get("max_chars"))
        feats = _need(data, "features", Mapping, source)
        heads = tuple(
            Head(model=str(_need(h, "model", str, source)),
                 hidden_weights=np.asarray(_need(h, "hidden_weights", list, source), dtype=np.float64),
                 hidden_bias=np.asarray(_need(h, "hidden_bias", list, source), dtype=np.float64),
                 out_weights=np.asarray(_need(h, "out_weights", list, source), dtype=np.float64),
                 out_bias=float(_need(h, "out_bias", (int, float), source)),
                 platt_scale=float(h.get("platt_scale", 1.0)), platt_shift=float(h.get("platt_shift", 0.0)))
            for h in _need(data, "heads", list, source))
        if not heads:
            raise ProfileError(f"quality profile {source} has no model heads")
        params = QualityParams(
            encoder_name=spec.name, dim=spec.dim,
            feature_names=tuple(_need(feats, "names", list, source)),
            feature_mean=np.asarray(_need(feats, "mean", list, source), dtype=np.float64),
            feature_scale=np.asarray(_need(feats, "scale", list, source), dtype=np.float64),
            heads=heads,
            memory=_memory_from(data["memory"], spec.dim, len(heads), source) if data.get("memory") else None)
        cascade = tuple(CascadeThreshold(**c) for c in data.get("cascade") or ())
        classes = _classes(data.get("classes") or {}, source)
    except ProfileError:
        raise
    except (TypeError, ValueError, base64.binascii.Error) as err:
        raise ProfileError(f"quality profile {source} is corrupt: {err}") from None
    listed = tuple(data.get("models") or ())
    if listed != params.models:
        raise ProfileError(f"quality profile {source} lists models {list(listed)} but has heads for "
                           f"{list(params.models)}")
    for c in cascade:
        if c.model not in params.models:
            raise ProfileError(f"quality profile {source}: cascade threshold for unknown model {c.model!r}")
    for c in classes:
        unknown = sorted(set(c.accuracy) - set(params.models))
        if unknown:
            raise ProfileError(f"quality profile {source}: class {c.name!r} has accuracies for unknown model(s) "
                               f"{', '.join(unknown)}")
    return QualityProfile(encoder=spec, params=params, report=dict(data.get("report") or {}), cascade=cascade,
                          sources=tuple(data.get("sources") or ()), version=version, classes=classes)


def _classes(data: Any, source: str) -> tuple[ClassAccuracy, ...]:
    if not isinstance(data, Mapping):
        raise ProfileError(f"quality profile {source}: field 'classes' has the wrong type ({type(data).__name__})")
    out = []
    for name, entry in data.items():
        where = f"{source} class {name!r}"
        acc = _need(entry, "accuracy", Mapping, where) if isinstance(entry, Mapping) else None
        if acc is None:
            raise ProfileError(f"quality profile {where} is not an object")
        for model, value in acc.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ProfileError(f"quality profile {where}: accuracy of {model!r} must be in [0, 1], got {value!r}")
        out.append(ClassAccuracy(name=str(name), accuracy={str(m): float(v) for m, v in acc.items()},
                                 n=int(_need(entry, "n", int, where)), source=str(entry.get("source") or "")))
    return tuple(out)
