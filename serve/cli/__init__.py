"""The ``tiergate`` command line: one module per subcommand, registered by name."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing ``add_parser(subparsers)``; the parser's ``func(args) -> int`` runs it
COMMANDS: dict[str, str] = {
    "serve": "serve.cli.serve_cmd",
    "calibrate": "serve.cli.calibrate",
    "replay": "serve.cli.replay",
    "reference": "serve.cli.reference",
    "weights": "serve.cli.weights_cmd",
    "label": "serve.evaluation.label",
    "label-calls": "serve.evaluation.label_calls",
    "eval": "serve.evaluation.live",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiergate", description="tiergate: a tiered-routing model gateway")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:  # not written yet: skip rather than break the whole CLI
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from router.errors import TiergateError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TiergateError as err:
        print(f"tiergate {args.command}: error: {err.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
