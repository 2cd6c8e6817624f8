"""Does `make demo` heal? `rayinfra demo --seed N` for N seeds, each in a fresh home, as a user runs it.

Each run is the CLI in its own process (its own Ray), with RAYINFRA_HOME in a scratch
folder; the demo's machine-readable summary (`reports/demo.json`) says whether the
retrained version ended up serving, the gate's verdict and, when it did not heal, why.

Goal, in benchmarks/results/bench_demo.json:
- `demo-heals` >= 0.9: the share of seeds whose demo ends with the retrained version serving.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from goals import goal

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / ".work" / "demo"


def run_seed(seed: int, timeout_s: float) -> dict[str, Any]:
    home = WORK / f"seed{seed}"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "RAYINFRA_HOME": str(home)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rayinfra", "demo", "--seed", str(seed)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s, check=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    (WORK / f"seed{seed}.log").write_text(proc.stdout + proc.stderr)
    summary_file = home / "reports" / "demo.json"
    if proc.returncode != 0 or not summary_file.exists():
        return {"seed": seed, "healed": False, "seconds": round(seconds, 1), "exit_code": proc.returncode,
                "why_not": f"the demo exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}  # fmt: skip
    s = json.loads(summary_file.read_text())
    gate = s.get("gate") or {}
    shutil.rmtree(home, ignore_errors=True)  # keep the disk small; the log stays
    return {"seed": seed, "healed": s["healed"], "seconds": round(seconds, 1), "exit_code": 0,
            "verdict": gate.get("verdict"), "gate": gate.get("reason"),
            "challenger": (s.get("challenger") or {}).get("outcome"), "why_not": s.get("why_not_healed"),
            "onset_to_serving_s": s.get("onset_to_serving_s")}  # fmt: skip


def summarise(runs: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    healed = sum(r["healed"] for r in runs)
    share = healed / len(runs) if runs else None
    return {
        "benchmark": "bench_demo",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "complete": len(runs) == seeds,
        "command": "rayinfra demo --seed N (fresh RAYINFRA_HOME per seed)",
        "goals": [
            goal(
                "demo-heals",
                f"share of `rayinfra demo --seed N` runs ending with the retrained version "
                f"serving ({healed} of {len(runs)} seeds)",
                share,
                ">= 0.9",
            )
        ],  # fmt: skip
        "runs": runs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=1200, help="one demo's limit")
    p.add_argument("--budget-s", type=float, default=None, help="start no new seed after this many seconds")
    p.add_argument("--out", type=Path, default=RESULTS / "bench_demo.json")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    stop = time.time() + args.budget_s if args.budget_s else None
    runs: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if stop is not None and time.time() > stop:
            print(f"time budget spent before seed {seed}", flush=True)
            break
        runs.append(run_seed(seed, args.timeout_s))
        print(json.dumps(runs[-1]), flush=True)
        args.out.write_text(json.dumps(summarise(runs, args.seeds), indent=2) + "\n")
    print(json.dumps(summarise(runs, args.seeds)["goals"], indent=2))


if __name__ == "__main__":
    main()
