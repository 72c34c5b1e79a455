"""The frozen reference profile that live traffic is compared against.

Numeric features get bins from reference quantiles plus an underflow and an overflow bin (so
values never seen in the reference still land somewhere); categorical features get one bin per
reference category plus an ``other`` bin; the prompt embedding keeps its centroid. Each profile
also keeps a bounded random sample of the reference (codes or values) so that thresholds can be
calibrated on reference chunks of any window's size (see :mod:`serve.telemetry.drift`).

The file is JSON; the embedding sample is stored as base64 float16 to stay small.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router.errors import ConfigError
from serve.telemetry.features import CATEGORICAL_FEATURES, EMBEDDING_FEATURE, NUMERIC_FEATURES, FeatureRow

FORMAT_VERSION = 1
OTHER = "__other__"


@dataclass(frozen=True, eq=False)
class NumericProfile:
    """Bins ``(-inf, e0) [e0, e1) ... [e_k-1, e_k] (e_k, inf)`` from the reference quantiles."""

    edges: np.ndarray  # sorted, unique; first = reference min, last = just above reference max
    values: np.ndarray  # the reference sample, float64

    kind = "numeric"

    @classmethod
    def build(cls, values: np.ndarray, bins: int) -> NumericProfile:
        quantiles = np.quantile(values, np.linspace(0.0, 1.0, bins + 1))
        edges = np.unique(quantiles)
        edges[-1] = np.nextafter(edges[-1], np.inf)  # the maximum belongs to the last inner bin
        return cls(edges=edges, values=np.asarray(values, dtype=np.float64))

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def codes(self, values: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges, values, side="right")

    @property
    def scale(self) -> float:
        """What normalises Wasserstein-1: the reference standard deviation (1 when constant)."""
        sd = float(np.std(self.values))
        return sd if sd > 0 else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "values": self.values.tolist(),
                "proportions": _proportions(self.codes(self.values), self.n_bins).tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NumericProfile:
        return cls(edges=np.asarray(data["edges"], dtype=np.float64),
                   values=np.asarray(data["values"], dtype=np.float64))


@dataclass(frozen=True, eq=False)
class CategoricalProfile:
    """One bin per reference category, then one ``__other__`` bin for unseen ones."""

    categories: tuple[str, ...]
    sample_codes: np.ndarray  # the reference sample as bin indices

    kind = "categorical"

    @classmethod
    def build(cls, values: list[str]) -> CategoricalProfile:
        categories = tuple(sorted(set(values)))
        index = {c: i for i, c in enumerate(categories)}
        return cls(categories=categories, sample_codes=np.asarray([index[v] for v in values], dtype=np.int64))

    @property
    def n_bins(self) -> int:
        return len(self.categories) + 1

    def codes(self, values: Iterable[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.categories)}
        other = len(self.categories)
        return np.asarray([index.get(v, other) for v in values], dtype=np.int64)

    @property
    def values(self) -> None:  # categorical features have no metric space
        return None

    def to_json(self) -> dict[str, Any]:
        return {"categories": list(self.categories), "codes": self.sample_codes.tolist(),
                "proportions": _proportions(self.sample_codes, self.n_bins).tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CategoricalProfile:
        return cls(categories=tuple(data["categories"]), sample_codes=np.asarray(data["codes"], dtype=np.int64))


@dataclass(frozen=True, eq=False)
class EmbeddingProfile:
    """The reference centroid of prompt embeddings, and a sample of them for calibration."""

    centroid: np.ndarray
    sample: np.ndarray  # (n, dim) float32

    kind = "embedding"

    @property
    def dim(self) -> int:
        return int(self.centroid.shape[0])

    def to_json(self) -> dict[str, Any]:
        raw = self.sample.astype("<f2").tobytes()
        return {"dim": self.dim, "centroid": self.centroid.tolist(), "n": int(self.sample.shape[0]),
                "sample_f16_b64": base64.b64encode(raw).decode("ascii")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmbeddingProfile:
        dim, n = int(data["dim"]), int(data["n"])
        raw = np.frombuffer(base64.b64decode(data["sample_f16_b64"]), dtype="<f2")
        return cls(centroid=np.asarray(data["centroid"], dtype=np.float64),
                   sample=raw.astype(np.float32).reshape(n, dim))


Profile = NumericProfile | CategoricalProfile | EmbeddingProfile


def _proportions(codes: np.ndarray, n_bins: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n_bins).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


@dataclass(frozen=True, eq=False)
class Reference:
    """Profiles by feature name; a feature absent from the reference is never scored."""

    profiles: dict[str, Profile]
    n_records: int
    source: str = ""
    created: float = field(default_factory=time.time)

    def proportions(self, feature: str) -> np.ndarray:
        profile = self.profiles[feature]
        if isinstance(profile, NumericProfile):
            return _proportions(profile.codes(profile.values), profile.n_bins)
        if isinstance(profile, CategoricalProfile):
            return _proportions(profile.sample_codes, profile.n_bins)
        raise TypeError(f"{feature} has no bins")

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, rows: Iterable[FeatureRow], *, bins: int = 10, max_samples: int = 20_000,
              max_embeddings: int = 2_000, min_rows: int = 100, seed: int = 0, source: str = "") -> Reference:
        rows = list(rows)
        if len(rows) < min_rows:
            raise ConfigError(f"a reference needs at least {min_rows} answered requests, got {len(rows)}")
        if bins < 2:
            raise ConfigError(f"bins must be >= 2, got {bins}")
        rng = np.random.default_rng(seed)
        profiles: dict[str, Profile] = {}
        for name in NUMERIC_FEATURES:
            values = np.asarray([v for r in rows if (v := r.numeric(name)) is not None], dtype=np.float64)
            if len(values) >= min_rows:
                profiles[name] = NumericProfile.build(_subsample(values, max_samples, rng), bins)
        for name in CATEGORICAL_FEATURES:
            labels = [r.categorical(name) for r in rows]
            picked = _subsample(np.arange(len(labels)), max_samples, rng)
            profiles[name] = CategoricalProfile.build([labels[i] for i in picked])
        embedded = [r.prompt_embedding for r in rows if r.prompt_embedding]
        if len(embedded) >= min_rows:
            dims = {len(e) for e in embedded}
            if len(dims) != 1:
                raise ConfigError(f"prompt embeddings have different sizes: {sorted(dims)}")
            matrix = np.asarray(embedded, dtype=np.float64)
            sample = _subsample(matrix, max_embeddings, rng).astype(np.float32)
            profiles[EMBEDDING_FEATURE] = EmbeddingProfile(centroid=matrix.mean(axis=0), sample=sample)
        return cls(profiles=profiles, n_records=len(rows), source=source)

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        return {"format": "tiergate-reference", "version": FORMAT_VERSION, "created": self.created,
                "source": self.source, "n_records": self.n_records,
                "features": {name: {"kind": p.kind, **p.to_json()} for name, p in self.profiles.items()}}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reference:
        if data.get("format") != "tiergate-reference" or data.get("version") != FORMAT_VERSION:
            raise ConfigError(f"not a tiergate reference of version {FORMAT_VERSION}")
        kinds = {"numeric": NumericProfile, "categorical": CategoricalProfile, "embedding": EmbeddingProfile}
        profiles: dict[str, Profile] = {}
        for name, body in data["features"].items():
            kind = body.get("kind")
            if kind not in kinds:
                raise ConfigError(f"reference feature {name!r} has unknown kind {kind!r}; valid: {', '.join(kinds)}")
            profiles[name] = kinds[kind].from_json(body)
        return cls(profiles=profiles, n_records=int(data["n_records"]), source=str(data.get("source", "")),
                   created=float(data.get("created", 0.0)))

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"reference {p} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"reference {p} is not JSON: {err}") from None
        try:
            return cls.from_json(data)
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"reference {p} is malformed: {err!r}") from None

    def describe(self) -> list[str]:
        """Human-readable lines: one per feature with its bins."""
        lines = [f"reference from {self.source or '?'}: {self.n_records} answered requests"]
        for name, p in self.profiles.items():
            if isinstance(p, NumericProfile):
                shown = ", ".join(f"{e:g}" for e in p.edges)
                lines.append(f"  {name}: numeric, {p.n_bins} bins, edges [{shown}], n={len(p.values)}")
            elif isinstance(p, CategoricalProfile):
                props = self.proportions(name)
                cats = ", ".join(f"{c}={q:.3f}" for c, q in zip(p.categories, props, strict=False))
                lines.append(f"  {name}: categorical, {cats}")
            else:
                lines.append(f"  {name}: embedding, dim {p.dim}, sample {p.sample.shape[0]}")
        return lines


def _subsample(values: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= limit:
        return values
    return values[np.sort(rng.choice(len(values), size=limit, replace=False))]
