"""What a model has cost, version by version, and whether its budget covers more training."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from rayinfra.config import Settings, Spec
from rayinfra.cost.ledger import TRAINING, entries

DAY_S = 86_400.0


def training_spent(spec: Spec, settings: Settings, now: float | None = None) -> float:
    """$ of training (train, tune, retrain) of the spec's model within its budget period."""
    since = (time.time() if now is None else now) - spec.cost.period_days * DAY_S
    return sum(u.cost(settings) for u in entries(settings, spec.model_name, since) if u.kind in TRAINING)


def retrain_estimate(spec: Spec, settings: Settings) -> float:
    """What one more retrain should cost: the mean of the model's last three training runs
    (one Tune search counts as one), 0 when none is on record."""
    runs = [u.cost(settings) for u in entries(settings, spec.model_name) if u.kind in TRAINING][-3:]
    return sum(runs) / len(runs) if runs else 0.0


def retrain_refusal(spec: Spec, settings: Settings, now: float | None = None) -> str | None:
    """Why the training budget cannot cover a retrain now; None when it can (or there is none)."""
    budget = spec.cost.train_budget_usd
    if budget is None:
        return None
    spent, next_run = training_spent(spec, settings, now), retrain_estimate(spec, settings)
    if spent + next_run <= budget:
        return None
    return (
        f"training budget: ${spent:.4f} of ${budget:.4f} spent in {spec.cost.period_days:g} days, "
        f"and a retrain costs about ${next_run:.4f}"
    )


def serve_replica_cap(spec: Spec, settings: Settings, replica_cpus: float) -> int | None:
    """The most model replicas the serving budget pays for per hour (at least 1); None: no budget."""
    per_hour = spec.cost.serve_budget_usd_per_hour
    if per_hour is None:
        return None
    replica_hour = settings.prices.of(replica_cpus * 3600)
    return max(1, math.floor(per_hour / replica_hour)) if replica_hour > 0 else None


def by_version(spec: Spec, settings: Settings) -> list[dict[str, Any]]:
    """Per model version: its training cost by kind, serving cost, predictions and $ per 1,000."""
    rows: dict[int | None, dict[str, Any]] = defaultdict(
        lambda: {"train": 0.0, "tune": 0.0, "retrain": 0.0, "serve": 0.0, "cpu_s": 0.0, "predictions": 0}
    )
    for u in entries(settings, spec.model_name):
        if u.kind not in (*TRAINING, "serve"):
            continue
        row = rows[u.version]
        row[u.kind] += u.cost(settings)
        row["cpu_s"] += u.cpu_s
        row["predictions"] += u.predictions
    out = []
    for version, row in sorted(rows.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        training = row["train"] + row["tune"] + row["retrain"]
        per_1k = row["serve"] / row["predictions"] * 1000 if row["predictions"] else None
        out.append({"version": version, **row, "training": training, "per_1k_predictions": per_1k})
    return out
