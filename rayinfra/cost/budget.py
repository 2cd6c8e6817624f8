"""What a model has cost, version by version, and whether its budget covers more training.

The guards here read the ledger and the spec and decide; the callers apply them: the drift
monitor (a retrain), `tune_search` (how many trials, and when to stop), the Serve app
(the champion's ``max_replicas``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Any

from rayinfra.config import Settings, Spec
from rayinfra.cost.ledger import TRAINING, entries
from rayinfra.errors import RayinfraError

log = logging.getLogger(__name__)
DAY_S = 86_400.0
EPS = 1e-9  # 0.15 / 0.05 is 2.999...: a budget that pays exactly n must count n


class BudgetError(RayinfraError, RuntimeError):
    """Training the budget cannot pay for: nothing was started."""


def training_spent(spec: Spec, settings: Settings, now: float | None = None) -> float:
    """$ of training (train, tune, retrain) of the spec's model within its budget period."""
    since = (time.time() if now is None else now) - spec.cost.period_days * DAY_S
    return sum(u.cost(settings) for u in entries(settings, spec.model_name, since) if u.kind in TRAINING)


def retrain_estimate(spec: Spec, settings: Settings) -> float:
    """What one more retrain should cost: the mean of the model's last three training entries
    (one Tune search counts as one), 0 when none is on record."""
    return _recent_mean(spec, settings, per_run=False)


def per_run_estimate(spec: Spec, settings: Settings) -> float:
    """What one training run (one Tune trial) should cost: the same mean, a Tune search's cost
    shared among its trials; 0 when none is on record."""
    return _recent_mean(spec, settings, per_run=True)


def _recent_mean(spec: Spec, settings: Settings, per_run: bool) -> float:
    training = [u for u in entries(settings, spec.model_name) if u.kind in TRAINING][-3:]
    costs = [u.cost(settings) / (max(1, u.runs) if per_run else 1) for u in training]
    return sum(costs) / len(costs) if costs else 0.0


def spent_line(spec: Spec, spent: float, budget: float) -> str:
    """The budget's state, as refusals and warnings say it."""
    return f"training budget: ${spent:.4f} of ${budget:.4f} spent in {spec.cost.period_days:g} days"


def retrain_refusal(spec: Spec, settings: Settings, now: float | None = None) -> str | None:
    """Why the training budget cannot cover a retrain now; None when it can (or there is none)."""
    budget = spec.cost.train_budget_usd
    if budget is None:
        return None
    spent, next_run = training_spent(spec, settings, now), retrain_estimate(spec, settings)
    if spent + next_run <= budget:
        return None
    return f"{spent_line(spec, spent, budget)}, and a retrain costs about ${next_run:.4f}"


def affordable_runs(budget: float | None, spent: float, per_run: float, wanted: int) -> int:
    """How many of ``wanted`` runs, at ``per_run`` each, the rest of ``budget`` pays for."""
    if budget is None:
        return wanted
    left = budget - spent
    if left <= 0:
        return 0
    # Nothing on record to price a run by: the stopper of the sweep watches what it spends.
    return wanted if per_run <= 0 else min(wanted, math.floor(left / per_run + EPS))


def grid_size(spec: Spec) -> int:
    """Trials per Tune sample: every grid dimension's values are crossed with each sample."""
    return math.prod(len(d.grid) for d in spec.tune.search_space.values() if d.grid)


def tune_samples(spec: Spec, settings: Settings, now: float | None = None) -> int:
    """The spec's ``tune.num_samples``, capped at the trials the rest of the training budget
    pays for; `BudgetError` (naming the budget, the spend, the estimate) when it pays for none."""
    budget, wanted, grid = spec.cost.train_budget_usd, spec.tune.num_samples, grid_size(spec)
    if budget is None:
        return wanted
    spent, per_trial = training_spent(spec, settings, now), per_run_estimate(spec, settings)
    samples = affordable_runs(budget, spent, per_trial * grid, wanted)
    figures = f"{spent_line(spec, spent, budget)}, and a trial costs about ${per_trial:.4f}" + (
        f" ({grid} trials per sample: the grid)" if grid > 1 else ""
    )
    if samples == 0:
        raise BudgetError(f"{figures}: no Tune trial fits; raise cost.train_budget_usd or wait for the period to roll")
    if samples < wanted:
        log.warning("%s: tune.num_samples %d cut to %d", figures, wanted, samples)
    return samples


def sweep_over_budget(budget: float | None, spent_before: float, usd_per_s: float, elapsed_s: float) -> bool:
    """Whether a sweep that found ``spent_before`` spent and holds ``usd_per_s`` of resources
    has, ``elapsed_s`` in, used up the budget (its own spend reaches the ledger only at its end)."""
    return budget is not None and spent_before + usd_per_s * max(0.0, elapsed_s) >= budget


def _replicas_paid(spec: Spec, settings: Settings, replica_cpus: float) -> int | None:
    """Model replicas the serving budget pays for per hour (maybe 0); None: no budget, or free."""
    per_hour = spec.cost.serve_budget_usd_per_hour
    replica_hour = settings.prices.of(replica_cpus * 3600)
    if per_hour is None or replica_hour <= 0:
        return None
    return math.floor(per_hour / replica_hour + EPS)


def serve_max_replicas(spec: Spec, settings: Settings) -> int:
    """The champion's ``max_replicas``: the spec's, capped at what the serving budget pays per
    hour, never below ``min_replicas`` (nor 1). A budget short of even those is logged, not
    obeyed: a model that cannot hold its minimum serves nothing, which no budget meant."""
    s = spec.serve
    paid = _replicas_paid(spec, settings, s.replica_cpus)
    if paid is None:
        return s.max_replicas
    least = max(1, s.min_replicas)
    if paid < least:
        log.warning("serving budget $%g/hour pays %d replica(s) of %g CPUs at $%g/core-hour: "
                    "keeping serve.min_replicas (%d replica(s)); raise cost.serve_budget_usd_per_hour",
                    spec.cost.serve_budget_usd_per_hour, paid, s.replica_cpus, settings.prices.core_hour,
                    least)  # fmt: skip
    return max(least, min(s.max_replicas, paid))


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


def other_jobs(spec: Spec, settings: Settings) -> dict[str, dict[str, float]]:
    """Jobs that make no version: ingest and batch scoring, each kind's count, cost and CPU used."""
    out: dict[str, dict[str, float]] = {}
    for u in entries(settings, spec.model_name):
        if u.kind in ("ingest", "batch"):
            row = out.setdefault(u.kind, {"jobs": 0, "cost": 0.0, "cpu_used_s": 0.0})
            row["jobs"] += 1
            row["cost"] += u.cost(settings)
            row["cpu_used_s"] += u.worker_cpu_s
    return out
