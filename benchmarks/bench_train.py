"""Training benchmark, every side measured in the same run on the same prepared data.

(a) Steady-state epoch throughput of a 1-worker TorchTrainer against a plain PyTorch
    loop over the same tensors, same model, batch size and torch threads.
    Goal (P1-epoch): ratio >= 0.95. The fixed cost of a run (fit wall time minus the
    epochs), with the profile of what it spends: when each process Train starts was
    asked for, ran, and was ready (Ray's task events). Goal (P2-fixed-s): <= 8 s.
(b) Tune overhead: wall time of a search of 8 trials against the ideal schedule (the
    sum of the trials' own run times divided by the concurrency). Goal (P8-tune): <= 1.14.

Usage: python benchmarks/bench_train.py [--rows 2000000] [--epochs 3] [--trials 8]
Writes benchmarks/results/bench_train.json.
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

import torch
from goals import goal

from rayinfra.config import Settings, load_spec
from rayinfra.data import synthetic
from rayinfra.data.loader import torch_batches
from rayinfra.data.tables import Table
from rayinfra.runtime import init_ray
from rayinfra.train.models import build_model
from rayinfra.train.trainer import build_trainer, prepare_data, train_params

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "train"
RESULTS = ROOT / "benchmarks" / "results"


def plain_loop(data, spec, params: dict, epochs: int) -> list[float]:
    """The same model over the same tensors held in memory and shuffled each epoch, in one process."""
    pre = data.preprocessor
    parts = list(
        torch_batches(
            data.train, int(params["batch_size"]), {"x_num": torch.float32, "x_cat": torch.int64, "y": torch.float32}
        )
    )
    tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    n, bs = len(tensors["y"]), int(params["batch_size"])
    model_params = {k.removeprefix("model."): v for k, v in params.items() if k.startswith("model.")}
    model = build_model(spec.model.name, len(pre.numeric), pre.cardinalities, model_params)
    opt = torch.optim.AdamW(model.parameters(), lr=params["learning_rate"], weight_decay=params["weight_decay"])
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pre.pos_weight))
    times = []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n)  # shuffled each epoch, as the Train workers do
        for i in range(0, n, bs):
            b = {k: v[order[i : i + bs]] for k, v in tensors.items()}
            loss = loss_fn(model(b["x_num"], b["x_cat"]), b["y"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def goals(r: dict) -> list[dict]:
    t = r["tune"]
    return [
        goal("P1-epoch", "steady-state epoch throughput, TorchTrainer / plain torch loop",
             r["throughput"]["ratio"], ">= 0.95"),
        goal("P2-fixed-s", "fixed cost of one training run beyond its epochs (s)", r["overhead"]["overhead_s"], "<= 8"),
        goal("P8-tune", f"Tune wall time / ideal schedule, {t['trials']} trials", t["wall_s"] / t["ideal_s"], "<= 1.14"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tune-rows", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    settings = Settings(home=WORK / "home")
    spec = load_spec(ROOT / "jobs" / "specs" / "fraud.yaml", {"train.num_workers": 1, "train.epochs": args.epochs})
    init_ray(settings)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    table = Table.for_spec(spec, settings)
    table.append(synthetic.generate(args.rows, seed=0))
    t0 = time.perf_counter()
    data = prepare_data(spec, settings)
    data.train.count()  # materialize before timing either side
    prepare_s = time.perf_counter() - t0
    params = train_params(spec)

    # Ray gives a worker with < 2 CPUs one torch thread; the plain loop gets the same.
    threads = 1
    torch.set_num_threads(threads)
    plain = plain_loop(data, spec, params, args.epochs)
    rows = data.preprocessor.rows

    t0 = time.perf_counter()
    result = build_trainer(spec, settings, data, params, "bench-train").fit()
    fit_s = time.perf_counter() - t0
    history = result.return_value["history"]
    profile = start_profile(t0 + time.time() - time.perf_counter(), history)
    ray_epochs = [h["train_seconds"] for h in history]
    epoch_total = sum(h["train_seconds"] for h in history)
    steady_plain = statistics.median(plain[1:] or plain)
    steady_ray = statistics.median(ray_epochs[1:] or ray_epochs)
    ratio = steady_plain / steady_ray
    # Everything that is not training an epoch: start-up, validation, checkpoints, teardown.
    overhead_s = fit_s - epoch_total
    print(f"(a) epoch (train split {rows:,} rows): plain {steady_plain:.2f}s ({rows / steady_plain:,.0f} rows/s), "
          f"TorchTrainer {steady_ray:.2f}s ({rows / steady_ray:,.0f} rows/s): ratio {ratio:.2f} (goal >= 0.95)")  # fmt: skip
    print(f"    run overhead (fit {fit_s:.1f}s minus {epoch_total:.1f}s of epochs): {overhead_s:.1f}s (goal <= 8s)")

    tune_result = tune_overhead(spec, settings, args)
    print(f"(b) tune: {tune_result['trials']} trials, wall {tune_result['wall_s']:.1f}s, ideal "
          f"{tune_result['ideal_s']:.1f}s: overhead {tune_result['overhead'] * 100:.0f}% (goal <= 14%)")  # fmt: skip

    out = {
        "benchmark": "bench_train",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, torch {torch.__version__}",
        "rows": args.rows,
        "train_rows": rows,
        "epochs": args.epochs,
        "batch_size": params["batch_size"],
        "torch_threads": threads,
        "prepare_s": round(prepare_s, 2),
        "throughput": {
            "plain_epoch_s": round(steady_plain, 3),
            "trainer_epoch_s": round(steady_ray, 3),
            "ratio": round(ratio, 3),
            "goal": ">= 0.95",
            "plain_epochs_s": [round(t, 3) for t in plain],
            "trainer_epochs_s": [round(t, 3) for t in ray_epochs],
        },
        "overhead": {
            "fit_s": round(fit_s, 2),
            "epochs_s": round(epoch_total, 2),
            "overhead_s": round(overhead_s, 2),
            "goal_s": 8,
            "profile": profile,
        },
        "tune": tune_result,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out["goals"] = goals(out)
    (RESULTS / "bench_train.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'bench_train.json'}")


def process_starts(since: float) -> list[dict]:
    """Each process (actor) started since ``since`` (epoch seconds): when Ray was asked for it,
    when its constructor ran, when it was ready, in seconds from ``since`` (Ray's task events)."""
    from ray.util.state import list_tasks

    time.sleep(2)  # task events reach the state API within a second or so
    tasks = list_tasks(filters=[("type", "=", "ACTOR_CREATION_TASK")], detail=True, limit=10_000,
                       raise_on_missing_output=False)  # fmt: skip
    starts = []
    for task in sorted(tasks, key=lambda t: t.creation_time_ms or 0):
        if (task.creation_time_ms or 0) / 1e3 < since:
            continue
        events = {e["state"]: e["created_ms"] / 1e3 - since for e in task.events or []}
        marks = [("asked", "PENDING_NODE_ASSIGNMENT"), ("running", "RUNNING"), ("ready", "FINISHED")]
        starts.append({"actor": task.name.removesuffix(".__init__"),
                       **{k: round(events[v], 2) for k, v in marks if v in events}})  # fmt: skip
    return starts


def start_profile(since: float, history: list[dict]) -> dict:
    """A run's processes from ``fit()`` (at ``since``), its first batch and its last report, and
    each epoch's training, validation, and checkpoint-and-report seconds."""
    epochs = {k: [round(h.get(f"{k}_seconds", float("nan")), 2) for h in history] for k in ("train", "val", "report")}
    return {"processes": process_starts(since), "first_batch_s": round(history[0]["loop_started_at"] - since, 2),
            "last_report_s": round(history[-1]["measured_at"] - since, 2), "epochs_s": epochs}  # fmt: skip


def search_profile(since: float, wall: float, ideal: float, trials: int) -> dict:
    """Where a search's time outside its trials' runs goes: the processes it started, by kind."""
    kinds: dict[str, list[float]] = {}
    for p in process_starts(since):
        if "ready" in p and "asked" in p:
            kinds.setdefault(p["actor"], []).append(p["ready"] - p["asked"])
    per_kind = {k: {"started": len(v), "median_start_s": round(statistics.median(v), 2)} for k, v in kinds.items()}
    return {"processes": per_kind, "outside_runs_s": round(wall - ideal, 2),
            "outside_runs_per_trial_s": round((wall - ideal) / max(trials, 1), 2)}  # fmt: skip


def tune_overhead(spec, settings: Settings, args) -> dict:
    """A search of identical trials (no early stopping), against the ideal schedule."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from rayinfra.runtime import TRIAL_CPU, ResourceLayout

    tune_settings = Settings(home=WORK / "tune-home")
    Table.for_spec(spec, tune_settings).append(synthetic.generate(args.tune_rows, seed=1))
    data = prepare_data(spec, tune_settings)
    params = {**train_params(spec), "epochs": 2}

    def trial(config):
        t0 = time.perf_counter()
        build_trainer(
            spec, tune_settings, data, params, f"bench-tune-{config['i']}", callbacks=[TuneReportCallback()]
        ).fit()
        tune.report({"run_s": time.perf_counter() - t0, "done": 1})

    concurrency = ResourceLayout.current().tune_concurrency(spec.train.num_workers)
    started_at, t0 = time.time(), time.perf_counter()
    grid = tune.Tuner(
        tune.with_resources(trial, {"cpu": TRIAL_CPU}),
        param_space={"i": tune.grid_search(list(range(args.trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name="bench-tune", storage_path=tune_settings.storage_path, verbose=0),
    ).fit()
    wall = time.perf_counter() - t0
    runs = [r.metrics["run_s"] for r in grid if r.metrics and "run_s" in r.metrics]
    ideal = sum(runs) / concurrency
    return {"trials": len(runs), "concurrency": concurrency, "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
            "overhead": round(wall / ideal - 1, 3), "goal": "<= 0.14",
            "profile": search_profile(started_at, wall, ideal, len(runs))}  # fmt: skip


if __name__ == "__main__":
    main()
