"""``tiergate reference build|show``: the frozen traffic profile that drift is scored against.

``build --from FILE [--from FILE ...] --out REF`` reads JSON lines of RequestRecord-like dicts
(a traffic file, or what the gateway's feature recorder wrote) and writes the reference;
``show REF`` prints its bins.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from router.errors import ConfigError
from serve.telemetry.features import FeatureRow, row_from_dict
from serve.telemetry.reference import Reference


def read_rows(paths: list[str]) -> Iterator[FeatureRow]:
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"traffic file {path} does not exist")
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = row_from_dict(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{path}:{lineno}: not JSON: {err.msg}") from None
                except ConfigError as err:
                    raise ConfigError(f"{path}:{lineno}: {err.message}") from None
                if row is not None:
                    yield row


def _build(args: argparse.Namespace) -> int:
    reference = Reference.build(read_rows(args.sources), bins=args.bins, max_samples=args.max_samples,
                                max_embeddings=args.max_embeddings, min_rows=args.min_rows, seed=args.seed,
                                source=", ".join(args.sources))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    reference.save(out)
    for line in reference.describe():
        print(line)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


def _show(args: argparse.Namespace) -> int:
    for line in Reference.load(args.reference).describe():
        print(line)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reference", help="build or inspect the drift reference profile",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="build a reference from traffic files (JSON lines)")
    build.add_argument("--from", dest="sources", action="append", required=True, metavar="FILE",
                       help="traffic file (JSON lines of RequestRecord-like objects); repeat for several")
    build.add_argument("--out", required=True, metavar="REF", help="reference file to write (JSON)")
    build.add_argument("--bins", type=int, default=10, help="quantile bins per numeric feature (default 10)")
    build.add_argument("--max-samples", type=int, default=20_000, help="reference sample kept per feature")
    build.add_argument("--max-embeddings", type=int, default=2_000, help="prompt embeddings kept for calibration")
    build.add_argument("--min-rows", type=int, default=100, help="fewest answered requests accepted")
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(func=_build)
    show = sub.add_parser("show", help="print a reference's features and bins")
    show.add_argument("reference", metavar="REF")
    show.set_defaults(func=_show)
