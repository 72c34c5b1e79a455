"""Labelled prompts for a load run: where a class's labelled file lives, and the seeded draw of its items.

A scenario class that names a labelled set (``{"id","task","prompt","kind","answer"}`` per line, read by
:mod:`serve.evaluation.labelled`) sends its items as a product would (:func:`request_text`, the
scorer's :func:`~serve.evaluation.scorer.product_prompt`) and has each answer scored against gold
(:func:`score`, the scorer's :func:`~serve.evaluation.scorer.score_item`). Files are found relative to
the repository (``root: repo``) or to the scenario's ``shared_dir`` (``root: shared``), itself relative
to the repository unless absolute.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from serve.evaluation.label import MAX_TOKENS
from router.errors import ConfigError
from serve.evaluation.labelled import read_jsonl, read_labelled
from serve.evaluation.scorer import KINDS, product_prompt, score_item, scoring_kind

ROOT = Path(__file__).resolve().parents[1]

Item = Mapping[str, Any]


def resolve(file: str, root: str, shared_dir: str) -> Path:
    """The path of a labelled (or exclusion) file named in a scenario."""
    if root == "repo":
        base = ROOT
    elif root == "shared":
        base = Path(shared_dir) if Path(shared_dir).is_absolute() else ROOT / shared_dir
    else:
        raise ValueError(f"unknown root {root!r}; valid: repo, shared")
    return (base / file).resolve()


def read_items(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of ``path`` (:func:`serve.evaluation.labelled.read_jsonl`), its errors as ValueError
    so that a scenario's validation reports them."""
    try:
        return read_jsonl(path)
    except ConfigError as err:
        raise ValueError(err.message) from None


@lru_cache(maxsize=32)
def draw(path: Path, n: int, seed: str, exclude: tuple[Path, ...] = ()) -> tuple[Item, ...]:
    """``n`` items of ``path`` drawn without replacement with ``seed`` (in draw order), leaving out items
    whose id appears in any ``exclude`` file. Read once per process; the items are read-only."""
    try:
        items = read_labelled(path)
    except ConfigError as err:
        raise ValueError(err.message) from None
    banned = {rec.get("id") for p in exclude for rec in read_items(p)}
    pool = [it for it in items if it["id"] not in banned]
    if n > len(pool):
        raise ValueError(f"{path}: asked for {n} items, but only {len(pool)} are available"
                         + (f" after excluding {len(items) - len(pool)}" if banned else ""))
    for it in pool:  # an unknown kind fails here, not in the middle of a run
        if scoring_kind(it) not in KINDS:
            raise ValueError(f"{path}: item {it['id']} has unknown kind {it['kind']!r}; valid: {', '.join(KINDS)}")
    return tuple(MappingProxyType(dict(it)) for it in random.Random(seed).sample(pool, n))


def request_text(item: Item) -> str:
    """The user message (or completion prompt) sent for ``item``."""
    return product_prompt(dict(item))


def max_tokens(item: Item) -> int:
    """Enough tokens for the short answer ``item``'s kind asks for."""
    return MAX_TOKENS[scoring_kind(dict(item))]


def score(item: Item, reply: str) -> float:
    """1.0 when ``reply`` is the gold answer of ``item``, else 0.0."""
    return score_item(dict(item), reply)


def kinds(items: Sequence[Item]) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        k = scoring_kind(dict(it))
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))
