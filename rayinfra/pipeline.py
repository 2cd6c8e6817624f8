"""Stages composed: train (or tune), log to MLflow, register with lineage, gate."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rayinfra import audit, registry
from rayinfra.config import Settings, Spec
from rayinfra.cost.accounting import account, training_usage
from rayinfra.cost.ledger import Kind
from rayinfra.data.split import TEST
from rayinfra.monitor.retrain import JOB_ID_ENV, TRIGGER_ENV
from rayinfra.registry import candidate
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
    """Hand ``outcome`` and its held-out rows to the registry once (`candidate.admit`)."""
    held_out = raw_split(outcome.data, TEST, max_rows=GATE_ROWS)
    admitted = candidate.admit(spec, settings, outcome, held_out, parent_run_id, recent)
    return Registered(outcome, admitted.run_id, admitted.version, admitted.gate)


def train_and_register(
    spec: Spec,
    settings: Settings | None = None,
    version: int | None = None,
    params: dict[str, Any] | None = None,
    recent: bool = False,
) -> Registered:
    """Train, register and gate; with ``recent``, a retrain (`retrain_and_register`)."""
    settings = settings or Settings()
    if recent:
        return retrain_and_register(spec, settings, version, params)
    started = time.time()
    out = register_and_gate(spec, settings, train(spec, settings, version=version, params=params))
    return _accounted("train", spec, settings, out, started)


def retrain_and_register(
    spec: Spec, settings: Settings, version: int | None = None, params: dict[str, Any] | None = None
) -> Registered:
    """A retrain's stages, each once and in order: the cluster's room for it, the inputs the
    champion leaves (`warm`: the retrain window, its preprocessor, warm-start weights), the
    data and the training run (`trainer`), the registry (`candidate.admit`: gated on rows
    newer than the champion's data), then the cost ledger."""
    started = time.time()
    init_ray(settings)
    t = spec.train
    ResourceLayout.current().check_train(t.num_workers, t.use_gpu, t.cpus_per_worker)  # before any data work
    inputs = retrain_inputs(spec, settings, version)
    data = prepare_data(spec, settings, inputs.window.table_version, inputs.window, inputs.preprocessor)
    params = {**(inputs.params or {}), **(params or {})}
    outcome = train(spec, settings, params=params, data=data, init_state=inputs.init_state)
    registered = register_and_gate(spec, settings, outcome, recent=True)
    return _accounted("retrain", spec, settings, registered, started)


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
    out = retrain_and_register(spec, settings)
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
