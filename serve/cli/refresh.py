"""``tiergate calibrate --refresh PROFILE --live FILE``: a profile recalibrated on live outcomes.

Reads the outcome lines a gateway recorded (``monitoring.outcomes``: one per shadow comparison),
keeps those whose predicted quality came from the profile's heads (not a class accuracy), and
for each model with at least ``--min-outcomes`` of them refits its Platt pair
(``router.quality.refresh``). The heads, encoder and cascade thresholds are kept; the report
gains a ``refresh`` entry with the figures. Written atomically, so ``--out`` may be the profile a
running gateway watches: it picks the new one up without a restart (``quality_profile_reload_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from router.errors import ConfigError
from router.quality.profile import EncoderSpec, QualityProfile
from router.quality.refresh import refit_platt
from serve.quality_profile import encoder_dir, read_profile, write_profile


def read_outcomes(paths: list[str], models: tuple[str, ...]) -> dict[str, list[tuple[float, float]]]:
    """Per model, the (predicted quality, outcome) pairs the profile's heads answered for."""
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for path in paths:
        p = Path(path)
        try:
            lines = p.read_text(encoding="utf-8").split("\n")
        except FileNotFoundError:
            raise ConfigError(f"live outcomes file {p} does not exist") from None
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                model, predicted, outcome = rec["model"], rec.get("predicted_quality"), float(rec["outcome"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ConfigError(f"{p}:{i}: not a live outcome line ({type(err).__name__}: {err})") from None
            if rec.get("quality_class") or predicted is None or model not in models:
                continue  # a class accuracy or a pinned model answered: nothing of the heads to refit
            pairs[model].append((float(predicted), outcome))
    return pairs


def _rebased(spec: EncoderSpec, source_dir: Path, out_dir: Path) -> EncoderSpec:
    """The encoder reference as seen from the new profile's folder."""
    if spec.kind != "static" or Path(spec.ref).is_absolute():
        return spec
    return replace(spec, ref=os.path.relpath(encoder_dir(spec, source_dir), out_dir.resolve()))


def refresh(profile: QualityProfile, pairs: dict[str, list[tuple[float, float]]], *, min_outcomes: int,
            prior_strength: float) -> tuple[QualityProfile, dict[str, Any]]:
    heads, figures = [], {}
    for head in profile.params.heads:
        got = pairs.get(head.model, [])
        if len(got) < min_outcomes:
            heads.append(head)
            figures[head.model] = {"n": len(got), "refitted": False}
            continue
        fit = refit_platt(head.model, head.platt_scale, head.platt_shift, [p for p, _ in got], [y for _, y in got],
                          prior_strength=prior_strength)
        heads.append(replace(head, platt_scale=fit.scale, platt_shift=fit.shift))
        figures[head.model] = {"refitted": True, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                     for k, v in asdict(fit).items() if k != "model"}}
    params = replace(profile.params, heads=tuple(heads))
    report = {**profile.report, "refresh": {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                            "models": figures}}
    return replace(profile, params=params, report=report), figures


def run_refresh(args: argparse.Namespace) -> int:
    if not args.live:
        raise ConfigError("--refresh needs at least one --live FILE of recorded outcomes")
    source, out = Path(args.refresh), Path(args.out)
    profile = read_profile(source)
    pairs = read_outcomes(args.live, profile.models)
    new, figures = refresh(profile, pairs, min_outcomes=args.min_outcomes, prior_strength=args.prior_strength)
    new = replace(new, encoder=_rebased(new.encoder, source.parent, out.parent),
                  sources=tuple(new.sources) + tuple(Path(f).name for f in args.live))
    write_profile(new, out)
    print(json.dumps({"profile": str(out), "refreshed_from": str(source), "models": figures}), file=sys.stdout)
    return 0
