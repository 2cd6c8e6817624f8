"""Heal benchmark: does a retrain after drift recover the quality the drift took away?

For each seed, a champion is trained and promoted on pre-drift rows (the real
`train_and_register` path, a small fast spec). For each scenario (no drift, covariate
shift, concept drift, a shift of the positive rate: `synthetic.generate(scenario=...)`)
and each retrain data mode (`retrain_data.mode`), a copy of the champion's home gets the
post-drift labelled rows appended as feedback would (``source="feedback"``), then the
real retrain path `train_and_register(spec, settings, recent=True)` runs and its gate
verdict decides promotion. A candidate the gate calls inconclusive goes through the
challenger stage, as in the running loop: the monitor's stage logic judges it against the
champion on further labelled post-drift rows (`--stage-rows`, in feedback batches of
`--stage-batch`) until the verdict is decisive or the rows run out. An oracle is trained (same spec) on the post-drift rows
only. The served model (the champion alias at the end), the drifted champion and the
oracle are scored (PR-AUC) on a fresh post-drift test set;
recovery = (served - champion) / (oracle - champion).

Usage: python benchmarks/bench_heal.py [--seeds 10] [--rows 30000] [--modes window,decay,all] [--resume]
Starts Ray: run it under `flock /tmp/ray.lock`. Writes benchmarks/results/bench_heal.json
(rewritten after every run, with "complete": false until the last one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch
from goals import goal
from sklearn.metrics import average_precision_score

from rayinfra import registry
from rayinfra.config import Settings, Spec, load_spec
from rayinfra.data import synthetic
from rayinfra.data.tables import Table
from rayinfra.monitor import challenger
from rayinfra.pipeline import train_and_register
from rayinfra.registry.gate import INCONCLUSIVE, GateSettings
from rayinfra.runtime import init_ray

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "heal"
RESULTS = ROOT / "benchmarks" / "results"
DAY_US = 86_400_000_000
# The small fast spec of the tests (tests/conftest.py small_spec): 1 worker, 2 epochs, one hidden layer.
SMALL = {"train.epochs": 2, "train.num_workers": 1, "train.batch_size": 512, "model.params": {"hidden": [32]}}
SCENARIOS = {"none": None, "covariate": "covariate", "concept": "concept", "prior": "prior"}  # -> generate()
NOTES = [
    "onset_to_healed_s: wall time from appending the first post-drift labelled rows (all of them in one "
    "feedback batch) to train_and_register(recent=True) returning with its candidate promoted. It is the "
    "retrain alone: no serving, no drift detection, no job submission, no wait for labels to trickle in "
    "(benchmarks/bench_loop.py times the whole served loop).",
    "The champion is trained once per seed and its home (table, MLflow registry) copied for each scenario "
    "and mode; the copies share the champion's artifact store, read-only for the champion's files.",
    "quality: PR-AUC (average precision, the gate's metric) on a fresh post-drift test set of test_rows rows "
    "that no model trained on. served: the champion alias after the retrain (the old champion unless the "
    "gate promoted). oracle: the same spec trained from scratch on the post-drift rows only.",
    "eligible: drift runs whose oracle beats the drifted champion by more than the gate's margin on the test "
    "set; heal-promoted and heal-recovery count those. heal-seconds: median over eligible runs that promoted.",
    "challenger stage: an inconclusive candidate is judged by rayinfra.monitor.challenger (the monitor's own "
    "pairing, the gate's statistics, a deadline) on stage_rows further labelled post-drift rows arriving in "
    "batches; promoted_by says whether the gate or the stage promoted, stage_rows how many labelled rows the "
    "stage needed. Time there is counted in labels, not seconds: it depends on how fast labels come back.",
    "false promotion: a no-drift run whose promoted candidate scores below champion - margin on the test set.",
]


def spec_for(mode: str) -> Spec:
    return load_spec(ROOT / "jobs/specs/fraud.yaml", {**SMALL, "retrain_data.mode": mode})


def pr_auc(model: registry.LoadedModel, spec: Spec, test: pa.Table) -> float:
    y = test.column(spec.contract.label).to_numpy()
    return float(average_precision_score(y, model.probabilities(test.select(spec.features.all))))


def train_champion(spec: Spec, seed: int, rows: int) -> tuple[Path, float]:
    home = WORK / f"seed{seed}" / "champion"
    settings = Settings(home=home, num_cpus=2)
    Table.for_spec(spec, settings).append(synthetic.generate(rows, seed=seed * 1000), source="bench")
    t0 = time.perf_counter()
    out = train_and_register(spec, settings)
    if not out.gate.promoted:  # the first model always is: anything else is a broken setup
        raise SystemExit(f"seed {seed}: the first model was not promoted: {out.gate.reason}")
    return home, time.perf_counter() - t0


def drifted(scenario: str, n: int, seed: int, start_id: int, start_us: int) -> pa.Table:
    kind = SCENARIOS[scenario]
    if kind is None:
        return synthetic.generate(n, seed=seed, start_id=start_id, start_time_us=start_us, days=7)
    return synthetic.generate(n, seed=seed, drift=1.0, scenario=kind, start_id=start_id, start_time_us=start_us,
                              days=7)  # fmt: skip


def train_oracle(spec: Spec, seed: int, scenario: str, post: pa.Table, test: pa.Table) -> tuple[float, float]:
    """(PR-AUC on the test set, train seconds) of a model trained on the post-drift rows only."""
    home = WORK / f"seed{seed}" / scenario / "oracle"
    settings = Settings(home=home, num_cpus=2)
    Table.for_spec(spec, settings).append(post, source="bench")
    t0 = time.perf_counter()
    out = train_and_register(spec, settings)
    seconds = time.perf_counter() - t0
    return pr_auc(registry.load(spec.model_name, out.model_version, settings), spec, test), seconds


def challenger_stage(spec: Spec, settings: Settings, live: pa.Table, batch: int) -> dict[str, Any]:
    """The challenger stage of an inconclusive candidate, on labelled live traffic.

    The monitor's own stage logic (``monitor.challenger``: pairs, the gate's statistics,
    a deadline) judges champion and challenger on ``live`` rows that arrive with labels
    ``batch`` at a time; the deadline is the last batch. A promotion moves the alias
    through ``registry.promote``, as the monitor does. Time is counted in labelled rows:
    wall time depends on how fast labels come back.
    """
    name = spec.model_name
    version = registry.alias_version(name, registry.CHALLENGER, settings)
    champion = registry.alias_version(name, registry.CHAMPION, settings)
    if version is None:
        return {"stage": None}
    features, y = live.select(spec.features.all), live.column(spec.contract.label).to_numpy()
    p_champion = registry.load(name, champion, settings).probabilities(features)
    p_challenger = registry.load(name, version, settings).probabilities(features)
    stage, rules = challenger.new_stage(version, champion, since=0.0), GateSettings.from_spec(spec)
    steps = -(-live.num_rows // batch)
    outcome = None
    for step in range(1, steps + 1):
        lo, hi = (step - 1) * batch, min(step * batch, live.num_rows)
        challenger.add_pairs(stage, [f"live-{i}" for i in range(lo, hi)], y[lo:hi].tolist(),
                             p_champion[lo:hi].tolist(), p_challenger[lo:hi].tolist())  # fmt: skip
        outcome = challenger.decide(stage, float(step), rules, deadline_s=steps - 1)  # the last batch is the deadline
        if outcome.action != "wait":
            break
    if outcome.action == "promote":
        registry.promote(spec, version, outcome.reason, settings)
    return {"stage": outcome.action, "stage_rows": len(stage["y"]), "stage_reason": outcome.reason}


def retrain(spec: Spec, champion_home: Path, home: Path, post: pa.Table, test: pa.Table, live: pa.Table | None,
            batch: int) -> dict[str, Any]:  # fmt: skip
    """Append the post-drift rows as feedback to a copy of the champion's home, retrain, score;
    an inconclusive candidate then goes through the challenger stage on ``live`` rows."""
    shutil.copytree(champion_home, home)
    settings = Settings(home=home, num_cpus=2, artifact_root=str(champion_home / "mlartifacts"))
    name = spec.model_name
    champion = registry.alias_version(name, registry.CHAMPION, settings)
    onset = time.perf_counter()
    Table.for_spec(spec, settings).append(post, source="feedback")
    out = train_and_register(spec, settings, recent=True)
    done = time.perf_counter()
    v = out.gate.verdict
    gate_promoted = registry.alias_version(name, registry.CHAMPION, settings) != champion
    stage = {"stage": None}
    if v.verdict == INCONCLUSIVE and live is not None:
        stage = challenger_stage(spec, settings, live, batch)
    served = registry.alias_version(name, registry.CHAMPION, settings)
    return {
        **stage,
        "promoted_by": ("gate" if gate_promoted else "challenger stage") if served != champion else None,
        "verdict": v.verdict,
        "gate_reason": v.reason,
        "gate_rows": v.rows,
        "gate_positives": v.positives,
        "gate_interval": list(v.interval) if v.interval else None,
        "window_rows": (out.outcome.data.window.rows if out.outcome.data.window is not None else None),
        "promoted": served != champion,
        "served_version": served,
        "onset_to_healed_s": round(done - onset, 1) if gate_promoted else None,
        "retrain_s": round(done - onset, 1),
        "champion_pr_auc": pr_auc(registry.load(name, champion, settings), spec, test),
        "served_pr_auc": pr_auc(registry.load(name, served, settings), spec, test),
    }


def record(
    seed: int,
    scenario: str,
    mode: str,
    r: dict[str, Any],
    post: pa.Table,
    oracle: float,
    oracle_s: float,
    champion_s: float,
) -> dict[str, Any]:
    gain = oracle - r["champion_pr_auc"]
    run = {"seed": seed, "scenario": scenario, "mode": mode, "oracle_pr_auc": oracle, "oracle_gain": gain,
           "recovery": (r["served_pr_auc"] - r["champion_pr_auc"]) / gain if gain != 0 else None,
           "champion_train_s": round(champion_s, 1), "oracle_train_s": round(oracle_s, 1),
           "post_positive_rate": float(np.mean(post.column("is_fraud").to_numpy())),
           "measured": datetime.now(UTC).isoformat(timespec="seconds"), **r}  # fmt: skip
    keys = ("seed", "scenario", "mode", "verdict", "stage", "promoted_by", "champion_pr_auc", "served_pr_auc", "oracle_pr_auc", "recovery",
            "retrain_s")  # fmt: skip
    print(json.dumps({k: run[k] for k in keys}), flush=True)
    return run


def goals(runs: list[dict[str, Any]], margin: float, suffix: str = "", scope: str = "") -> list[dict[str, Any]]:
    drift = [r for r in runs if r["scenario"] != "none"]
    eligible = [r for r in drift if r["oracle_pr_auc"] - r["champion_pr_auc"] > margin]
    calm = [r for r in runs if r["scenario"] == "none"]
    healed = [r["onset_to_healed_s"] for r in eligible if r["promoted_by"] == "gate"]
    share = sum(r["promoted"] for r in eligible) / len(eligible) if eligible else None
    recovery = statistics.median(r["recovery"] for r in eligible) if eligible else None
    bad = sum(r["promoted"] and r["served_pr_auc"] < r["champion_pr_auc"] - margin for r in calm)
    return [
        goal(f"heal-promoted{suffix}", f"share of {len(eligible)} eligible drift runs (oracle beats the drifted "
             f"champion by > margin {margin:g}) that end with a promoted model serving{scope}", share, ">= 0.9"),
        goal(f"heal-recovery{suffix}", f"median recovery (served - champion) / (oracle - champion) over those "
             f"{len(eligible)} runs{scope}", recovery, ">= 0.8"),
        goal(f"heal-false-promotion{suffix}", f"share of {len(calm)} no-drift runs promoting a candidate worse "
             f"than the champion by > margin{scope}", bad / len(calm) if calm else None, "<= 0.05"),
        goal(f"heal-seconds{suffix}", f"median seconds from drift onset to a promoted model over {len(healed)} "
             f"eligible runs the gate promoted (retrain only, no serving; a challenger stage's time is counted "
             f"in labelled rows, see stage_rows){scope}",
             statistics.median(healed) if healed else None, "<= 60"),
    ]  # fmt: skip


def choose_mode(by_mode: dict[str, list[dict[str, Any]]]) -> str:
    """The mode with the best median recovery, then the fewest false promotions."""

    def score(mode: str) -> tuple[float, float]:
        g = {x["id"].split("[")[0]: x["value"] for x in by_mode[mode]}
        return (g["heal-recovery"] if g["heal-recovery"] is not None else -1e9, -(g["heal-false-promotion"] or 0))

    return max(by_mode, key=score)


def summarise(args: argparse.Namespace, runs: list[dict[str, Any]], modes: list[str], complete: bool) -> dict:
    margin = GateSettings.from_spec(spec_for(modes[0])).margin
    default = [r for r in runs if r["mode"] == modes[0]]
    out_goals = goals(default, margin, scope=f" (mode {modes[0]}, all seeds)")
    compared = sorted({r["seed"] for r in runs if r["mode"] != modes[0]})
    by_mode = {}
    if compared:
        for m in modes:
            same = [r for r in runs if r["mode"] == m and r["seed"] in compared]
            by_mode[m] = goals(same, margin, suffix=f"[{m}]", scope=f" (mode {m}, seeds {compared})")
            out_goals += by_mode[m]
    choice = None
    if by_mode:
        best = choose_mode(by_mode)
        choice = {"mode": best, "seeds": compared,
                  "basis": "best median recovery over the eligible drift runs of the compared seeds, then the "
                           "fewest false promotions; see the goals with a [mode] suffix"}  # fmt: skip
    return {
        "benchmark": "bench_heal",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, torch {torch.__version__}",
        "complete": complete,
        "seeds_run": sorted({r["seed"] for r in runs}),
        "config": {
            "seeds": args.seeds,
            "rows": args.rows,
            "drift_rows": args.drift_rows,
            "test_rows": args.test_rows,
            "stage_rows": args.stage_rows,
            "stage_batch": args.stage_batch,
            "scenarios": args.scenarios.split(","),
            "modes": modes,
            "mode_seeds": args.mode_seeds,
            "spec": {"file": "jobs/specs/fraud.yaml", "overrides": SMALL},
            "gate_margin": margin,
        },  # fmt: skip
        "notes": NOTES,
        "goals": out_goals,
        "mode_choice": choice,
        "runs": runs,
    }


def resumed(args: argparse.Namespace, modes: list[str], scenarios: list[str]) -> list[dict[str, Any]]:
    """The runs of complete seeds in an earlier result of the same config (a seed cut short runs again)."""
    if not args.out.exists():
        return []
    old = json.loads(args.out.read_text())
    same = {"rows": args.rows, "drift_rows": args.drift_rows, "test_rows": args.test_rows,
            "stage_rows": args.stage_rows, "stage_batch": args.stage_batch, "overrides": SMALL}  # fmt: skip
    have = {
        **{k: old["config"].get(k) for k in same if k != "overrides"},
        "overrides": old["config"]["spec"]["overrides"],
    }
    if have != same:
        raise SystemExit(f"--resume: {args.out} was run with another config: {have} (now {same})")
    runs = old["runs"]
    complete = {s for s in {r["seed"] for r in runs}
                if {r["scenario"] for r in runs if r["seed"] == s and r["mode"] == modes[0]} >= set(scenarios)}  # fmt: skip
    print(f"resuming: seeds {sorted(complete)} from {old['date']}", flush=True)
    return [{**r, "measured": r.get("measured", old["date"])} for r in runs if r["seed"] in complete]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--rows", type=int, default=30_000, help="pre-drift rows the champion trains on")
    p.add_argument("--drift-rows", type=int, default=20_000, help="post-drift labelled rows appended as feedback")
    p.add_argument("--test-rows", type=int, default=30_000, help="fresh post-drift test rows")
    p.add_argument(
        "--stage-rows",
        type=int,
        default=20_000,
        help="labelled live rows an inconclusive candidate's challenger stage may see (0: no stage)",
    )
    p.add_argument("--stage-batch", type=int, default=2_000, help="labelled rows per feedback batch in the stage")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--modes", default="window", help="retrain_data modes; the first one is the default's candidate")
    p.add_argument("--mode-seeds", type=int, default=None, help="run the other modes on the first N seeds only")
    p.add_argument("--budget-s", type=float, default=None, help="start no new run after this many seconds")
    p.add_argument("--out", type=Path, default=RESULTS / "bench_heal.json")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in --out (same config) and run only the seeds it lacks",
    )
    args = p.parse_args()
    modes = args.modes.split(",")
    scenarios = args.scenarios.split(",")
    unknown = [s for s in scenarios if s not in SCENARIOS] + [m for m in modes if m not in ("window", "decay", "all")]
    if unknown:
        raise SystemExit(f"unknown scenario or mode: {', '.join(unknown)}")
    mode_seeds = args.seeds if args.mode_seeds is None else args.mode_seeds
    shutil.rmtree(WORK, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    runs = resumed(args, modes, scenarios) if args.resume else []
    done = {r["seed"] for r in runs}
    init_ray(Settings(num_cpus=2, object_store_mb=1024))
    stop = time.time() + args.budget_s if args.budget_s is not None else None

    def over() -> bool:
        return stop is not None and time.time() > stop

    try:
        for seed in range(args.seeds):
            if seed in done:
                continue
            if over():
                break
            champion_home, champion_s = train_champion(spec_for(modes[0]), seed, args.rows)
            cases = {}  # scenario -> (post rows, test rows, oracle PR-AUC, oracle seconds)
            # The default mode on every scenario first, then the other modes: a run cut short by
            # its time budget still has whole seeds of the default.
            for mode in modes if seed < mode_seeds else modes[:1]:
                for k, scenario in enumerate(scenarios):
                    if over():
                        break
                    if scenario not in cases:
                        start = synthetic.START_TIME_US + 31 * DAY_US
                        post = drifted(scenario, args.drift_rows, seed * 1000 + 10 + k, args.rows, start)
                        test = drifted(scenario, args.test_rows, seed * 1000 + 20 + k, args.rows + args.drift_rows,
                                       start + 7 * DAY_US)  # fmt: skip
                        live = drifted(scenario, args.stage_rows, seed * 1000 + 30 + k, args.rows + args.drift_rows
                                       + args.test_rows, start + 14 * DAY_US) if args.stage_rows else None  # fmt: skip
                        oracle = train_oracle(spec_for(modes[0]), seed, scenario, post, test)
                        cases[scenario] = (post, test, live, *oracle)
                    post, test, live, oracle, oracle_s = cases[scenario]
                    home = WORK / f"seed{seed}" / scenario / mode
                    r = retrain(spec_for(mode), champion_home, home, post, test, live, args.stage_batch)
                    shutil.rmtree(home, ignore_errors=True)  # keep the disk small
                    runs.append(record(seed, scenario, mode, r, post, oracle, oracle_s, champion_s))
                    args.out.write_text(json.dumps(summarise(args, runs, modes, False), indent=2) + "\n")
            if over():
                print(f"time budget spent during seed {seed}", flush=True)
    finally:
        ray.shutdown()
    result = summarise(args, runs, modes, True)
    result["stopped_by_budget"] = over()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"goals": result["goals"], "mode_choice": result["mode_choice"]}, indent=2))


if __name__ == "__main__":
    main()
