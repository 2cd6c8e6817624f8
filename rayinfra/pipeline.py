"""Stages composed: train (or tune), log to MLflow, register with lineage, gate."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rayinfra import audit, registry
from rayinfra.config import Settings, Spec
from rayinfra.cost.accounting import account, training_usage
from rayinfra.cost.ledger import Kind
from rayinfra.data.split import TEST
from rayinfra.data.tables import Table
from rayinfra.monitor import estimate
from rayinfra.monitor.retrain import JOB_ID_ENV, TRIGGER_ENV
from rayinfra.registry import compress, lifecycle
from rayinfra.registry.lineage import CALIBRATION_ECE, CALIBRATOR, COMPRESSION, THRESHOLD, Lineage, for_outcome
from rayinfra.runtime import ResourceLayout, init_ray
from rayinfra.train.trainer import TrainOutcome, prepare_data, raw_split, train
from rayinfra.train.tune import TuneOutcome, tune_search
from rayinfra.train.warm import retrain_inputs

GATE_ROWS = 200_000  # held-out rows scored by candidate and champion alike


@dataclass
class Registered:
    outcome: TrainOutcome
    run_id: str
    model_version: int
    gate: registry.GateResult


def register_and_gate(
    spec: Spec, settings: Settings, outcome: TrainOutcome, parent_run_id: str | None = None, recent: bool = False
) -> Registered:
    run_id, model_uri = registry.log_run(spec, outcome, settings, parent_run_id)
    window = outcome.data.window.to_params() if outcome.data.window is not None else {}
    version = registry.register(spec, model_uri, {**for_outcome(spec, outcome).to_tags(), **window}, settings)
    # The model's training set must stay rebuildable: log cleanup and vacuum keep this version.
    Table.for_spec(spec, settings).pin(outcome.data.version, f"model {spec.model_name} v{version}")
    held_out = raw_split(outcome.data, TEST, max_rows=GATE_ROWS)
    record_calibration(spec, settings, version, held_out)
    if spec.serve.compress != "none":
        record_compression(spec, settings, version, held_out)
    if recent:
        held_out = recent_rows(spec, settings, held_out)
    result = lifecycle.gate(spec, version, held_out, settings)
    return Registered(outcome, run_id, version, result)


MAX_TAG_CHARS = 4_500  # MLflow keeps tag values up to 5,000 characters


def record_calibration(spec: Spec, settings: Settings, version: int, test_rows: pd.DataFrame) -> dict[str, Any]:
    """Tag the version with its decision threshold and, when its test-split probabilities are off
    (training weights positives up), a calibrator: the drift monitor's label-free estimate (CBPE) needs both."""
    name, label = spec.model_name, spec.contract.label
    loaded = registry.load(name, version, settings)
    c = registry.client(settings)
    c.set_model_version_tag(name, str(version), THRESHOLD, f"{loaded.threshold:.6g}")
    y = test_rows[label].to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        return {"ece": None, "calibrator": None}
    p = loaded.probabilities(pa.Table.from_pandas(test_rows[spec.features.all], preserve_index=False))
    check = estimate.check_calibration(p, y)
    c.set_model_version_tag(name, str(version), CALIBRATION_ECE, f"{check['ece']:.4f}")
    if check["calibrator"] is not None:
        text = json.dumps(check["calibrator"])
        if len(text) > MAX_TAG_CHARS:  # isotonic on many rows has many steps: a two-number Platt map fits
            text = json.dumps(estimate.fit_calibrator(p, y, method="platt"))
        c.set_model_version_tag(name, str(version), CALIBRATOR, text)
    return check


def record_compression(spec: Spec, settings: Settings, version: int, test_rows: pd.DataFrame) -> dict[str, Any]:
    """Check the spec's compression on the held-out rows and tag the version with the result;
    replicas serve it compressed only when the check says ok."""
    label, metric = spec.contract.label, spec.registry.gate_metric
    y = test_rows[label].to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        result = {"kind": spec.serve.compress, "ok": False, "reason": "held-out rows of one class"}
    else:
        rows = pa.Table.from_pandas(test_rows[spec.features.all], preserve_index=False)
        bundle = registry.load(spec.model_name, version, settings).bundle
        result = compress.check(bundle, spec.serve.compress, rows, y, metric, spec.serve.compress_tolerance)
    registry.client(settings).set_model_version_tag(spec.model_name, str(version), COMPRESSION, json.dumps(result))
    return result


MIN_RECENT_ROWS = 200


def recent_rows(spec: Spec, settings: Settings, held_out: pd.DataFrame) -> pd.DataFrame:
    """The held-out rows that arrived after the champion's training version (traffic, feedback).

    Falls back to all held-out rows when there is no champion, no key, or too few recent
    rows (or only one class) to score both models on.
    """
    key, label = spec.contract.key, spec.contract.label
    champion = registry.alias_version(spec.model_name, registry.CHAMPION, settings)
    if champion is None or key is None:
        return held_out
    tags = registry.client(settings).get_model_version(spec.model_name, str(champion)).tags
    old_version = Lineage.from_tags(tags).table_version
    if old_version is None:
        return held_out
    old_keys = Table.for_spec(spec, settings).to_arrow(version=old_version, columns=[key]).column(0)
    recent = held_out[~held_out[key].isin(old_keys.to_numpy())]
    if len(recent) < MIN_RECENT_ROWS or recent[label].nunique() < 2:
        return held_out
    return recent


def train_and_register(
    spec: Spec,
    settings: Settings | None = None,
    version: int | None = None,
    params: dict[str, Any] | None = None,
    recent: bool = False,
) -> Registered:
    """Train, register and gate.

    With ``recent`` (a retrain): train on the spec's retrain window (`retrain_data`),
    warm-started from the champion when the spec says so, and gate on rows newer than
    the champion's data.
    """
    settings = settings or Settings()
    started = time.time()
    if not recent:
        out = register_and_gate(spec, settings, train(spec, settings, version=version, params=params))
        return _accounted("train", spec, settings, out, started)
    init_ray(settings)
    t = spec.train
    ResourceLayout.current().check_train(t.num_workers, t.use_gpu, t.cpus_per_worker)  # before any data work
    inputs = retrain_inputs(spec, settings, version)
    data = prepare_data(spec, settings, inputs.window.table_version, inputs.window, inputs.preprocessor)
    params = {**(inputs.params or {}), **(params or {})}
    outcome = train(spec, settings, params=params, data=data, init_state=inputs.init_state)
    return _accounted("retrain", spec, settings, register_and_gate(spec, settings, outcome, recent=True), started)


def _accounted(
    kind: Kind, spec: Spec, settings: Settings, out: Registered, started: float, concurrency: int = 1, runs: int = 1,
    worker_cpu_s: float | None = None, memory_gb: float | None = None,
) -> Registered:  # fmt: skip
    """``out``, after its resources are in the cost ledger and its cost on its MLflow run;
    ``worker_cpu_s``, ``memory_gb``: its workers' CPU time and memory, when not its own run's
    (a search's trials)."""
    layout, name = ResourceLayout.current(), out.outcome.name
    used = out.outcome.worker_cpu_s if worker_cpu_s is None else worker_cpu_s
    memory = out.outcome.worker_memory_gb if memory_gb is None else memory_gb
    usage = training_usage(kind, spec, layout, started, out.model_version, name, concurrency, runs, used, memory)
    account(usage, settings, registry.client(settings), out.run_id)
    return out


def retrain(spec: Spec, settings: Settings, environ: Mapping[str, str] | None = None) -> Registered:
    """A retrain as the drift monitor's job runs it, audited from start to verdict.

    ``environ`` (default: this process's) may carry what the monitor set when it submitted
    the job: the trigger (`retrain.TRIGGER_ENV`, JSON) and the job's id (`retrain.JOB_ID_ENV`).
    Only a 'promote' verdict moves the champion; 'inconclusive' leaves the candidate challenger.
    """
    environ = os.environ if environ is None else environ
    trigger = json.loads(environ.get(TRIGGER_ENV, "{}"))
    job_id = environ.get(JOB_ID_ENV)
    name = spec.model_name
    audit.record("retrain_start", trigger.get("reason", "by hand"), settings, model=name, job_id=job_id,
                 trigger=trigger)  # fmt: skip
    out = train_and_register(spec, settings, recent=True)
    v = out.gate.verdict
    audit.record("retrain_done", out.gate.reason, settings, model=name, job_id=job_id, version=out.model_version,
                 promoted=out.gate.promoted, verdict=v.verdict, interval=v.interval, rows=v.rows,
                 positives=v.positives, table_version=out.outcome.data.version)  # fmt: skip
    return out


@dataclass
class Tuned:
    search: TuneOutcome
    registered: Registered


def tune_and_register(spec: Spec, settings: Settings | None = None, version: int | None = None) -> Tuned:
    """Search, log the search as a parent MLflow run with a child per trial, register the best."""
    settings = settings or Settings()
    started = time.time()
    search = tune_search(spec, settings, version)
    parent = registry.log_search(spec, search, settings)
    registered = register_and_gate(spec, settings, search.best, parent_run_id=parent)
    # The whole search is the version's cost: every trial, kept or stopped, held its share.
    used = sum(t.worker_cpu_s for t in search.trials)
    # Trials run `concurrency` at a time over the search's wall time: that many trials' memory is held.
    memory = max((t.worker_memory_gb for t in search.trials), default=0.0) * search.concurrency
    _accounted("tune", spec, settings, registered, started, search.concurrency, max(1, len(search.trials)), used,
               memory)  # fmt: skip
    return Tuned(search, registered)
