"""Replay records as arrays: prompts, tasks and per-model outcomes (and answer confidences).

A replay record is ``{"id", "task", "prompt", "outcomes": {model: quality in [0, 1]}}``,
optionally with ``"confidence": {model: mean token logprob}``. Parsing is pure: ``serve/``
reads the files and hands the decoded records here.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.errors import ConfigError


@dataclass(frozen=True, eq=False)
class ReplaySet:
    ids: tuple[str, ...]
    tasks: np.ndarray  # (n,) str
    prompts: tuple[str, ...]
    models: tuple[str, ...]
    outcomes: np.ndarray  # (n, models) in [0, 1]
    confidence: np.ndarray  # (n, models), NaN where unknown

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> ReplaySet:
        idx = np.nonzero(np.asarray(mask, dtype=bool))[0]
        return ReplaySet(ids=tuple(self.ids[i] for i in idx), tasks=self.tasks[idx],
                         prompts=tuple(self.prompts[i] for i in idx), models=self.models,
                         outcomes=self.outcomes[idx], confidence=self.confidence[idx])

    def reorder_models(self, models: Sequence[str]) -> ReplaySet:
        if set(models) != set(self.models):
            raise ConfigError(f"replay files disagree on the models: {sorted(self.models)} vs {sorted(models)}")
        cols = [self.models.index(m) for m in models]
        return ReplaySet(ids=self.ids, tasks=self.tasks, prompts=self.prompts, models=tuple(models),
                         outcomes=self.outcomes[:, cols], confidence=self.confidence[:, cols])

    def select_models(self, models: Sequence[str]) -> ReplaySet:
        """The same prompts scored by ``models`` only, in that order."""
        unknown = [m for m in models if m not in self.models]
        if unknown or len(set(models)) != len(models) or not models:
            raise ConfigError(f"choose distinct models among {', '.join(self.models)}; got {', '.join(models)}")
        cols = [self.models.index(m) for m in models]
        return ReplaySet(ids=self.ids, tasks=self.tasks, prompts=self.prompts, models=tuple(models),
                         outcomes=self.outcomes[:, cols], confidence=self.confidence[:, cols])

    def mean_quality(self) -> dict[str, float]:
        return {m: float(v) for m, v in zip(self.models, self.outcomes.mean(axis=0))}


def parse_records(records: Iterable[tuple[str, Any]]) -> ReplaySet:
    """Build a :class:`ReplaySet` from ``(where, record)`` pairs; errors name ``where``.

    Model names and their order come from the first record; every record must score the
    same models.
    """
    ids: list[str] = []
    tasks: list[str] = []
    prompts: list[str] = []
    rows: list[list[float]] = []
    confs: list[list[float]] = []
    models: tuple[str, ...] | None = None
    for where, rec in records:
        if not isinstance(rec, Mapping):
            raise ConfigError(f"{where}: a replay record must be a JSON object")
        prompt, outcomes = rec.get("prompt"), rec.get("outcomes")
        if not isinstance(prompt, str) or not isinstance(outcomes, Mapping) or not outcomes:
            raise ConfigError(f"{where}: a replay record needs a string 'prompt' and an 'outcomes' mapping")
        if models is None:
            models = tuple(str(m) for m in outcomes)
        if set(outcomes) != set(models):
            raise ConfigError(f"{where}: outcomes for {sorted(outcomes)}, but earlier records score {sorted(models)}")
        try:
            row = [float(outcomes[m]) for m in models]
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: outcomes must be numbers in [0, 1]") from None
        if any(not 0.0 <= v <= 1.0 for v in row):
            raise ConfigError(f"{where}: outcomes must be numbers in [0, 1], got {row}")
        conf = rec.get("confidence") or {}
        confs.append([float(conf[m]) if conf.get(m) is not None else np.nan for m in models])
        ids.append(str(rec.get("id", where)))
        tasks.append(str(rec.get("task") or "unknown"))
        prompts.append(prompt)
        rows.append(row)
    if models is None:
        raise ConfigError("no replay records")
    return ReplaySet(ids=tuple(ids), tasks=np.asarray(tasks), prompts=tuple(prompts), models=models,
                     outcomes=np.asarray(rows, dtype=np.float64), confidence=np.asarray(confs, dtype=np.float64))


def concat(sets: Sequence[ReplaySet]) -> ReplaySet:
    first = sets[0]
    parts = [s.reorder_models(first.models) for s in sets]
    return ReplaySet(ids=tuple(i for s in parts for i in s.ids), tasks=np.concatenate([s.tasks for s in parts]),
                     prompts=tuple(p for s in parts for p in s.prompts), models=first.models,
                     outcomes=np.vstack([s.outcomes for s in parts]),
                     confidence=np.vstack([s.confidence for s in parts]))


def holdout_tasks(tasks: Iterable[str], fraction: float, seed: int = 0) -> frozenset[str]:
    """A deterministic ``fraction`` of the distinct tasks (at least one), chosen by hashing."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    names = sorted(set(tasks))
    ranked = sorted(names, key=lambda t: zlib.crc32(f"{seed}:{t}".encode()))
    count = max(1, round(fraction * len(names)))
    return frozenset(ranked[:count])
