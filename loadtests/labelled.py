"""Labelled prompts for a load run: where a class's labelled file lives, and the seeded draw of its items.

A scenario class that names a labelled set (``{"id","task","prompt","kind","answer"}`` per line, read by
:mod:`serve.evaluation.labelled`) sends its items as a product would (:func:`request_text`, the
scorer's :func:`~serve.evaluation.scorer.product_prompt`) and has each answer scored against gold
(:func:`score`, the scorer's :func:`~serve.evaluation.scorer.score_item`). Files are found relative to
the repository (``root: repo``) or to the scenario's ``shared_dir`` (``root: shared``), itself relative
to the repository unless absolute.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from serve.evaluation.label import MAX_TOKENS
from serve.evaluation.labelled import REQUIRED
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
    """Every JSON line of ``path``. Lines end at "\\n" only: prompts may hold U+0085 or U+2028, which
    ``str.splitlines`` would also split on (MMLU has such a prompt)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as err:
        raise ValueError(f"cannot read labelled set {path}: {err}") from None
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not JSON: {err}") from None
    return out


@lru_cache(maxsize=32)
def draw(path: Path, n: int, seed: str, exclude: tuple[Path, ...] = ()) -> tuple[Item, ...]:
    """``n`` items of ``path`` drawn without replacement with ``seed`` (in draw order), leaving out items
    whose id appears in any ``exclude`` file. Read once per process; the items are read-only."""
    items = read_items(path)
    for k, it in enumerate(items, start=1):
        missing = [f for f in REQUIRED if f not in it]
        if missing:
            raise ValueError(f"{path}: item {k} lacks {', '.join(missing)}")
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
