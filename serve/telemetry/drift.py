"""Drift monitoring: tumbling windows of live features scored against a frozen reference.

:class:`DriftMonitor` is plain Python (no Ray): the telemetry deployment feeds it every
:class:`RequestRecord` with ``observe`` and calls ``tick`` (e.g. on every scrape). When a window
(aligned to multiples of its length since the epoch) closes with at least ``min_samples``
answered requests, every feature is scored with every configured method and two gauges are set
side by side::

    tiergate_drift_score{feature, method, window}
    tiergate_drift_threshold{feature, method, window}

so one generic alert (``score > threshold``) covers all of them. A window under the minimum
removes its series (no stale scores keep an alert alive). Thresholds are calibrated on
reference chunks of the window's size, as NannyML does: ``chunks`` bootstrap chunks of ``n``
requests and bootstrap references of the reference size are drawn from the reference sample and
scored; the threshold is the mean plus ``threshold_sigmas`` standard deviations.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.spatial.distance import cosine, jensenshannon
from scipy.special import rel_entr
from scipy.stats import wasserstein_distance

from router.errors import RegistryError
from serve.telemetry.features import ALL_FEATURES, EMBEDDING_FEATURE, FeatureRow, counts_for_drift, row_from_record
from serve.telemetry.records import RequestRecord
from serve.telemetry.reference import CategoricalProfile, EmbeddingProfile, NumericProfile, Reference


# ============================================================================ methods
@dataclass(frozen=True, eq=False)
class Sample:
    """A distribution over one profile's bins, with the raw values behind it (numeric only)."""

    hist: np.ndarray
    values: np.ndarray | None = None
    weights: np.ndarray | None = None


class DriftMethod(abc.ABC):
    """A distance between the reference and a window of one binned or numeric feature."""

    name: ClassVar[str]
    kinds: ClassVar[frozenset[str]]

    @abc.abstractmethod
    def score(self, profile: NumericProfile | CategoricalProfile, ref: Sample, win: Sample) -> float: ...


class JensenShannon(DriftMethod):
    """Jensen-Shannon distance in base 2 (0 = same, 1 = disjoint), on the frozen bins."""

    name = "jensen_shannon"
    kinds = frozenset({"numeric", "categorical"})

    def score(self, profile, ref, win):
        return float(jensenshannon(ref.hist, win.hist, base=2))


class PopulationStability(DriftMethod):
    """PSI = sum((q - p) ln(q / p)) on the frozen bins, empty bins smoothed by ``EPS``."""

    name = "psi"
    kinds = frozenset({"numeric", "categorical"})
    EPS = 1e-4

    def score(self, profile, ref, win):
        p = (ref.hist + self.EPS) / (1 + self.EPS * len(ref.hist))
        q = (win.hist + self.EPS) / (1 + self.EPS * len(win.hist))
        return float(np.sum(rel_entr(q, p) + rel_entr(p, q)))


class NormalisedWasserstein(DriftMethod):
    """Wasserstein-1 between raw values, divided by the reference standard deviation."""

    name = "wasserstein"
    kinds = frozenset({"numeric"})

    def score(self, profile, ref, win):
        distance = wasserstein_distance(ref.values, win.values, ref.weights, win.weights)
        return float(distance) / profile.scale


METHODS: dict[str, type[DriftMethod]] = {m.name: m for m in (JensenShannon, PopulationStability, NormalisedWasserstein)}
EMBEDDING_METHOD = "cosine"  # the embedding feature's only method: cosine distance of the means


def method(name: str) -> DriftMethod:
    try:
        return METHODS[name]()
    except KeyError:
        raise RegistryError(f"unknown drift method {name!r}; valid methods: {', '.join(METHODS)}") from None


# ============================================================================ config
class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftWindowConfig(_Frozen):
    name: str = Field(pattern=r"^[0-9A-Za-z_]{1,16}$", description="label value, e.g. 15m")
    seconds: float = Field(gt=0)


class DriftConfig(_Frozen):
    """The ``monitoring.drift`` section of a pool config."""

    enabled: bool = True
    reference: str | None = Field(default=None, description="reference file from `tiergate reference build`; "
                                  "drift is off without one")
    windows: tuple[DriftWindowConfig, ...] = (DriftWindowConfig(name="15m", seconds=900),
                                              DriftWindowConfig(name="1h", seconds=3600))
    min_samples: int = Field(default=100, ge=2, description="windows with fewer answered requests are skipped")
    methods: tuple[str, ...] = ("jensen_shannon",)
    features: tuple[str, ...] = ALL_FEATURES
    threshold_sigmas: float = Field(default=3.0, gt=0)
    calibration_chunks: int = Field(default=200, ge=10, le=2000)
    max_window_samples: int = Field(default=50_000, ge=100, description="reservoir size per feature and window")
    seed: int = 0

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in METHODS]
        if unknown or not value:
            raise ValueError(f"unknown drift methods {unknown}; valid methods: {', '.join(METHODS)}")
        return value

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in value if f not in ALL_FEATURES]
        if unknown:
            raise ValueError(f"unknown drift features {unknown}; valid features: {', '.join(ALL_FEATURES)}")
        return value

    @field_validator("windows")
    @classmethod
    def _unique_windows(cls, value: tuple[DriftWindowConfig, ...]) -> tuple[DriftWindowConfig, ...]:
        names = [w.name for w in value]
        if len(set(names)) != len(names):
            raise ValueError(f"window names must be unique, got {names}")
        return value


# ============================================================================ scoring
def _hist(codes: np.ndarray, n_bins: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n_bins).astype(np.float64)
    return counts / counts.sum()


def score_window(profile, how: DriftMethod | None, ref_hist: np.ndarray | None, window) -> float:
    """Score one window (numeric values, category labels or embedding matrix) against a profile."""
    if isinstance(profile, EmbeddingProfile):
        return float(cosine(profile.centroid, np.mean(window, axis=0)))
    codes = profile.codes(window)
    values = np.asarray(window, dtype=np.float64) if isinstance(profile, NumericProfile) else None
    return how.score(profile, Sample(ref_hist, profile.values), Sample(_hist(codes, profile.n_bins), values))


def _bootstrap_weights(rng: np.random.Generator, size: int, n: int, chunks: int) -> np.ndarray:
    """``chunks`` rows of how often each of ``size`` reference items was drawn in ``n`` draws."""
    if n * chunks > 4_000_000:  # large chunks: O(size) per row instead of O(n)
        return rng.multinomial(n, np.full(size, 1.0 / size), size=chunks).astype(np.float64)
    picks = rng.integers(0, size, size=(chunks, n))
    return np.stack([np.bincount(row, minlength=size) for row in picks]).astype(np.float64)


def calibrate(profile, how: DriftMethod | None, n: int, *, chunks: int, sigmas: float, seed: int) -> float:
    """Mean + ``sigmas`` sd of the score between bootstrap chunks of size ``n`` and bootstrap
    references of the reference's size, both drawn from the reference sample (so the threshold
    covers the sampling noise of the window and of the reference alike)."""
    rng = np.random.default_rng([seed, n])
    if isinstance(profile, EmbeddingProfile):
        sample = profile.sample.astype(np.float64)
        size = sample.shape[0]
        chunk_means = _bootstrap_weights(rng, size, n, chunks) @ sample / n
        ref_means = _bootstrap_weights(rng, size, size, chunks) @ sample / size
        scores = [cosine(r, c) for r, c in zip(ref_means, chunk_means, strict=True)]
    else:
        codes = profile.sample_codes if isinstance(profile, CategoricalProfile) else profile.codes(profile.values)
        size = len(codes)
        chunk_w = _bootstrap_weights(rng, size, n, chunks)
        ref_w = _bootstrap_weights(rng, size, size, chunks)
        scores = []
        for r, c in zip(ref_w, chunk_w, strict=True):
            ref = Sample(np.bincount(codes, weights=r, minlength=profile.n_bins) / r.sum(), profile.values, r)
            win = Sample(np.bincount(codes, weights=c, minlength=profile.n_bins) / c.sum(), profile.values, c)
            scores.append(how.score(profile, ref, win))
    arr = np.asarray(scores, dtype=np.float64)
    return float(arr.mean() + sigmas * arr.std(ddof=1))


def calibration_size(n: int) -> int:
    """``n`` rounded down to two significant digits: thresholds are cached per rounded size, and
    rounding down only makes them a little more conservative (smaller chunks, more noise)."""
    if n < 100:
        return n
    step = 10 ** (len(str(n)) - 2)
    return n // step * step


@dataclass(frozen=True)
class WindowScore:
    window: str
    feature: str
    method: str
    n: int
    score: float
    threshold: float

    @property
    def drifted(self) -> bool:
        return self.score > self.threshold


# ============================================================================ the monitor
class _Reservoir:
    """A uniform sample of at most ``limit`` items of a stream (Algorithm R), plus the true count."""

    def __init__(self, limit: int, rng: np.random.Generator) -> None:
        self.limit, self.rng, self.items, self.seen = limit, rng, [], 0

    def add(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.limit:
            self.items.append(item)
        else:
            j = int(self.rng.integers(0, self.seen))
            if j < self.limit:
                self.items[j] = item


class _Window:
    """The open window of one length: reservoirs per feature and a running embedding sum."""

    def __init__(self, index: int, features: tuple[str, ...], limit: int, rng: np.random.Generator) -> None:
        self.index = index
        self.count = 0
        self.values = {f: _Reservoir(limit, rng) for f in features if f != EMBEDDING_FEATURE}
        self.embedding_sum: np.ndarray | None = None
        self.embedding_count = 0

    def add(self, row: FeatureRow) -> None:
        self.count += 1
        for name, reservoir in self.values.items():
            value = getattr(row, name)
            if value is not None:
                reservoir.add(value)
        if row.prompt_embedding:
            vec = np.asarray(row.prompt_embedding, dtype=np.float64)
            if self.embedding_sum is None:
                self.embedding_sum = np.zeros_like(vec)
            if vec.shape == self.embedding_sum.shape:
                self.embedding_sum += vec
                self.embedding_count += 1


class DriftMonitor:
    """Scores tumbling windows of live traffic against a :class:`Reference`; sets gauges."""

    def __init__(self, registry: CollectorRegistry, reference: Reference, config: DriftConfig) -> None:
        self.reference, self.config = reference, config
        self._rng = np.random.default_rng(config.seed)
        self._features = tuple(f for f in config.features if f in reference.profiles)
        self._methods = {name: method(name) for name in config.methods}
        self._ref_hist = {f: reference.proportions(f) for f in self._features if f != EMBEDDING_FEATURE}
        self._open: dict[str, _Window | None] = {w.name: None for w in config.windows}
        self._thresholds: dict[tuple[str, str, int], float] = {}
        self._live: dict[str, set[tuple[str, str]]] = {w.name: set() for w in config.windows}
        self.score = Gauge("tiergate_drift_score", "Drift of the last closed window from the reference.",
                           ["feature", "method", "window"], registry=registry)
        self.threshold = Gauge("tiergate_drift_threshold", "Score above which the window counts as drifted "
                               "(reference chunks of the window's size, mean + k sd).",
                               ["feature", "method", "window"], registry=registry)
        self.samples = Gauge("tiergate_drift_window_samples", "Answered requests in the last closed window.",
                             ["window"], registry=registry)
        self.windows = Counter("tiergate_drift_windows", "Closed drift windows, scored or skipped (too few "
                               "requests).", ["window", "outcome"], registry=registry)
        self.window_end = Gauge("tiergate_drift_window_end_timestamp_seconds", "End of the last closed window.",
                                ["window"], registry=registry)
        self.reference_records = Gauge("tiergate_drift_reference_records", "Answered requests in the reference.",
                                       registry=registry)
        self.reference_records.set(reference.n_records)
        for w in config.windows:  # export every series from the start (zero until a window closes)
            for outcome in ("scored", "skipped"):
                self.windows.labels(w.name, outcome)
            self.samples.labels(w.name).set(0)

    def pairs(self) -> list[tuple[str, str]]:
        """The (feature, method) pairs this monitor scores."""
        out = []
        for feature in self._features:
            kind = self.reference.profiles[feature].kind
            if kind == "embedding":
                out.append((feature, EMBEDDING_METHOD))
            else:
                out.extend((feature, m) for m, how in self._methods.items() if kind in how.kinds)
        return out

    def observe(self, record: RequestRecord, now: float) -> list[WindowScore]:
        """Add one request (ignored unless a model answered it); returns scores of windows it closed."""
        closed = self.tick(now)
        if counts_for_drift(record):
            self.observe_row(row_from_record(record), now)
        return closed

    def observe_row(self, row: FeatureRow, now: float) -> None:
        for w in self.config.windows:
            index = math.floor(now / w.seconds)
            current = self._open[w.name]
            if current is None or current.index != index:
                current = self._open[w.name] = _Window(index, self._features, self.config.max_window_samples,
                                                       self._rng)
            current.add(row)

    def tick(self, now: float) -> list[WindowScore]:
        """Close every window that ended at or before ``now``; score and export it."""
        results: list[WindowScore] = []
        for w in self.config.windows:
            current = self._open[w.name]
            if current is None or math.floor(now / w.seconds) <= current.index:
                continue
            self._open[w.name] = None
            self.window_end.labels(w.name).set((current.index + 1) * w.seconds)
            self.samples.labels(w.name).set(current.count)
            results.extend(self._close(w.name, current))
        return results

    def _close(self, window: str, data: _Window) -> list[WindowScore]:
        scored: list[WindowScore] = []
        live: set[tuple[str, str]] = set()
        for feature, method_name in self.pairs():
            result = self._score(window, feature, method_name, data)
            if result is None:
                continue
            scored.append(result)
            live.add((feature, method_name))
            self.score.labels(feature, method_name, window).set(result.score)
            self.threshold.labels(feature, method_name, window).set(result.threshold)
        for feature, method_name in self._live[window] - live:  # no stale series
            self.score.remove(feature, method_name, window)
            self.threshold.remove(feature, method_name, window)
        self._live[window] = live
        self.windows.labels(window, "scored" if scored else "skipped").inc()
        return scored

    def _score(self, window: str, feature: str, method_name: str, data: _Window) -> WindowScore | None:
        profile = self.reference.profiles[feature]
        if feature == EMBEDDING_FEATURE:
            n = data.embedding_count
            if n < self.config.min_samples or data.embedding_sum is None or profile.dim != len(data.embedding_sum):
                return None
            how = None
            score = float(cosine(profile.centroid, data.embedding_sum / n))
        else:
            values = data.values[feature].items
            n = len(values)
            if n < self.config.min_samples:
                return None
            how = self._methods[method_name]
            score = score_window(profile, how, self._ref_hist[feature], values)
        size = calibration_size(n)
        key = (feature, method_name, size)
        if key not in self._thresholds:
            self._thresholds[key] = calibrate(profile, how, size, chunks=self.config.calibration_chunks,
                                              sigmas=self.config.threshold_sigmas, seed=self.config.seed)
            if len(self._thresholds) > 10_000:
                self._thresholds.pop(next(iter(self._thresholds)))
        return WindowScore(window, feature, method_name, n, score, self._thresholds[key])
