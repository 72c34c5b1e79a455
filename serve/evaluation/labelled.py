"""Labelled prompt sets (``{"id","task","prompt","kind","answer"}`` per line): reading and sampling."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from router.errors import ConfigError

REQUIRED = ("id", "task", "prompt", "kind", "answer")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        lines = p.read_text().split("\n")
    except FileNotFoundError:
        raise ConfigError(f"labelled set {p} does not exist") from None
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p}:{n}: not JSON: {err}") from None
    return out


def read_labelled(path: str | Path) -> list[dict[str, Any]]:
    items = read_jsonl(path)
    for n, item in enumerate(items, start=1):
        missing = [k for k in REQUIRED if k not in item]
        if missing:
            raise ConfigError(f"{path}: item {n} lacks {', '.join(missing)}")
    return items


def sample_per_task(items: list[dict[str, Any]], per_task: int, seed: int) -> list[dict[str, Any]]:
    """At most ``per_task`` items of each task, drawn with ``seed``; the input order is kept."""
    if per_task <= 0:
        return list(items)
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_task[item["task"]].append(i)
    rng = random.Random(seed)
    keep: set[int] = set()
    for task in sorted(by_task):
        idx = by_task[task]
        keep.update(idx if len(idx) <= per_task else rng.sample(idx, per_task))
    return [item for i, item in enumerate(items) if i in keep]


def split_tasks(tasks: list[str], holdout: float, seed: int) -> tuple[set[str], set[str]]:
    """(calibration tasks, held-out tasks): a seeded share of the tasks, whole tasks only."""
    ordered = sorted(set(tasks))
    rng = random.Random(seed)
    rng.shuffle(ordered)
    n_out = max(1, round(len(ordered) * holdout)) if holdout > 0 else 0
    return set(ordered[n_out:]), set(ordered[:n_out])


def heldout_tasks(split: str | Path) -> frozenset[str]:
    """The ``heldout_tasks`` of a split file (deploy/eval/split.json): the tasks a profile must not see."""
    p = Path(split)
    try:
        held = json.loads(p.read_text(encoding="utf-8"))["heldout_tasks"]
    except FileNotFoundError:
        raise ConfigError(f"split file {p} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"split file {p} has no list of heldout_tasks: {err}") from None
    if not isinstance(held, list) or not all(isinstance(t, str) for t in held):
        raise ConfigError(f"split file {p}: heldout_tasks must be a list of task names")
    return frozenset(held)
