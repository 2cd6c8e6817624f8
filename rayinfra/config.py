"""The task spec (one typed model, loaded from YAML) and the platform settings.

The spec says *what* to do with a dataset: its contract, features, model and how
to train, tune, serve and monitor it. The settings say *where* things live (data
root, MLflow, Ray) and come from the environment (``RAYINFRA_*``), with embedded
defaults under ``./.rayinfra/``. Nothing here touches the disk or the network at
import time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from rayinfra.cost.definitions import CostSpec, Prices
from rayinfra.errors import RayinfraError
from rayinfra.features.definitions import NUMERIC_ONLY, Entity, FeatureView

ColumnType = Literal["int", "float", "bool", "string", "category", "timestamp"]
NUMERIC_TYPES = ("int", "float", "bool")
CATEGORICAL_TYPES = ("category", "string")
SPEC_ENV_PREFIX = "RAYINFRA_SPEC__"
# The demo task (`make demo`), every command's default spec; relative to the project root.
DEMO_SPEC = Path("jobs/specs/fraud_cards.yaml")


class SpecError(RayinfraError, ValueError):
    """A spec file that cannot be used; the message names the file and each bad field."""


class _Section(BaseModel):
    # Unknown keys are errors: a typo must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- contract
class ColumnSpec(_Section):
    """One column of a dataset contract."""

    type: ColumnType
    nullable: bool = False
    min: float | None = Field(None, description="Smallest allowed value (numbers).")
    max: float | None = Field(None, description="Largest allowed value (numbers).")
    categories: list[str] | None = Field(None, description="Allowed values; when given the column is closed to others.")
    description: str = ""

    @model_validator(mode="after")
    def _rules_fit_type(self) -> ColumnSpec:
        if (self.min is not None or self.max is not None) and self.type not in (
            "int",
            "float",
        ):
            raise ValueError(f"min/max apply to int and float columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.categories is not None:
            if self.type != "category":
                raise ValueError("categories apply to columns of type category")
            if not self.categories or len(set(self.categories)) != len(self.categories):
                raise ValueError("categories must be a non-empty list of distinct values")
        return self


class Contract(_Section):
    """What every batch written to a table must satisfy."""

    columns: dict[str, ColumnSpec] = Field(min_length=1)
    label: str | None = Field(None, description="The label column, if the table has one.")
    key: str | None = Field(None, description="Unique record id (used for splits, feedback).")
    event_time: str | None = Field(None, description="Event-time column (timestamp).")

    @model_validator(mode="after")
    def _roles_exist(self) -> Contract:
        for role in ("label", "key", "event_time"):
            name = getattr(self, role)
            if name is not None and name not in self.columns:
                raise ValueError(f"{role} column '{name}' is not among the columns")
        if self.event_time and self.columns[self.event_time].type != "timestamp":
            raise ValueError(f"event_time column '{self.event_time}' must be of type timestamp")
        return self

    def hash(self) -> str:
        return _stable_hash(self.model_dump(mode="json"))


class DatasetSpec(_Section):
    table: str = Field(pattern=r"^[A-Za-z0-9_\-]+$", description="Table name under the data root.")
    contract: Contract
    maintenance_every: PositiveInt = Field(100, description="Compact and checkpoint the table every N commits.")
    checkpoint_every: PositiveInt = Field(
        10,
        description="Delta checkpoint interval: readers replay at most N-1 JSON commits.",
    )
    deleted_file_retention_hours: NonNegativeInt = Field(
        168,
        description="Delta's deletedFileRetentionDuration (its default, 7 days): files that compaction "
        "replaced stay listed in every checkpoint, and vacuum keeps them, this long. Shorter: the table "
        "opens faster, but vacuum may delete files that time travel to older, unpinned versions needs.",
    )
    log_retention_hours: NonNegativeInt = Field(
        720,
        description="Delta's logRetentionDuration (its default, 30 days): maintenance drops log entries "
        "older than this once a checkpoint covers them, unless a version is pinned. Shorter: fewer "
        "files to list, but time travel cannot reach versions older than this.",
    )


class FeaturesSpec(_Section):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


# ------------------------------------------------------- sections later layers use
class ModelSpec(_Section):
    name: str = Field("mlp", description="Built-in model name, or 'module:function'.")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_or_factory(cls, name: str) -> str:
        if ":" not in name and name not in BUILTIN_MODELS:
            raise ValueError(
                f"unknown model '{name}'; built-in models: {', '.join(BUILTIN_MODELS)}, "
                "or give 'module:function' for your own"
            )
        return name


BUILTIN_MODELS = ("mlp", "logistic")


class TrainSpec(_Section):
    num_workers: PositiveInt = 1
    use_gpu: bool = False
    epochs: PositiveInt = 5
    batch_size: PositiveInt = Field(1024, description="Global batch size, split evenly between workers.")
    learning_rate: PositiveFloat = 1e-3
    weight_decay: float = Field(0.0, ge=0)
    seed: int | None = Field(
        None,
        ge=0,
        description="Seeds the model's initial weights and dropout; none: different weights each run.",
    )
    cpus_per_worker: PositiveFloat | None = Field(
        None,
        description="CPUs per Train worker; default from the cluster's resource layout.",
    )
    max_failures: int = Field(
        1,
        ge=0,
        description="Worker failures to recover from (from the last checkpoint).",
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK",
        description="Where workers go: PACK fills a node first; SPREAD uses many nodes.",
    )
    split: Literal["key_hash", "event_time"] = "key_hash"
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


class SearchDim(_Section):
    """One hyperparameter: ``{uniform|loguniform: [lo, hi]}``, ``{choice: [...]}`` or ``{grid: [...]}``."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[PositiveFloat, PositiveFloat] | None = None
    choice: list[Any] | None = Field(None, min_length=1)
    grid: list[Any] | None = Field(None, min_length=1, description="Every value is tried (times num_samples).")

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchDim:
        given = [k for k in ("uniform", "loguniform", "choice", "grid") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, loguniform, choice, grid")
        return self


TUNABLE_TRAIN_PARAMS = ("learning_rate", "batch_size", "weight_decay", "epochs")


class TuneSpec(_Section):
    num_samples: PositiveInt = 4
    metric: Literal["val_pr_auc", "val_roc_auc", "val_log_loss"] = "val_pr_auc"
    mode: Literal["max", "min"] = "max"
    grace_period: PositiveInt = Field(1, description="ASHA: epochs every trial gets before it can be stopped.")
    reduction_factor: float = Field(2, gt=1, description="ASHA: keep 1/reduction_factor of trials per rung.")
    search_space: dict[str, SearchDim] = Field(default_factory=dict, description="Keys: train params or model.<param>.")

    @field_validator("search_space")
    @classmethod
    def _tunable(cls, space: dict[str, SearchDim]) -> dict[str, SearchDim]:
        for key in space:
            if key not in TUNABLE_TRAIN_PARAMS and not key.startswith("model."):
                raise ValueError(f"cannot tune '{key}': use one of {', '.join(TUNABLE_TRAIN_PARAMS)} or model.<param>")
        return space


class RegistrySpec(_Section):
    model_name: str | None = Field(None, description="Registered model name; default: the spec's name.")
    gate_metric: Literal["pr_auc", "roc_auc"] = "pr_auc"
    gate_margin: float = Field(
        0.0,
        ge=0,
        description="The gate rejects a candidate whose interval of the metric difference lies below -margin.",
    )
    gate_resamples: int = Field(
        1000, ge=1000, le=100_000, description="Paired bootstrap resamples of the gate's metric difference."
    )
    gate_confidence: float = Field(
        0.95, gt=0.5, lt=1, description="Confidence of the bootstrap interval the gate's verdict reads."
    )
    gate_min_rows: int = Field(
        200, ge=1, description="Fewer held-out rows than this and the gate's verdict is 'inconclusive'."
    )
    gate_min_positives: int = Field(
        50, ge=1, description="Fewer positive held-out rows than this and the gate's verdict is 'inconclusive'."
    )
    gate_seed: int = Field(0, description="Seed of the gate's bootstrap, so a verdict can be repeated exactly.")
    challenger_deadline_s: float = Field(
        3600,
        gt=0,
        description="An inconclusive candidate shadows the champion as challenger and is judged on live "
        "labels by the gate's statistics; still undecided after this long, it is rejected.",
    )


class TrafficSpec(_Section):
    """How requests are shared between the champion and the challenger."""

    mode: Literal["champion", "canary", "shadow"] = Field(
        "shadow",
        description="shadow: when there is a challenger (a candidate the gate could not decide on), it gets a copy "
        "of each request, its answers are logged, not returned, and judged on live labels; champion: all to the "
        "champion, no challenger stage; canary: the challenger answers a weighted share.",
    )
    canary_weight: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of requests the challenger answers (canary).",
    )


class ServeSpec(_Section):
    max_batch_size: PositiveInt = 64
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_ongoing_requests: PositiveInt = 128
    max_queued_requests: int = Field(
        256,
        ge=-1,
        description="Requests waiting beyond max_ongoing; past it callers get 503 (-1: unbounded).",
    )
    min_replicas: int = Field(1, ge=0)
    max_replicas: PositiveInt = 2
    target_ongoing_requests: float = Field(32, gt=0, description="Autoscaling target per model replica.")
    upscale_delay_s: float = Field(5, ge=0)
    downscale_delay_s: float = Field(60, ge=0)
    look_back_period_s: float = Field(
        30,
        gt=10,
        description="Seconds of request load Serve averages before it decides to scale; above Serve's 10 s "
        "metrics interval, which Serve will require.",
    )
    replica_cpus: float = Field(0.5, gt=0, description="CPUs reserved by each model replica.")
    ingress_cpus: float = Field(0.25, gt=0, description="CPUs reserved by each ingress replica.")
    ingress_batching: bool = Field(
        True,
        description="The ingress gathers requests into batches and sends each batch to a model "
        "replica in one call (one RPC per batch, not per request); autoscaling then counts batches.",
    )
    access_log: bool = Field(
        False,
        description="Serve's per-request access log lines, in Ray's log folder. Off by default: they cost 15 to 20% "
        "of throughput, and the metrics count every request and the prediction log keeps every answer either way.",
    )
    challenger_cpus: float = Field(
        0.25, gt=0, description="CPUs reserved by the challenger replica (canary/shadow share)."
    )
    max_replicas_per_node: PositiveInt | None = Field(
        None,
        description="Model replicas (champion, challenger) on one node at most; 1 spreads them "
        "over nodes, so losing a node loses one replica (None: Serve's best-effort spread).",
    )
    ingress_resources: dict[str, float] = Field(
        {},
        description="Custom Ray resources the ingress replica asks for, to pin it to the nodes "
        "that offer them (e.g. {'node:__internal_head__': 0.001}: the head, beside its proxy).",
    )
    max_records: PositiveInt = Field(1000, description="Records in one request; more is a 413.")
    max_body_bytes: PositiveInt = Field(1_048_576, description="Request body size limit; larger is a 413.")
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request unanswered after this long gets a 504 JSON error (the model call is cancelled).",
    )
    reload_interval_s: float = Field(2.0, gt=0, description="How often replicas check the model aliases.")
    log_flush_s: float = Field(1.0, gt=0, description="How often the prediction log is written to Delta.")
    auth: bool = Field(True, description="Require an API key on /v1 endpoints (health stays open).")
    compress: Literal["none", "int8", "onnx"] = Field(
        "none",
        description="Serve a compressed model: int8 dynamic quantization (torch.ao) or ONNX Runtime; only a version "
        "whose compressed gate metric lost at most compress_tolerance at registration is served compressed.",
    )
    compress_tolerance: float = Field(0.005, ge=0, description="Largest loss of the gate metric compression may cost.")
    traffic: TrafficSpec = TrafficSpec()

    @model_validator(mode="after")
    def _batches_can_fill(self) -> ServeSpec:
        # A replica never holds more than max_ongoing_requests, so a larger batch never fills.
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be at least "
                f"max_batch_size ({self.max_batch_size}), else batches never fill"
            )
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas is greater than max_replicas")
        return self


RAY_LOGS = "/tmp/ray/session_latest/logs"  # Ray keeps this link to the newest local session's logs
MAX_LABELS = 20_000  # labelled answers the drift monitor keeps per model version


class MonitorSpec(_Section):
    window_rows: PositiveInt = 2000
    drift_share: float = Field(0.3, gt=0, le=1, description="Share of drifted columns that is drift.")
    windows_to_trigger: PositiveInt = 3
    cooldown_s: float = Field(600, ge=0)
    pvalue: float = Field(0.01, gt=0, lt=1, description="A column drifts below this p-value (KS, chi-square)...")
    min_ks: float = Field(
        0.05, ge=0, le=1, description="...and, for numbers, with a KS statistic of at least this (effect size)."
    )
    keep_windows: PositiveInt = Field(500, description="Window decisions kept in the monitor's state.")
    profile: bool = Field(True, description="Champion replicas profile their traffic for the drift monitor.")
    retrain: bool = Field(True, description="Submit a retraining job when drift holds.")
    min_labels: int = Field(
        1000,
        ge=0,
        le=MAX_LABELS,
        description="...and this many answers of the champion have come back labelled "
        "(feedback): without labels of the new traffic, a retrained model has nothing new to learn.",
    )
    max_retries: int = Field(2, ge=0, description="Retries of a failed retraining job (backoff doubles).")
    backoff_s: float = Field(60, ge=0, description="Wait before the first retry of a failed retraining job.")
    flush_s: float = Field(10.0, gt=0, description="Replicas send merged profiles at least this often...")
    # Each flush is one whylogs call (~25 ms fixed, then ~1.5 µs a row): few large ones keep it cheap.
    flush_rows: PositiveInt = Field(10_000, description="...or after this many rows.")
    retrain_deadline_s: float = Field(
        3600,
        gt=0,
        description="A retraining job still running this long after submission is stopped (Jobs API) "
        "and counts as a failed attempt.",
    )
    trigger: Literal["drift_and_drop", "drift"] = Field(
        "drift_and_drop",
        description="drift: drift holding for windows_to_trigger windows starts a retrain; "
        "drift_and_drop: only when quality (realized from labels, else estimated) also dropped by more than "
        "quality_tolerance. Drift without a drop is reported, not acted on.",
    )
    min_js: float = Field(
        0.1,
        ge=0,
        le=1,
        description="...and, for categories, a Jensen-Shannon distance (base 2) of at least this "
        "(effect size; sampling noise of a 1,000-row window over ~15 pooled categories stays under ~0.08).",
    )
    min_category_share: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="Categories rarer than this in the reference, and values it never had, are "
        "pooled into one 'other' bin before the category test (long tails, unseen values).",
    )
    quality_tolerance: float = Field(
        0.02, ge=0, le=1, description="A quality drop (reference minus current, quality_metric) above this is a drop."
    )
    quality_metric: Literal["roc_auc", "pr_auc"] = Field(
        "roc_auc",
        description="The metric a drop is measured on: the version's test value minus the realized "
        "value on the newest labels, else the CBPE estimate on the last windows. ROC-AUC by default: PR-AUC moves "
        "with the positive rate even when the model is as good as before.",
    )


class RetrainDataSpec(_Section):
    """Which rows a retrain (a job with a champion to replace) trains on, and how they weigh."""

    mode: Literal["window", "decay", "all"] = Field(
        "window",
        description="window: the rows since drift onset plus a stratified sample of older rows; "
        "decay: every row, weighted by age in the training loss (half_life_hours); all: every row "
        "alike. Default window: in bench_heal's first run (2 seeds) window and decay promoted the same cases (decay with "
        "a stronger candidate on the one seed compared) and all promoted none; too little evidence yet to switch. "
        "Drift onset is the end (newest event time) of the champion's training data; window and "
        "decay need the contract's event_time column (without one, a retrain uses all rows).",
    )
    recent_rows: PositiveInt | None = Field(
        None, description="window: at most this many rows since onset, the newest (None: all of them)."
    )
    older_rows: int = Field(
        20_000,
        ge=0,
        description="window: older rows (before onset) sampled beside them, stratified by label "
        "(each class keeps its share), so the model does not forget the old regime.",
    )
    half_life_hours: PositiveFloat = Field(
        168.0, description="decay: a row this much older (event time) than the newest weighs half."
    )
    seed: int = Field(0, ge=0, description="Seeds the sample of older rows (recorded in lineage).")
    warm_start: bool = Field(
        False, description="Start from the champion's weights (and its preprocessor) and fine-tune."
    )
    warm_start_epochs: PositiveInt = Field(2, description="Epochs of a warm-started fine-tune.")
    warm_start_learning_rate: PositiveFloat | None = Field(
        None, description="Learning rate of a warm-started fine-tune (None: train.learning_rate)."
    )


class PredlogSpec(_Section):
    """The prediction log: what it keeps, for how long, and how much it may hold in memory."""

    retention_days: PositiveInt = Field(30, description="Logged predictions older than this are deleted.")
    max_buffer_rows: PositiveInt = Field(
        200_000, description="Rows a replica buffers between flushes; past it rows are dropped and counted."
    )
    pii: dict[str, Literal["hash", "drop"]] = Field(
        default_factory=dict,
        description="Request columns that are personal data: 'hash' keeps a keyed SHA-256 "
        "(string columns), 'drop' keeps nothing (feedback then fills null).",
    )


class FeedbackSpec(_Section):
    """Who may label what, how fast: labels steer retraining and the gate."""

    rate_labels_per_s: PositiveFloat = Field(1000, description="Labels one key may send per second (sustained).")
    burst_labels: PositiveInt = Field(20_000, description="...and at once (token bucket size); past it a 429.")
    max_key_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Largest share one key may supply of the labels arriving over "
        "share_window_h (403 past it), and of the rows a retrain trains and gates on (a sample of its rows down "
        "to the cap); 1 is no cap. Set below 1 when several keys label.",
    )
    share_window_h: PositiveFloat = Field(24 * 7, description="Trailing window of the share cap, in hours.")
    share_min_labels: int = Field(100, ge=0, description="The share cap applies once the window holds this many.")


class Spec(_Section):
    """A task: one dataset under contract and what to do with it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    dataset: DatasetSpec
    features: FeaturesSpec
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    tune: TuneSpec = TuneSpec()
    registry: RegistrySpec = RegistrySpec()
    serve: ServeSpec = ServeSpec()
    monitor: MonitorSpec = MonitorSpec()
    retrain_data: RetrainDataSpec = RetrainDataSpec()
    predlog: PredlogSpec = PredlogSpec()
    feedback: FeedbackSpec = FeedbackSpec()
    entities: dict[str, Entity] = Field(default_factory=dict, description="What features are about (Feast's entities).")
    feature_views: dict[str, FeatureView] = Field(
        default_factory=dict, description="Aggregates of the table's events per entity (Feast's feature views)."
    )
    cost: CostSpec = CostSpec()

    @model_validator(mode="after")
    def _feature_views_fit_contract(self) -> Spec:
        contract, seen = self.dataset.contract, set(self.dataset.contract.columns)
        for name, entity in self.entities.items():
            if entity.join_key not in contract.columns:
                raise ValueError(f"entities.{name}.join_key: '{entity.join_key}' is not a contract column")
        if self.feature_views and (contract.event_time is None or contract.key is None):
            raise ValueError("feature_views: aggregates over time need dataset.contract.event_time and .key")
        for name, view in self.feature_views.items():
            if view.entity not in self.entities:
                raise ValueError(f"feature_views.{name}.entity: '{view.entity}' is not one of entities")
            for i, agg in enumerate(view.aggregations):
                where = f"feature_views.{name}.aggregations[{i}]"
                column = contract.columns.get(agg.column)
                if column is None:
                    raise ValueError(f"{where}.column: '{agg.column}' is not a contract column")
                if agg.function in NUMERIC_ONLY and column.type not in NUMERIC_TYPES:
                    raise ValueError(f"{where}: {agg.function} needs a number; '{agg.column}' is {column.type}")
                if agg.feature in seen:
                    raise ValueError(f"{where}: the feature name '{agg.feature}' is taken; give it a name")
                seen.add(agg.feature)
        return self

    @model_validator(mode="after")
    def _pii_fits_contract(self) -> Spec:
        # Feedback rebuilds training rows from the log: features and the label must stay as they were.
        columns = self.dataset.contract.columns
        for name, rule in self.predlog.pii.items():
            if name not in columns:
                raise ValueError(f"predlog.pii: '{name}' is not a contract column")
            if name in self.features.all or name == self.dataset.contract.label:
                raise ValueError(f"predlog.pii: '{name}' is a feature or the label; it must be logged as sent")
            if rule == "hash" and columns[name].type not in CATEGORICAL_TYPES:
                raise ValueError(
                    f"predlog.pii: '{name}' ({columns[name].type}) can only be dropped; a hash is a string"
                )
        return self

    @model_validator(mode="after")
    def _training_fits_contract(self) -> Spec:
        # Refused here, naming the field, rather than after Ray started in `train`.
        contract = self.dataset.contract
        if contract.label is None:
            return self  # a table only ingested; `train` says it needs a label
        label_type = contract.columns[contract.label].type
        if label_type not in NUMERIC_TYPES:
            raise ValueError(
                f"dataset.contract.label: '{contract.label}' has type {label_type}; training needs a binary label "
                "stored as int (0/1) or bool. Map it (e.g. yes/no to 1/0) before ingest"
            )
        role = {"key_hash": "key", "event_time": "event_time"}[self.train.split]
        if getattr(contract, role) is None:
            raise ValueError(
                f"train.split: {self.train.split} needs dataset.contract.{role}, and the contract names none; "
                f"name a {'unique record id' if role == 'key' else 'timestamp'} column there, or choose the other split"
            )
        return self

    @model_validator(mode="after")
    def _features_fit_contract(self) -> Spec:
        columns = self.dataset.contract.columns
        label = self.dataset.contract.label
        computed = set(self.view_features)
        for kind, names, allowed in (
            ("numeric", self.features.numeric, NUMERIC_TYPES),
            ("categorical", self.features.categorical, CATEGORICAL_TYPES),
        ):
            for name in names:
                if name in computed and kind == "numeric":
                    continue  # a feature view's value: always a number
                if name not in columns:
                    where = (
                        "a contract column or a feature view's feature" if kind == "numeric" else "a contract column"
                    )
                    raise ValueError(f"features.{kind}: '{name}' is not {where}")
                if name == label:
                    raise ValueError(f"features.{kind}: '{name}' is the label")
                if columns[name].type not in allowed:
                    raise ValueError(
                        f"features.{kind}: '{name}' has type {columns[name].type}, expected one of {allowed}"
                    )
        if not self.features.all:
            raise ValueError("features: list at least one numeric or categorical feature")
        return self

    @property
    def view_features(self) -> list[str]:
        """Every feature the spec's feature views compute."""
        return [f for view in self.feature_views.values() for f in view.features]

    @property
    def table_features(self) -> list[str]:
        """The model's inputs read from the table as they are; the others come from feature views."""
        return [f for f in self.features.all if f in self.dataset.contract.columns]

    @property
    def uses_views(self) -> bool:
        return len(self.table_features) < len(self.features.all)

    @property
    def as_of_column(self) -> str | None:
        """The request column its feature-view lookups are as of (the event's time, when sent):
        a payment is judged on the card's events before it, as each training row was."""
        return self.contract.event_time if self.uses_views else None

    @property
    def replica_columns(self) -> list[str]:
        """What the ingress hands the model replicas: the request's features and, on views, the
        time their lookups are as of (null: the replica's clock)."""
        return [*self.request_features, *([self.as_of_column] if self.as_of_column else [])]

    @property
    def views_horizon_s(self) -> int:
        """How far back the model's feature views reach: an older event cannot be looked up."""
        used = set(self.features.all)
        return max((v.horizon_s for v in self.feature_views.values() if used & set(v.features)), default=0)

    @property
    def entity_keys(self) -> list[str]:
        """The join keys of the feature views the model reads: a prediction request carries them."""
        used = set(self.features.all)
        views = [v for v in self.feature_views.values() if used & set(v.features)]
        return list(dict.fromkeys(self.entities[v.entity].join_key for v in views))

    @property
    def request_features(self) -> list[str]:
        """What a prediction request carries for the model: its table features and entity keys."""
        return list(dict.fromkeys([*self.table_features, *self.entity_keys]))

    @property
    def contract(self) -> Contract:
        return self.dataset.contract

    @property
    def model_name(self) -> str:
        return self.registry.model_name or self.name

    def hash(self) -> str:
        return _stable_hash(self.model_dump(mode="json"))


# --------------------------------------------------------------------------- loading
def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> Spec:
    """Read a spec from YAML, apply overrides, validate.

    Overrides come from ``RAYINFRA_SPEC__SECTION__FIELD=value`` environment variables
    and then from ``overrides`` (dotted keys, e.g. ``{"train.epochs": 2}``).

    Raises:
        SpecError: naming the file and every field at fault.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a mapping of sections, got {type(raw).__name__}")
    for dotted, value in {**_env_overrides(), **(overrides or {})}.items():
        _set_dotted(raw, dotted, value)
    return parse_spec(raw, source=str(path))


def parse_spec(raw: dict[str, Any], source: str = "<spec>") -> Spec:
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(f"{source}: invalid spec\n{_describe(err)}") from None


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        kind = e["type"]
        if kind == "extra_forbidden":
            msg = "unknown key"
        elif kind == "missing":
            msg = "missing required field"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if kind != "value_error" and "input" in e and not isinstance(e["input"], dict):
                msg += f" (got {e['input']!r})"
        lines.append(f"  - {where}: {msg}")
    return "\n".join(lines)


def _env_overrides() -> dict[str, Any]:
    out = {}
    for key, value in os.environ.items():
        if key.startswith(SPEC_ENV_PREFIX):
            dotted = key[len(SPEC_ENV_PREFIX) :].lower().replace("__", ".")
            out[dotted] = yaml.safe_load(value)
    return out


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"override {dotted}: '{part}' is not a section")
    node[leaf] = copy.deepcopy(value)  # a later override must never reach into the caller's dicts


def _stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# -------------------------------------------------------------------------- settings
class Settings(BaseSettings):
    """Where things live. Every field reads ``RAYINFRA_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="RAYINFRA_", extra="ignore")

    home: Path = Field(Path(".rayinfra"), description="Root of all embedded state.")
    data_root: str | None = Field(
        None,
        description="Where Delta tables live (path or s3://, gs:// URI); default HOME/tables.",
    )
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; default SQLite under HOME.")
    artifact_root: str | None = Field(
        None,
        description="MLflow artifact store (models, profiles); default HOME/mlartifacts.",
    )
    checkpoint_root: str | None = Field(
        None,
        description="Ray Train storage path; shared storage on multi-node clusters.",
    )
    ray_address: str | None = Field(
        None,
        validation_alias=AliasChoices("RAYINFRA_RAY_ADDRESS", "RAY_ADDRESS"),
        description="Ray cluster to join; a local Ray starts when unset.",
    )
    num_cpus: PositiveInt | None = Field(None, description="CPUs for a local Ray (default: the machine's cores).")
    object_store_mb: PositiveInt | None = Field(None, description="Object store size for a local Ray, in MiB.")
    serve_host: str = Field(
        "127.0.0.1", description="Address the public HTTP port binds to (HAProxy or Serve's proxy)."
    )
    serve_port: int = Field(8000, ge=0, le=65535, description="Serve's HTTP port.")
    serve_ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy",
        description="What answers on SERVE_PORT: 'haproxy' (Ray 2.60's HAProxy in front of ingress replicas that "
        "serve HTTP themselves: the fast path) or 'proxy' (Serve's Python proxy). Fixed when Ray starts: a local "
        "Ray takes it from here; a cluster from the environment of `ray start` (cluster/env/*.env).",
    )
    serve_drain_s: float = Field(
        2.0, ge=0, le=300,
        description="Seconds a stopping ingress replica stays reachable behind HAProxy before it refuses new "
        "connections (HAProxy retries those on another replica). A local Ray's only balancer is Serve's own "
        "HAProxy, reconfigured within a second; Ray's default, 30 s, is for outside load balancers to "
        "deregister the replica, and the cluster configs keep it. Fixed when a local Ray starts.",
    )  # fmt: skip
    prices: Prices = Field(
        default_factory=Prices, description="$ per core-hour, GPU-hour and GiB-hour (JSON); estimates to edit."
    )
    api_keys: str | None = Field(
        None,
        description="Comma-separated API keys, each 'KEY [SCOPE ...]' (plain or sha256:<hex>; scopes "
        "predict, feedback, admin; none given means predict).",
    )
    api_keys_file: Path | None = Field(
        None,
        description="File of API keys (mode 0600), one 'KEY [SCOPE ...]' per line; default HOME/secrets/api_keys.",
    )
    online_store: str | None = Field(
        None,
        description="The feature views' online store: a redis:// URL on clusters; default SQLite under HOME/features.",
    )
    verbose: bool = Field(
        False,
        description="Ray's own logs (workers, Train, Serve replicas, Ray Data) in this terminal too; they always "
        f"go to Ray's log folder, linked as HOME/logs for a local Ray ({RAY_LOGS} on a cluster's nodes). "
        "`rayinfra -v` sets it.",
    )
    # Clusters: where state lives and where the drift monitor runs (rayinfra/runtime.py checks both).
    shared_home: bool = Field(
        False,
        description="HOME is storage every node mounts (NFS, EFS, Filestore); required on a multi-node cluster.",
    )
    head_resource: str | None = Field(
        "node:__internal_head__",
        description="Resource only the head has; the drift monitor asks for a sliver of it, so it runs on the head "
        "beside the Jobs API. Default: the one Ray gives every head (Ray Train pins its state actor so). "
        "None: anywhere.",
    )

    def without_secrets(self) -> Settings:
        """A copy safe to ship to replicas and actors: API keys left out (they get hashes)."""
        return self.model_copy(update={"api_keys": None})

    def held_by(self, holder: str) -> Settings:
        """These settings, checked to carry no API key: replicas and actors call it on what they
        are given, so a caller that forgot `without_secrets` fails at once instead of leaking keys."""
        if self.api_keys:
            raise RuntimeError(f"{holder} was given plaintext API keys; ship Settings.without_secrets()")
        return self

    @field_validator("home")
    @classmethod
    def _absolute(cls, home: Path) -> Path:
        # Ray workers and jobs run in other directories: every path must be absolute.
        return home.expanduser().resolve()

    @property
    def tables_uri(self) -> str:
        return self.data_root or str(self.home / "tables")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_uri(self) -> str:
        return self.artifact_root or str(self.home / "mlartifacts")

    @property
    def storage_path(self) -> str:
        return self.checkpoint_root or str(self.home / "checkpoints")

    def table_uri(self, table: str) -> str:
        return f"{self.tables_uri.rstrip('/')}/{table}"
