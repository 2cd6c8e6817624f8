"""Hyperparameter search: Ray Tune trials that each run a distributed TorchTrainer.

In Ray 2.60 (Train V2) a Tune trial is a function that builds and fits a
`TorchTrainer`; Train reports each epoch to Tune through `TuneReportCallback`, and
ASHA stops trials that trail at a rung. The data is read and preprocessed once, for
all trials. Concurrency comes from the cluster's `ResourceLayout`.

A training budget (``cost.train_budget_usd``) bounds a search twice: before it, the trials
the rest of the budget pays for cap ``num_samples`` (none: `BudgetError`, nothing starts);
during it, `BudgetStopper` ends the search once what it holds has spent the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from ray.tune import Callback, Stopper
from rich.console import Console

from rayinfra.config import SearchDim, Settings, Spec
from rayinfra.cost.accounting import training_resources
from rayinfra.cost.budget import grid_size, sweep_over_budget, training_spent, tune_samples
from rayinfra.runtime import TRIAL_CPU, ResourceLayout, init_ray
from rayinfra.train.leaked_groups import LeakedGroups
from rayinfra.train.trainer import (
    PreparedData,
    TrainingError,
    TrainOutcome,
    WorkerUsage,
    build_trainer,
    evaluate,
    load_checkpoint,
    prepare_data,
    train_params,
)

CHECKPOINT_KEY = "checkpoint_path"  # what TuneReportCallback adds to a trial's metrics
log = logging.getLogger(__name__)


@dataclass
class TrialSummary(WorkerUsage):
    trial_id: str
    params: dict[str, Any]
    epochs: int
    best_score: float
    status: str
    history: list[dict[str, Any]]


@dataclass
class TuneOutcome:
    name: str
    trials: list[TrialSummary]
    best: TrainOutcome
    concurrency: int
    seconds: float


def search_space(spec: Spec) -> dict[str, Any]:
    from ray import tune

    def dim(d: SearchDim) -> Any:
        if d.uniform:
            return tune.uniform(*d.uniform)
        if d.loguniform:
            return tune.loguniform(*d.loguniform)
        if d.grid:
            return tune.grid_search(d.grid)
        assert d.choice is not None  # SearchDim holds exactly one kind, and the others were not it
        return tune.choice(d.choice)

    return {key: dim(d) for key, d in spec.tune.search_space.items()}


def tune_search(spec: Spec, settings: Settings | None = None, version: int | None = None) -> TuneOutcome:
    """Run the spec's search; return every trial and the best one, scored on the test split."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler

    settings = settings or Settings()
    started = time.time()  # the ledger charges the search from here: so does its budget stopper
    num_samples = tune_samples(spec, settings)  # before any work: a search the budget refuses starts nothing
    init_ray(settings)
    ResourceLayout.current().check_train(spec.train.num_workers, spec.train.use_gpu, spec.train.cpus_per_worker)
    t0 = time.perf_counter()
    data = prepare_data(spec, settings, version)
    base = train_params(spec)
    name = f"{spec.name}-tune-v{data.version}-{time.strftime('%Y%m%d-%H%M%S')}"

    def trial(config: dict[str, Any]) -> None:
        trial_id = tune.get_context().get_trial_id()
        trainer = build_trainer(
            spec, settings, data, {**base, **config}, f"{name}-{trial_id}", callbacks=[TuneReportCallback()]
        )
        trainer.fit()

    t = spec.train
    layout = ResourceLayout.current()
    # A search cut to fewer trials than fit side by side holds (and is charged for) only those.
    concurrency = min(layout.tune_concurrency(t.num_workers, t.use_gpu), num_samples * grid_size(spec))
    epochs_dim = spec.tune.search_space.get("epochs")
    max_epochs = max(epochs_dim.grid or epochs_dim.choice or [base["epochs"]]) if epochs_dim else base["epochs"]
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": TRIAL_CPU}),
        param_space=search_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.tune.metric,
            mode=spec.tune.mode,
            num_samples=num_samples,
            max_concurrent_trials=concurrency,
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=max_epochs,
                grace_period=spec.tune.grace_period,
                reduction_factor=spec.tune.reduction_factor,
            ),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=settings.storage_path,
            verbose=0,
            # A stopped trial's worker group can outlive it (Ray 2.60): remove it, or the next trial waits.
            callbacks=[
                _Progress(spec),
                LeakedGroups([layout.train_worker(t.num_workers, t.use_gpu, t.cpus_per_worker)] * t.num_workers),
            ],
            stop=BudgetStopper.for_search(spec, settings, layout, concurrency, started),
        ),
    )
    grid = tuner.fit()
    # ResultGrid iterates through __getitem__/__len__, which mypy does not count as iterable.
    trials = [_summary(r, spec) for r in grid if r.metrics_dataframe is not None]  # type: ignore[attr-defined]
    if not trials:
        errors = "; ".join(str(r.error) for r in grid if r.error)  # type: ignore[attr-defined]
        raise TrainingError(f"tune search '{name}' produced no finished trial: {errors}")
    best = _best_outcome(spec, data, grid, trials, name)
    return TuneOutcome(name, trials, best, concurrency, time.perf_counter() - t0)


def _summary(result, spec: Spec) -> TrialSummary:
    df: pd.DataFrame = result.metrics_dataframe
    metric = spec.tune.metric
    best = df[metric].max() if spec.tune.mode == "max" else df[metric].min()
    history = df[
        [
            c
            for c in df.columns
            if c.startswith(("val_", "train_")) or c in ("epoch", "worker_cpu_s", "worker_memory_gb", CHECKPOINT_KEY)
        ]
    ].to_dict("records")
    epochs = int(df["training_iteration"].max())
    status = (
        "error"
        if result.error
        else "stopped early"
        if epochs < int(result.config.get("epochs", spec.train.epochs))
        else "completed"
    )
    trial_id = str(result.metrics.get("trial_id") or str(result.path).rsplit("/", 1)[-1])
    return TrialSummary(trial_id, dict(result.config), epochs, float(best), status, history)


def _best_outcome(spec: Spec, data: PreparedData, grid, trials: list[TrialSummary], name: str) -> TrainOutcome:
    sign = 1 if spec.tune.mode == "max" else -1
    best_trial = max(trials, key=lambda t: sign * t.best_score)
    rows = [h for h in best_trial.history if isinstance(h.get(CHECKPOINT_KEY), str)]
    best_row = max(rows, key=lambda h: sign * h[spec.tune.metric])
    model, _ = load_checkpoint(best_row[CHECKPOINT_KEY])
    val = {k: v for k, v in best_row.items() if k.startswith("val_") or k == "epoch"}
    test = evaluate(model, data.test, val["val_threshold"], spec.train.batch_size)
    history = [{k: v for k, v in h.items() if k != CHECKPOINT_KEY} for h in best_trial.history]
    return TrainOutcome(
        name=f"{name}-best-{best_trial.trial_id}",
        params={**train_params(spec), **best_trial.params},
        data=data,
        history=history,
        val_metrics=val,
        test_metrics=test,
        checkpoint_path=best_row[CHECKPOINT_KEY],
        resumed_at=0,
        model=model,
    )


class BudgetStopper(Stopper):
    """Ends the search, running trials too, once the training budget is spent: what the ledger
    held when it started plus what its resources have cost since (its own ledger entry comes
    only at its end). Trials stopped this way keep their checkpoints: the best is still picked."""

    def __init__(
        self, budget: float, spent_before: float, usd_per_s: float, started: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.budget, self.spent_before, self.usd_per_s, self.clock = budget, spent_before, usd_per_s, clock
        self.started, self.stopped = clock() if started is None else started, False

    @classmethod
    def for_search(
        cls, spec: Spec, settings: Settings, layout: ResourceLayout, concurrency: int, started: float
    ) -> BudgetStopper | None:
        """The stopper of ``spec``'s search; None without a training budget."""
        budget = spec.cost.train_budget_usd
        if budget is None:
            return None
        cpus, gpus = training_resources(spec, layout, concurrency)
        return cls(budget, training_spent(spec, settings, started), settings.prices.of(cpus, gpus), started)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False  # the budget is the search's, not a trial's: stop_all decides

    def stop_all(self) -> bool:
        elapsed = self.clock() - self.started
        if not self.stopped and sweep_over_budget(self.budget, self.spent_before, self.usd_per_s, elapsed):
            self.stopped = True  # Tune asks every step: say it once
            log.warning("training budget $%.4f spent ($%.4f before the search, about $%.4f by it): search stopped",
                        self.budget, self.spent_before, self.usd_per_s * elapsed)  # fmt: skip
        return self.stopped


class _Progress(Callback):
    """One line per trial epoch, with the best score so far."""

    def __init__(self, spec: Spec) -> None:
        # Tune pickles its callbacks: hold no Console (it has a lock), print through a new one.
        self.metric, self.mode = spec.tune.metric, spec.tune.mode
        self.best: float | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        score = result.get(self.metric)
        if score is None:
            return
        if self.best is None or (score > self.best if self.mode == "max" else score < self.best):
            self.best = score
        running = sum(t.status == "RUNNING" for t in trials)
        Console().print(
            f"trial {trial.trial_id} epoch {result.get('training_iteration')}: {self.metric} {score:.4f} "
            f"(best so far {self.best:.4f}; {running} running, {len(trials)} started)"
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        Console().print(f"[dim]trial {trial.trial_id} finished[/]")
