"""Ad-hoc load run: one scenario, one policy, one load level, figures as JSON on stdout.

    python -m loadtests.run --base-url http://127.0.0.1:8000 --scenario loadtests/scenarios/mixed.yaml \
        --policy tiergate --rate 1.0 --requests 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from loadtests.client import pool_prices
from loadtests.policies import POLICIES, make_policy
from loadtests.runner import http_client, run_closed, run_open
from loadtests.scenario import load_scenario, plan
from loadtests.summary import problems, summarize

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__.splitlines()[0])
    p.add_argument("--base-url", required=True, help="the gateway, e.g. http://127.0.0.1:8000")
    p.add_argument("--scenario", default=str(SCENARIOS / "mixed.yaml"))
    p.add_argument("--shared-dir", help="where `root: shared` labelled sets are (default: the scenario's)")
    p.add_argument("--policy", default="tiergate", choices=list(POLICIES))
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: mean requests/s")
    mode.add_argument("--concurrency", type=int, help="closed loop: clients")
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--timeout", type=float, default=None, help="client limit per request (s)")
    p.add_argument("--results", help="also write every request's record to this JSON file")
    return p


async def main_async(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, args.shared_dir)
    timeout = args.timeout or scenario.load.timeout_s
    async with http_client(args.base_url) as client:
        prices = await pool_prices(client)
        policy = make_policy(args.policy, prices, scenario.seed)
        if args.rate is not None:
            reqs = plan(scenario, args.requests, args.rate)
            run = await run_open(client, reqs, args.rate, args.policy, policy, prices, timeout)
        else:
            reqs = plan(scenario, args.requests, None)
            run = await run_closed(client, reqs, args.concurrency, args.policy, policy, prices, timeout)
    print(json.dumps(summarize(run, scenario.floors()), indent=2))
    if args.results:
        Path(args.results).write_text(json.dumps([r.as_dict() for r in run.results], indent=1))
    bad = problems(run.results)
    for line in bad:
        print(line, file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
