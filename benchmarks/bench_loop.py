"""Loop benchmark: time from drift onset to the new version answering requests, by stage.

The demo's loop (rayinfra.loop_demo.run_loop, one training run instead of a search) on
the demo dataset (100k rows): normal traffic, then drifted traffic with its labels;
the clock starts with the first drifted request. Stages, from the audit log:
detect (onset → job submitted), job start (→ the job's first line), train
(→ the gate's verdict), gate (→ the job done, promotion included), reload (→ the
first answer from the new version). Goal (P7-loop-s): <= 30 s on this machine.

Usage: python benchmarks/bench_loop.py
Writes benchmarks/results/bench_loop.json.
"""

import json
import os
import platform
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path

from goals import goal
from rich.console import Console

from rayinfra import audit
from rayinfra.config import Settings, load_spec
from rayinfra.data import synthetic
from rayinfra.data.tables import Table
from rayinfra.loop_demo import DEMO_DRIFTED_ROWS, run_loop

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "loop"
RESULTS = ROOT / "benchmarks" / "results"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _at(settings: Settings, action: str) -> float:
    entries = [e for e in audit.entries(settings) if e["action"] == action]
    return datetime.fromisoformat(entries[-1]["time"]).timestamp()


def goals(r: dict) -> list[dict]:
    return [goal("P7-loop-s", f"drift onset → the new version answering (s), {r['drifted_rows']:,} drifted rows",
                 r["onset_to_new_version_s"], "<= 30")]  # fmt: skip


def main() -> None:
    from ray import serve

    shutil.rmtree(WORK, ignore_errors=True)
    settings = Settings(home=WORK, serve_port=_port())
    spec = load_spec(ROOT / "jobs/specs/fraud.yaml")
    Table.for_spec(spec, settings).append(synthetic.generate(100_000, seed=0), source="bench")
    try:
        result = run_loop(spec, settings, Console(), drifted_rows=DEMO_DRIFTED_ROWS, tune=False)
    finally:
        serve.shutdown()
    if result.new_version_at is None:  # the gate kept the champion: no new version to time
        raise SystemExit(f"the retrained model did not pass the gate (job {result.retrain}); see {WORK}/audit.jsonl")
    onset = result.drift_started
    marks = {
        "detect": _at(settings, "retrain_submitted"),
        "job start": _at(settings, "retrain_start"),
        "train": _at(settings, "gate"),
        "gate": _at(settings, "retrain_done"),
        "reload": result.new_version_at,
    }
    stages, last = {}, onset
    for name, t in marks.items():
        stages[name] = round(t - last, 1)
        last = t
    total = round(result.new_version_at - onset, 1)
    out = {
        "benchmark": "bench_loop",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "rows": 100_000,
        "drifted_rows": DEMO_DRIFTED_ROWS,
        "onset_to_new_version_s": total,
        "goal_s": 30,
        "stages_s": stages,
        "champion": [result.champion_before, result.champion_after],
        "job": result.retrain,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out["goals"] = goals(out)
    (RESULTS / "bench_loop.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"onset_to_new_version_s": total, "stages_s": stages}, indent=2))


if __name__ == "__main__":
    main()
