"""``tiergate weights``: assemble and verify a pool's weights files that come in parts, now.

Used at image build time (deploy/docker/) and by operators who want the cache warm before the
first start; ``tiergate serve`` does the same before it starts Ray.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="assemble and verify the pool's weights files that come in parts")
    p.add_argument("--pool", required=True, help="pool YAML file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serve.cli.serve_cmd import prepare_weights
    from serve.config import load_pool

    prepare_weights(load_pool(args.pool))
    return 0
