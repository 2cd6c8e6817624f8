"""Train a model on a pinned Delta table version with Ray Train (DDP, CPU or GPU).

`prepare_data` reads the version through Ray Data, splits it deterministically, fits
the preprocessor on the training split only and turns every row into model tensors.
`train` runs a `TorchTrainer` over those datasets with per-epoch checkpoints and
`FailureConfig`, then scores the best checkpoint on the test split.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from rayinfra.config import Settings, Spec
from rayinfra.data.features import Preprocessor
from rayinfra.data.split import TEST, TRAIN, VAL, Splitter, event_time_cutoffs
from rayinfra.data.tables import Table
from rayinfra.data.window import Window
from rayinfra.errors import RayinfraError
from rayinfra.features.offline import values_at, view_inputs, with_view_features
from rayinfra.monitor.profiles import profile_soon
from rayinfra.registry.bundle import load_bundle
from rayinfra.runtime import ResourceLayout, init_ray
from rayinfra.train.loop import predict, train_loop
from rayinfra.train.metrics import classification_metrics

if TYPE_CHECKING:
    import ray.data
    from ray.train.v2.api.result import Result  # ray.train.Result at runtime (Train V2, the default); mypy sees V1
    from whylogs.core import DatasetProfileView

log = logging.getLogger(__name__)

MATERIALIZE_SHARE = 0.25  # materialize prepared data up to this share of the object store


class TrainingError(RayinfraError, RuntimeError):
    """A training run that did not finish; says why and after how many recoveries."""


@dataclass
class PreparedData:
    table_uri: str
    version: int
    preprocessor: Preprocessor
    train: ray.data.Dataset
    val: ray.data.Dataset
    test: ray.data.Dataset
    materialized: bool
    raw: ray.data.Dataset  # the pinned version's raw, labelled rows with their split column
    window: Window | None = None  # the rows chosen for a retrain (None: every labelled row)

    def train_rows(self) -> ray.data.Dataset:
        """The raw rows of the training split (what drift is later judged against)."""
        cpus = ResourceLayout.current().data_task_cpus  # beside Serve, a whole CPU may never come free
        return self.raw.filter(expr=f"split == {TRAIN}", num_cpus=cpus).drop_columns(["split"])


class WorkerUsage:
    """What a run's Train workers used, from its last report (`train_loop` adds both figures,
    summed over ranks); a run stopped early: so far. Needs a ``history`` of reported metrics."""

    history: list[dict[str, Any]]

    @property
    def worker_cpu_s(self) -> float:
        return float(self.history[-1].get("worker_cpu_s", 0.0)) if self.history else 0.0

    @property
    def worker_memory_gb(self) -> float:
        """Peak resident memory."""
        return float(self.history[-1].get("worker_memory_gb", 0.0)) if self.history else 0.0


@dataclass
class TrainOutcome(WorkerUsage):
    name: str
    params: dict[str, Any]
    data: PreparedData
    history: list[dict[str, Any]]
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    checkpoint_path: str
    resumed_at: int
    model: torch.nn.Module
    seconds: dict[str, float] = field(default_factory=dict)
    profile: Future[DatasetProfileView] | None = None  # the training rows' drift reference, if begun


# ----------------------------------------------------------------------------- data
def prepare_data(
    spec: Spec,
    settings: Settings,
    version: int | None = None,
    window: Window | None = None,
    base: Preprocessor | None = None,
) -> PreparedData:
    """The pinned version, split and preprocessed into model tensors (lazily, or cached).

    ``window``: only the rows it keeps, with its sample weights (a column ``w``).
    ``base``: a preprocessor to keep (a warm start keeps the champion's scaling and
    vocabularies, so its weights still mean the same); only its class counts are refit.
    """
    table = Table.for_spec(spec, settings)
    version = table.version() if version is None else version
    if window is not None and window.table_version != version:
        raise TrainingError(f"the window was chosen on {table.uri}@{window.table_version}, not @{version}")
    contract = spec.contract
    if contract.label is None:
        raise TrainingError(f"the contract of {table.uri} names no label column; training needs one")
    splitter = _splitter(spec, table, version)
    keys = [contract.key] if contract.key else []  # kept so a gate can pick out recent rows
    times = [window.time_column] if window is not None and window.time_column else []
    views = view_inputs(spec) if spec.uses_views else []
    columns = list(dict.fromkeys([*spec.table_features, *views, contract.label, splitter.column, *keys, *times]))
    # Every task asks for the layout's Ray Data share: a 1-CPU default never runs beside
    # Serve on 2 CPUs. The same value on each step also lets Ray Data fuse them.
    cpus = ResourceLayout.current().data_task_cpus
    raw = table.read(version=version, columns=columns, num_cpus=cpus)
    if spec.uses_views:  # point in time: each row sees only its entity's earlier events
        raw = with_view_features(raw, values_at(spec, table, version), cpus)
    label = contract.label

    def with_split(batch):  # rows without a label yet (fresh serving traffic) are skipped
        batch = batch.filter(batch.column(label).is_valid())
        if window is not None:
            batch = batch.filter(pa.array(window.mask(batch)))
        return batch.append_column("split", pa.array(splitter.assign(batch)))

    labelled = raw.map_batches(with_split, batch_format="pyarrow", num_cpus=cpus)
    pre = Preprocessor.for_spec(spec)
    parts = (
        labelled.filter(expr=f"split == {TRAIN}", num_cpus=cpus)
        .map_batches(
            lambda b: {"stats": np.array([json.dumps(pre.partial_stats(b))])}, batch_format="pyarrow", num_cpus=cpus
        )
        .take_all()
    )
    pre.fit_from([json.loads(p["stats"]) for p in parts])
    if pre.positives == 0 or pre.positives == pre.rows:
        raise TrainingError(f"the training split of {table.uri}@{version} has a single class ({pre.rows} rows)")
    if base is not None:
        pre = replace(base, positives=pre.positives, rows=pre.rows)

    def tensors(batch):
        weights = window.weights(batch) if window is not None else None
        out = {**pre.transform(batch), "split": batch.column("split").to_numpy()}
        return out if weights is None else {**out, "w": weights}

    prepared = labelled.map_batches(tensors, batch_format="pyarrow", num_cpus=cpus)
    materialized = _fits_in_memory(table, version, pre)
    if materialized:  # every epoch then reads memory instead of re-reading the table
        prepared = prepared.materialize()

    def only(split: int):
        return prepared.map_batches(
            lambda b: {k: v[b["split"] == split] for k, v in b.items() if k != "split"},
            batch_format="numpy",
            num_cpus=cpus,
        )

    return PreparedData(table.uri, version, pre, only(TRAIN), only(VAL), only(TEST), materialized, labelled, window)


def raw_split(data: PreparedData, split: int, max_rows: int | None = None) -> pd.DataFrame:
    """Raw rows (features and label) of one split, as a DataFrame, for scoring and profiles."""
    cpus = ResourceLayout.current().data_task_cpus
    ds = data.raw.filter(expr=f"split == {split}", num_cpus=cpus).drop_columns(["split"], num_cpus=cpus)
    return (ds.limit(max_rows) if max_rows else ds).to_pandas()


def _splitter(spec: Spec, table: Table, version: int) -> Splitter:
    t = spec.train
    if t.split == "key_hash":
        if spec.contract.key is None:
            raise TrainingError("train.split is key_hash but the contract names no key column")
        return Splitter("key_hash", spec.contract.key, t.validation_fraction, t.test_fraction)
    column = spec.contract.event_time
    if column is None:
        raise TrainingError("train.split is event_time but the contract names no event_time column")
    times = table.to_arrow(version=version, columns=[column]).column(0).cast("int64").to_numpy()
    cutoffs = event_time_cutoffs(times, t.validation_fraction, t.test_fraction)
    return Splitter("event_time", column, t.validation_fraction, t.test_fraction, cutoffs)


def _fits_in_memory(table: Table, version: int, pre: Preprocessor) -> bool:
    import ray

    rows = table.delta(version).count()
    row_bytes = 4 * len(pre.numeric) + 8 * len(pre.categorical) + 4 + 1
    budget = ray.available_resources().get("object_store_memory", 0) * MATERIALIZE_SHARE
    return rows * row_bytes < budget


# ---------------------------------------------------------------------------- train
def train_params(spec: Spec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters of a run: the spec's, then ``overrides`` (``model.x`` for model params)."""
    t = spec.train
    params: dict[str, Any] = {
        "learning_rate": t.learning_rate,
        "batch_size": t.batch_size,
        "weight_decay": t.weight_decay,
        "epochs": t.epochs,
        **{f"model.{k}": v for k, v in spec.model.params.items()},
    }
    params.update(overrides or {})
    return params


# Train's controller looks at its workers every 2 s by default: a finished run waited for the
# next look, and so did each step of its shutdown (a two-epoch run's fit: 17.3 s at 2 s,
# 13.2 s at 0.5 s, the same at 0.2 s). A look is one small task per worker; a worker that
# answers late is only marked dead after Train's 10-minute health-check timeout. Train
# passes the driver's value on to the controller; a value the user set is kept.
POLL_ENV, POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


def build_trainer(
    spec: Spec,
    settings: Settings,
    data: PreparedData,
    params: dict[str, Any],
    name: str,
    callbacks: list[Any] | None = None,
    test_hooks: dict[str, Any] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
):
    """A `TorchTrainer` for one run; resources from the cluster's `ResourceLayout`.

    ``init_state``: weights to start from (a warm start) instead of a fresh model.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    os.environ.setdefault(POLL_ENV, POLL_S)  # read by trainer.fit() in this process (a driver or a Tune trial)
    t = spec.train
    layout = ResourceLayout.current()
    config = {
        "preprocessor": data.preprocessor.to_json(),
        "model": spec.model.name,
        "model_params": {k.removeprefix("model."): v for k, v in params.items() if k.startswith("model.")},
        "learning_rate": float(params["learning_rate"]),
        "weight_decay": float(params["weight_decay"]),
        # batch_size is global: each of N workers steps on 1/N of it, so the number of
        # optimizer steps per epoch (and so convergence) does not depend on N.
        "batch_size": max(1, int(params["batch_size"]) // t.num_workers),
        "epochs": int(params["epochs"]),
        "seed": t.seed,
        # Data that fit in the object store also fits in the workers: cache it there.
        "cache": data.materialized,
        "init_state": init_state,
        **(test_hooks or {}),
    }
    metric, mode = spec.tune.metric, spec.tune.mode
    return TorchTrainer(
        train_loop,  # type: ignore[arg-type]  # mypy sees V1's signature (a loop returns None); V2 keeps the value
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            resources_per_worker=layout.train_worker(t.num_workers, t.use_gpu, t.cpus_per_worker),
            placement_strategy=t.placement_strategy,
        ),
        datasets={"train": data.train, "val": data.val},
        # One worker reads the whole split as it is: a split of one still starts Ray Data's split
        # coordinator (an actor, a process) and cost a small run's first epoch 2.5 s instead of 1.3.
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"] if t.num_workers > 1 else []),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=settings.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=metric, checkpoint_score_order=mode
            ),
            callbacks=callbacks or [],
        ),
    )


def train(
    spec: Spec,
    settings: Settings | None = None,
    version: int | None = None,
    params: dict[str, Any] | None = None,
    name: str | None = None,
    data: PreparedData | None = None,
    test_hooks: dict[str, Any] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
) -> TrainOutcome:
    """Train on the pinned table version; score the best checkpoint on the test split.

    The outcome's params carry the data window (``window.*``) when ``data`` has one,
    so MLflow records what reproduces the run.
    """
    settings = settings or Settings()
    init_ray(settings)
    t = spec.train
    ResourceLayout.current().check_train(t.num_workers, t.use_gpu, t.cpus_per_worker)  # refuse, never hang
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    data = data or prepare_data(spec, settings, version)
    seconds["prepare"] = time.perf_counter() - t0
    params = train_params(spec, params)
    name = name or f"{spec.name}-v{data.version}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = build_trainer(spec, settings, data, params, name, test_hooks=test_hooks, init_state=init_state)
    if data.window is not None:
        params = {**params, **data.window.to_params()}
    params["warm_start"] = init_state is not None
    # The drift reference is profiled while Train starts its processes (a retrain's driver
    # waited 8 s for them, then 5 s more for this profile).
    profile = profile_soon(data.train_rows(), ResourceLayout.current().data_task_cpus)
    t0 = time.perf_counter()
    result = _fit(trainer, name, spec.train.max_failures)
    seconds["fit"] = time.perf_counter() - t0
    checkpoint = result.get_best_checkpoint(spec.tune.metric, spec.tune.mode) or result.checkpoint
    assert checkpoint is not None  # rank 0 reports a checkpoint every epoch, and epochs >= 1
    assert result.return_value is not None  # train_loop returns its history (rank 0's is kept)
    model, _ = load_checkpoint(checkpoint.path)
    history = result.return_value["history"]
    val_metrics = _metrics_of(checkpoint, result)
    t0 = time.perf_counter()
    test_metrics = evaluate(model, data.test, val_metrics["val_threshold"], spec.train.batch_size)
    seconds["test"] = time.perf_counter() - t0
    return TrainOutcome(
        name=name,
        params=params,
        data=data,
        history=history,
        val_metrics=val_metrics,
        test_metrics=test_metrics,
        checkpoint_path=checkpoint.path,
        resumed_at=result.return_value["resumed_at"],
        model=model,
        seconds=seconds,
        profile=profile,
    )


def _fit(trainer, name: str, max_failures: int) -> Result:
    try:
        result = trainer.fit()
    except Exception as err:  # Ray wraps worker and controller errors; keep the cause readable
        raise TrainingError(
            f"training run '{name}' failed (max_failures={max_failures}): {type(err).__name__}: {err}"
        ) from err
    if result.error is not None:
        raise TrainingError(f"training run '{name}' failed (max_failures={max_failures}): {result.error}")
    return result


def _metrics_of(checkpoint, result) -> dict[str, float]:
    for ckpt, metrics in result.best_checkpoints or []:
        if ckpt.path == checkpoint.path:
            return {k: v for k, v in metrics.items() if k.startswith("val_") or k == "epoch"}
    return {k: v for k, v in result.metrics.items() if k.startswith("val_") or k == "epoch"}


def load_checkpoint(path: str) -> tuple[torch.nn.Module, Preprocessor]:
    """The model (on CPU, eval mode) and preprocessor of a checkpoint: a model bundle."""
    bundle = load_bundle(path)
    return bundle.model, bundle.preprocessor


def evaluate(
    model: torch.nn.Module, dataset: ray.data.Dataset, threshold: float, batch_size: int = 4096
) -> dict[str, float]:
    """Metrics of ``model`` on a prepared dataset, at the threshold chosen on validation."""
    y, p = predict(model, dataset, batch_size, torch.device("cpu"))
    return classification_metrics(y, p, threshold)
