"""``tiergate eval --cv K``: the live evaluation with every prompt routed by a profile that never saw its task.

A single held-out split measures the router on the few tasks it happens to hold out. Leave-tasks-out
folds measure it on all of them, as ``tiergate replay --cv`` does offline, but live:

- the workload's tasks are dealt into K folds (whole tasks, a seeded shuffle: ``router.replay``);
- for each fold, a profile is fitted on the labelled outcomes (``--train``, ``tiergate label``
  records) of every task *not* in that fold, exactly as ``tiergate calibrate`` fits one, written
  over the profile the running gateway watches (``quality_profile``, reloaded without a restart),
  and the routed variants are sent for that fold's prompts once ``/health`` reports the new file;
- pinned models and the random mix do not depend on the profile: they are sent once, for all prompts.

Each fold's profile is kept under ``OUT/profiles/`` (so any routed answer can be checked against the
profile that routed it), and the watched file is put back as it was at the end, also on failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from router.errors import ConfigError
from router.replay import task_fold_index
from serve.profile_watch import file_sha256

RELOAD_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Fold:
    index: int
    tasks: tuple[str, ...]  # the tasks its profile never saw
    items: tuple[dict[str, Any], ...]


def deal_folds(items: list[dict[str, Any]], folds: int, seed: int) -> list[Fold]:
    """The workload dealt into ``folds`` by task; every item is in exactly one fold."""
    try:
        fold = task_fold_index([it["task"] for it in items], folds, seed)
    except ValueError as err:
        raise ConfigError(f"--cv: {err}") from None
    return [Fold(f, tuple(sorted({it["task"] for it, k in zip(items, fold) if k == f})),
                 tuple(it for it, k in zip(items, fold) if k == f)) for f in range(folds)]


class FoldProfiles:
    """Fits each fold's profile on the other tasks' outcomes, the way ``tiergate calibrate`` does."""

    def __init__(self, train_files: list[str], watched: Path, kept: Path, seed: int) -> None:
        from serve.cli.calibrate import DEFAULT_MAX_CHARS, make_encoder, read_replay
        from serve.quality_profile import encode_all

        self.files = train_files
        self.data = read_replay(train_files)
        self.encoder, self.spec = make_encoder("static", watched.parent, DEFAULT_MAX_CHARS)
        self.kept_spec = make_encoder("static", kept, DEFAULT_MAX_CHARS)[1]  # the same encoder, seen from ``kept``
        self.emb = encode_all(self.encoder, self.data.prompts)
        self.seed = seed

    def fit(self, held: tuple[str, ...]) -> Any:
        from serve.cli.calibrate import DEFAULT_CASCADE_TARGET, fit_profile

        out = set(held)
        keep = np.array([t not in out for t in self.data.tasks.astype(str)], dtype=bool)
        if not keep.any():
            raise ConfigError(f"--train has no outcomes outside the held-out tasks {list(held)}")
        return fit_profile(self.data.subset(keep), self.encoder, self.spec, cascade_target=DEFAULT_CASCADE_TARGET,
                           sources=self.files, emb=self.emb[keep], seed=self.seed)

    def kept_copy(self, profile: Any) -> Any:
        """The profile as a file under ``kept`` names its encoder."""
        return dataclasses.replace(profile, encoder=self.kept_spec)


async def watched_profile(base_url: str, api_key: str) -> dict[str, Any]:
    """The gateway's ``quality_profile`` as ``/health`` reports it (path, sha256, reloads)."""
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(f"{base_url.rstrip('/')}/health", headers={"authorization": f"Bearer {api_key}"})
    info = r.json().get("quality_profile")
    if not info:
        raise ConfigError(f"{base_url} routes without a quality profile: --cv needs one it watches for changes")
    return info


async def install(base_url: str, api_key: str, path: Path, write: Callable[[Path], None]) -> str:
    """Write a profile over the watched file and wait until the gateway routes on it; its sha256."""
    write(path)
    sha = file_sha256(path)
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        info = await watched_profile(base_url, api_key)
        if info["sha256"] == sha:
            return sha
        if info.get("last_error"):
            raise ConfigError(f"the gateway did not load {path}: {info['last_error']}")
        await asyncio.sleep(0.5)
    raise ConfigError(f"the gateway did not reload {path} within {RELOAD_TIMEOUT_S:.0f} s "
                      "(is quality_profile_reload_s 0?)")


RunVariant = Callable[[list[dict[str, Any]], str, dict[str, Any]], Awaitable[list[Any]]]


async def evaluate_folds(base_url: str, api_key: str, items: list[dict[str, Any]], specs: dict[str, dict[str, Any]],
                         routed: Callable[[str], bool], run_variant: RunVariant, *, train: list[str], folds: int,
                         seed: int, out: Path) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Every variant's answers in ``items`` order, routed variants fold by fold; and what each fold was."""
    from serve.quality_profile import write_profile

    info = await watched_profile(base_url, api_key)
    watched = Path(info["path"])
    if not watched.is_file():
        raise ConfigError(f"the gateway watches {watched}, which is not a file here: run --cv beside the gateway")
    dealt = deal_folds(items, folds, seed)
    fitter = FoldProfiles(train, watched, out / "profiles", seed)
    answers: dict[str, list[Any]] = {}
    for name, spec in specs.items():
        if not routed(name):
            answers[name] = await run_variant(items, name, spec)
    original = watched.read_bytes()
    by_id: dict[str, dict[str, Any]] = {name: {} for name in specs if routed(name)}
    record = []
    try:
        for fold in dealt:
            profile = fitter.fit(fold.tasks)
            kept = out / "profiles" / f"fold-{fold.index}.json"
            write_profile(fitter.kept_copy(profile), kept)
            sha = await install(base_url, api_key, watched, lambda p, prof=profile: write_profile(prof, p))
            print(f"fold {fold.index}: {len(fold.items)} prompts of {len(fold.tasks)} tasks, profile {sha[:12]} "
                  f"fitted on {profile.report.get('n_prompts')} outcomes", file=sys.stderr, flush=True)
            for name, store in by_id.items():
                got = await run_variant(list(fold.items), f"{name} fold {fold.index}", specs[name])
                store.update({a.id: a for a in got})
            record.append({"fold": fold.index, "tasks": list(fold.tasks), "prompts": len(fold.items),
                           "profile": kept.name, "profile_sha256": sha,
                           "trained_on": profile.report.get("n_prompts")})
    finally:
        tmp = watched.with_name(f".{watched.name}.{os.getpid()}.restore")
        tmp.write_bytes(original)
        os.replace(tmp, watched)
    for name, got in by_id.items():
        answers[name] = [got[it["id"]] for it in items]
    return answers, {"folds": folds, "seed": seed, "train": train, "watched_profile": str(watched), "per_fold": record}
