"""``tiergate calibrate``: learn a quality profile from replay files.

    tiergate calibrate --train FILE [--train FILE ...] [--split SPLIT] --out PROFILE [--encoder static]
    tiergate calibrate --refresh PROFILE --live OUTCOMES [--live ...] --out PROFILE   (see serve/cli/refresh.py)

Fits the per-model quality heads (router.quality.train), the cascade thresholds of every
model whose answers carry a confidence (router.cascade), and writes a versioned JSON profile
for the pool config's ``quality_profile``. The helpers here are shared with ``replay``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router.cascade import calibrate_threshold
from router.errors import ConfigError
from router.quality.dataset import ReplaySet, concat, parse_records
from router.quality.encoders import Encoder
from router.quality.features import feature_matrix
from router.quality.profile import CascadeThreshold, EncoderSpec, QualityProfile
from router.quality.train import fit_quality
from serve.evaluation.labelled import heldout_tasks
from serve.quality_profile import (
    SHIPPED_ENCODER,
    build_encoder,
    encode_all,
    encoder_spec,
    static_dim,
    write_profile,
)

ENCODER_KINDS = ("static", "sentence_transformers")
DEFAULT_MAX_CHARS = 2000
DEFAULT_CASCADE_TARGET = 0.8


def read_replay(paths: Sequence[str]) -> ReplaySet:
    """Read JSON-lines replay files into one set; errors name the file and line."""
    sets = []
    for path in paths:
        p = Path(path)
        try:
            lines = p.read_text(encoding="utf-8").split("\n")  # not splitlines(): prompts hold U+2028
        except FileNotFoundError:
            raise ConfigError(f"replay file {p} does not exist") from None

        def records(lines=lines, p=p):
            for i, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        yield f"{p}:{i}", json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ConfigError(f"{p}:{i}: not valid JSON: {err}") from None

        sets.append(parse_records(records()))
    if not sets:
        raise ConfigError("no replay files given")
    return concat(sets)


def make_encoder(kind: str, out_dir: Path, max_chars: int | None) -> tuple[Encoder, EncoderSpec]:
    """The encoder to calibrate with, and its spec as a profile in ``out_dir`` records it."""
    if kind == "static":
        spec = encoder_spec(kind, SHIPPED_ENCODER, out_dir, static_dim(SHIPPED_ENCODER), max_chars)
    elif kind == "sentence_transformers":
        spec = encoder_spec(kind, SHIPPED_ENCODER, out_dir, 384, max_chars)  # all-MiniLM-L6-v2: 384-d
    else:
        raise ConfigError(f"unknown encoder {kind!r}; valid encoders: {', '.join(ENCODER_KINDS)}")
    return build_encoder(spec, out_dir, check=False), spec


def calibration_part(train: ReplaySet, split: str) -> ReplaySet:
    """The prompts of ``train`` whose task the split file does not hold out; says on stderr what it dropped."""
    held = heldout_tasks(split)
    keep = np.array([t not in held for t in train.tasks], dtype=bool)
    if not keep.any():
        raise ConfigError(f"every prompt of the training files is in a held-out task of {split}")
    dropped = sorted({str(t) for t in train.tasks[~keep]})
    print(f"calibrating on {int(keep.sum())} of {len(train)} prompts; held out by {split}: "
          f"{int((~keep).sum())} prompts of {len(dropped)} tasks", file=sys.stderr)
    return train.subset(keep)


FOLDS = {"auto": None, "task": True, "prompt": False}


def fit_profile(train: ReplaySet, encoder: Encoder, spec: EncoderSpec, *, cascade_target: float,
                sources: Sequence[str] = (), emb: np.ndarray | None = None, seed: int = 0,
                folds_by: str = "auto") -> QualityProfile:
    if emb is None:
        emb = encode_all(encoder, train.prompts)
    params, report = fit_quality(emb, feature_matrix(train.prompts), train.outcomes, train.models, train.tasks,
                                 encoder_name=spec.name, seed=seed, task_folds=FOLDS[folds_by])
    cascade: list[CascadeThreshold] = []
    for j, model in enumerate(train.models):
        known = ~np.isnan(train.confidence[:, j])
        if known.sum() >= 20:
            # kept even when it would escalate every answer: the gateway then skips the attempt and goes
            # straight up (router.cascade.attempt_pays); without a threshold the cheap answer went unchecked
            cascade.append(calibrate_threshold(model, train.confidence[known, j], train.outcomes[known, j],
                                               cascade_target))
    return QualityProfile(encoder=spec, params=params, report=report.to_dict(), cascade=tuple(cascade),
                          sources=tuple(Path(s).name for s in sources))


def run(args: argparse.Namespace) -> int:
    if args.refresh:
        from serve.cli.refresh import run_refresh

        if args.train:
            raise ConfigError("give either --train (fit a new profile) or --refresh (recalibrate one), not both")
        return run_refresh(args)
    if not args.train:
        raise ConfigError("calibrate needs --train FILE (or --refresh PROFILE --live FILE)")
    t0 = time.perf_counter()
    train = read_replay(args.train)
    if args.split:
        train = calibration_part(train, args.split)
    out = Path(args.out)
    encoder, spec = make_encoder(args.encoder, out.parent, args.max_chars)
    profile = fit_profile(train, encoder, spec, cascade_target=args.cascade_target, sources=args.train,
                          seed=args.seed, folds_by=args.folds_by)
    write_profile(profile, out)
    summary = {"profile": str(out), "models": list(profile.models), "encoder": spec.name,
               "n_prompts": len(train), "ece": profile.report.get("ece"),
               "cascade": {c.model: {"threshold": round(c.threshold, 4), "escalation_rate": round(c.escalation_rate, 3),
                                     "kept_quality": round(c.kept_quality, 3)} for c in profile.cascade},
               "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary), file=sys.stdout)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("calibrate", help="learn a quality profile from replay files",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="append", metavar="FILE", help="replay JSON-lines file (repeatable)")
    p.add_argument("--refresh", metavar="PROFILE", help="instead of training: recalibrate this profile on live "
                   "outcomes (--live) recorded by a gateway (monitoring.outcomes)")
    p.add_argument("--live", action="append", metavar="FILE", help="live outcomes JSON-lines file (repeatable)")
    p.add_argument("--min-outcomes", type=int, default=30, help="--refresh: a model needs this many outcomes")
    p.add_argument("--prior-strength", type=float, default=10.0,
                   help="--refresh: how many outcomes' worth of weight the old calibration keeps")
    p.add_argument("--split", default="", metavar="FILE",
                   help="a split file (deploy/eval/split.json): leave out the prompts of its held-out tasks")
    p.add_argument("--out", required=True, metavar="PROFILE", help="where to write the profile (JSON)")
    p.add_argument("--encoder", choices=ENCODER_KINDS, default="static",
                   help="static: shipped distilled MiniLM table (fast, default); "
                        "sentence_transformers: full all-MiniLM-L6-v2 (slow)")
    p.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS,
                   help="truncate prompts to this many characters before embedding")
    p.add_argument("--cascade-target", type=float, default=DEFAULT_CASCADE_TARGET,
                   help="quality the answers a cascade keeps must reach (for models with confidences)")
    p.add_argument("--folds-by", choices=sorted(FOLDS), default="auto",
                   help="calibrate for unseen tasks or unseen prompts (auto: tasks when there are >= 20)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
