"""Measured CPU time per token of each pool model, and the prices that follow from it.

    .venv/bin/python loadtests/bench_model_speed.py --pool deploy/pools/cpu-default.yaml \\
        --usd-per-cpu-hour 0.05 --rounds 6 --json deploy/eval/model-speed.json

Each model runs in this process through its engine (``serve.engines``), one at a time, so the
figures are per model, undisturbed by the others. A round measures, for every model in an order
that rotates each round, prefill (a ~300-token prompt, one output token) and decode (64 greedy
tokens after a short prompt, prefill subtracted). CPU time is the process's CPU time over the call
(the engine's thread does the work), so on a machine that is busy elsewhere it is still the model's
own cost. A model's price per 1M tokens is its CPU-seconds per 1M tokens times ``usd-per-cpu-hour``
/ 3600: the price of the hardware the tokens occupy, with no margin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.config import load_pool  # noqa: E402
from serve.engines import GenerationRequest, Message, SamplingParams, build_engine  # noqa: E402

PREFILL_TEXT = ("The quarterly report covers revenue, costs, hiring, the new data centre, customer churn and the "
                "roadmap for the next two years. ") * 12
DECODE_PROMPT = "Write a long story about a lighthouse keeper and a storm."


async def _one(engine, text: str, max_tokens: int) -> tuple[float, float, int, int]:
    req = GenerationRequest(request_id="bench", messages=(Message("user", text),),
                            sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0))
    c0, w0 = time.process_time(), time.perf_counter()
    prompt = out = 0
    async for chunk in engine.stream(req):
        prompt, out = chunk.prompt_tokens, chunk.completion_tokens
    return time.process_time() - c0, time.perf_counter() - w0, prompt, out


async def measure(pool_path: str, rounds: int) -> dict[str, dict[str, float]]:
    pool = load_pool(pool_path)
    engines = {m.name: build_engine(m) for m in pool.models}
    for e in engines.values():
        await e.start()
    samples: dict[str, dict[str, list[float]]] = {n: {"prefill": [], "decode": []} for n in engines}
    names = list(engines)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            e = engines[name]
            cpu_p, _, ptoks, _ = await _one(e, PREFILL_TEXT, 1)
            samples[name]["prefill"].append(cpu_p / ptoks)
            cpu_d, _, ptoks_d, out = await _one(e, DECODE_PROMPT, 64)
            cpu_pd, _, _, _ = await _one(e, DECODE_PROMPT, 1)
            samples[name]["decode"].append(max(cpu_d - cpu_pd, 1e-9) / max(out - 1, 1))
    for e in engines.values():
        await e.stop()
    return {n: {k: statistics.median(v) for k, v in s.items()} for n, s in samples.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default=str(ROOT / "deploy/pools/cpu-default.yaml"))
    ap.add_argument("--usd-per-cpu-hour", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    res = asyncio.run(measure(args.pool, args.rounds))
    rows = {}
    print(f"{'model':32} {'prefill tok/s':>14} {'decode tok/s':>13} {'$ in/Mtok':>10} {'$ out/Mtok':>11}")
    for name, s in res.items():
        usd = args.usd_per_cpu_hour / 3600 * 1e6
        rows[name] = {"prefill_cpu_s_per_token": s["prefill"], "decode_cpu_s_per_token": s["decode"],
                      "prefill_tok_per_cpu_s": 1 / s["prefill"], "decode_tok_per_cpu_s": 1 / s["decode"],
                      "input_usd_per_mtok": s["prefill"] * usd, "output_usd_per_mtok": s["decode"] * usd}
        r = rows[name]
        print(f"{name:32} {r['prefill_tok_per_cpu_s']:14.1f} {r['decode_tok_per_cpu_s']:13.1f} "
              f"{r['input_usd_per_mtok']:10.4f} {r['output_usd_per_mtok']:11.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"usd_per_cpu_hour": args.usd_per_cpu_hour, "rounds": args.rounds,
                                               "models": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
