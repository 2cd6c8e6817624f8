"""Compressed serving: int8 dynamic quantization and ONNX Runtime against the float model.

The compute-bound model of bench_serve (an MLP with 3x2048 hidden units) is trained for one
epoch on demo rows with a plain torch loop, saved and loaded as a real bundle, then scored
the way a replica scores (``ModelBundle.probabilities``: preprocess, forward, sigmoid) on
batches of serve.max_batch_size records, one thread, as a replica with one CPU runs it.
Float, int8 and ONNX runs alternate over several rounds; the ratio is the median over
rounds of compressed / float throughput. Quality: PR-AUC on fresh test rows, float minus
compressed (the check a version passes before replicas serve it compressed).

Usage: python benchmarks/bench_compress.py [--rounds 5] [--seconds 4]
Writes benchmarks/results/bench_compress.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from goals import goal
from sklearn.metrics import average_precision_score

from rayinfra.config import load_spec
from rayinfra.data import synthetic
from rayinfra.data.features import Preprocessor
from rayinfra.registry import compress
from rayinfra.registry.bundle import load_bundle, save_bundle
from rayinfra.train.models import build_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HEAVY = {"hidden": [2048, 2048, 2048], "embedding_dim": 16, "dropout": 0.0}  # bench_serve's compute-bound model


def train_heavy(spec, rows: int) -> tuple[torch.nn.Module, Preprocessor]:
    """One epoch of plain torch training: a model whose PR-AUC means something."""
    data = synthetic.generate(rows, seed=1)
    pre = Preprocessor.for_spec(spec).fit(data)
    x = pre.transform(data)
    y = torch.from_numpy(data.column(spec.contract.label).to_numpy().astype(np.float32))
    model = build_model("mlp", len(pre.numeric), pre.cardinalities, HEAVY)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pre.pos_weight))
    x_num, x_cat = torch.from_numpy(x["x_num"]), torch.from_numpy(x["x_cat"])
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(0))
    model.train()
    for i in range(0, rows, 512):
        idx = order[i : i + 512]
        opt.zero_grad()
        loss_fn(model(x_num[idx], x_cat[idx]), y[idx]).backward()
        opt.step()
    return model.eval(), pre


def rows_per_s(bundle, batches: list, seconds: float) -> float:
    for b in batches[:3]:
        bundle.probabilities(b)  # warm up (ONNX Runtime plans on the first calls)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for b in batches:
            bundle.probabilities(b)
            done += b.num_rows
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--train-rows", type=int, default=20_000)
    p.add_argument("--test-rows", type=int, default=30_000)
    args = p.parse_args()
    torch.set_num_threads(1)  # a replica's share of the cores (serve.replica_cpus)
    spec = load_spec(ROOT / "jobs/specs/fraud.yaml")
    t0 = time.perf_counter()
    model, pre = train_heavy(spec, args.train_rows)
    train_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        digest = save_bundle(tmp, model, pre, "mlp", HEAVY, 0.5)
        bundle = load_bundle(tmp, digest, "bench")  # the real format and loading path
    kinds = ["int8", "onnx"]
    bundles = {"float": bundle, **{k: compress.compress(bundle, k) for k in kinds}}
    test = synthetic.generate(args.test_rows, seed=7, drift=0.0)
    features, y = test.select(spec.features.all), test.column(spec.contract.label).to_numpy()
    quality = {k: float(average_precision_score(y, b.probabilities(features))) for k, b in bundles.items()}
    size = spec.serve.max_batch_size
    batches = [features.slice(i, size) for i in range(0, 64 * size, size)]
    speed: dict[str, list[float]] = {k: [] for k in bundles}
    for r in range(args.rounds):  # alternate, so drift in the machine's speed hits every kind alike
        for k in list(bundles) if r % 2 == 0 else list(reversed(bundles)):
            speed[k].append(rows_per_s(bundles[k], batches, args.seconds))
    ratio = {k: statistics.median(s / f for s, f in zip(speed[k], speed["float"])) for k in kinds}
    loss = {k: quality["float"] - quality[k] for k in kinds}
    eligible = [k for k in kinds if loss[k] <= 0.005]
    best = max(eligible, key=lambda k: ratio[k]) if eligible else None
    result = {
        "benchmark": "bench_compress",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, torch {torch.__version__}",
        "config": {
            "model": HEAVY,
            "batch_records": size,
            "threads": 1,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "train_rows": args.train_rows,
            "test_rows": args.test_rows,
        },  # fmt: skip
        "train_s": round(train_s, 1),
        "rows_per_s": {k: [round(x) for x in v] for k, v in speed.items()},
        "ratio_vs_float": {k: round(v, 3) for k, v in ratio.items()},
        "pr_auc": {k: round(v, 5) for k, v in quality.items()},
        "pr_auc_loss": {k: round(v, 5) for k, v in loss.items()},
        "best": best,
        "goals": [
            goal(
                "P5-compressed",
                f"compressed / float throughput, compute-bound model, best kind with PR-AUC "
                f"loss <= 0.005 ({best or 'none'})",
                ratio[best] if best else None,
                ">= 1.5",
            )
        ],  # fmt: skip
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_compress.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("rows_per_s", "ratio_vs_float", "pr_auc_loss", "goals")}, indent=2))


if __name__ == "__main__":
    main()
