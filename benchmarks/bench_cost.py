"""What cost accounting takes from serving, both sides measured in the same run.

A model replica meters its serving with `ServingMeter`: per batch, `answered` (a lock and an
add); every `FLUSH_S` seconds, one ledger line (and the cost metrics). An on/off comparison of
requests/s cannot see 1% on this 2-core machine (two runs of the same variant differ by up to
5%), so the goal is bounded from its parts instead:

    share <= (answered's cost x batches per second + one flush's cost / FLUSH_S) / one core

at the throughput the default serving path really reaches (bench_serve's tiny model, one
replica). Batches per second is at most requests per second, and serving at that rate keeps
more than one core busy (ingress and replica), so this bound is above the real share.

Usage: python benchmarks/bench_cost.py [--seconds 15]
Writes benchmarks/results/bench_cost.json.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from goals import goal

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve

from rayinfra.config import Settings
from rayinfra.cost.serving import FLUSH_S, ServingMeter

RESULTS = Path(__file__).resolve().parent / "results"
VARIANT = "tiny/serve"  # the default path: what users get


def answered_s(calls: int = 1_000_000) -> float:
    """Seconds per `ServingMeter.answered` call (one per batch), the interval never due."""
    with tempfile.TemporaryDirectory() as home:
        meter = ServingMeter("bench", "bench:champion", 0.25, Settings(home=Path(home)), flush_s=1e9)
        t0 = time.perf_counter()
        for _ in range(calls):
            meter.answered(1, 32)
        return (time.perf_counter() - t0) / calls


def flush_s(flushes: int = 2_000) -> float:
    """Seconds per interval written to the ledger (`tick` when due)."""
    with tempfile.TemporaryDirectory() as home:
        meter = ServingMeter("bench", "bench:champion", 0.25, Settings(home=Path(home)))
        meter.answered(1, 32)
        t0 = time.perf_counter()
        for _ in range(flushes):
            meter.tick(1, force=True)
        return (time.perf_counter() - t0) / flushes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()
    per_call, per_flush = answered_s(), flush_s()
    print(f"answered: {per_call * 1e9:.0f} ns a batch; a flush to the ledger: {per_flush * 1e3:.3f} ms")
    bench_serve.WORK.mkdir(parents=True, exist_ok=True)
    bench_serve.prepare()
    served = bench_serve.measure(VARIANT, a.seconds, a.concurrency)
    share = per_call * served["rps"] + per_flush / FLUSH_S
    out = {
        "benchmark": "bench_cost",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "meter": {
            "answered_ns": round(per_call * 1e9, 1),
            "flush_ms": round(per_flush * 1e3, 4),
            "flush_every_s": FLUSH_S,
        },
        "serving": {"variant": VARIANT, **served},
        "overhead_share_bound": round(share, 6),
    }
    out["goals"] = [goal("C1-overhead", "serving throughput cost accounting takes (a bound: meter time per "
                         "second at the measured req/s, over one core)", share, "<= 0.01")]  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_cost.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"rps": served["rps"], "overhead_share_bound": out["overhead_share_bound"]}, indent=2))


if __name__ == "__main__":
    main()
